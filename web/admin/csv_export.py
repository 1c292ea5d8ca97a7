"""CSV downloads. Cells a spreadsheet would run as a formula (= + - @ at the start) get a leading
quote: a payer controls some text (descriptions) that lands in these files."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal
from typing import Iterable

from starlette.responses import Response

from core.shared.clock import NAIROBI

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(NAIROBI).isoformat(timespec="seconds")
    if isinstance(value, Decimal):
        return f"{value:f}"
    text = str(getattr(value, "value", value))
    return "'" + text if text.startswith(FORMULA_START) and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
        return True
    except ArithmeticError:
        return False


def csv_response(filename: str, columns: Iterable[str], rows: Iterable[dict]) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = list(columns)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(column)) for column in columns])
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})
