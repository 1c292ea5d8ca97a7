"""CSV downloads. Cells a spreadsheet would run as a formula (= + - @ at the start) get a leading
quote: a payer controls some text (descriptions) that lands in these files. A cell holding `;` is
quoted like one holding `,`: spreadsheets in a `;` locale (much of Europe) split on it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from starlette.responses import Response

from core.shared.clock import NAIROBI

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NEEDS_QUOTES = frozenset(',;"\r\n')


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


def csv_line(cells: Iterable[str]) -> str:
    """One RFC 4180 line (the csv module quotes only its own delimiter, never `;`)."""
    return ",".join('"' + text.replace('"', '""') + '"' if NEEDS_QUOTES.intersection(text) else text
                    for text in cells) + "\r\n"


def csv_response(filename: str, columns: Iterable[str], rows: Iterable[dict]) -> Response:
    columns = list(columns)
    lines = [csv_line(columns), *(csv_line(cell(row.get(column)) for column in columns) for row in rows)]
    return Response("".join(lines), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})
