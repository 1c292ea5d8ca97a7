"""A monthly statement (core/statements) as a file: CSV (one table, a row per line, so a spreadsheet
can filter it) or PDF (fpdf2, its built-in fonts). Used by the dashboard and `lipameter statement`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

from core.shared.clock import NAIROBI
from core.shared.money import format_kes
from core.shared.text import fold
from core.statements.model import Balance, MeterStatement, Statement
from web.admin.csv_export import cell, csv_line

CSV_COLUMNS = ("meter", "kind", "date", "reference", "detail", "kes", "quantity", "unit")
CENTS = Decimal("0.01")


def kes(value: Decimal) -> str:
    return f"{value.quantize(CENTS):f}"


def quantity(value: Decimal, unit: str) -> str:
    return f"{value.quantize(CENTS if unit == 'KES' else Decimal('0.001')):f}"


def filename(statement: Statement, extension: str) -> str:
    who = "property" if statement.whole_property else statement.meters[0].number
    return f"lipameter-statement_{statement.month}_{who}.{extension}"


def check_text(ok: bool) -> str:
    return "credited <= paid: ok" if ok else "credited > paid: CHECK THIS"


def _balance_row(meter: MeterStatement, kind: str, balance: Balance | None, detail: str) -> list:
    if balance is None:
        return [meter.number, kind, "", "", "no reading", "", "", meter.unit]
    return [meter.number, kind, balance.at.isoformat(), "", detail, "", quantity(balance.value, meter.unit), meter.unit]


def _meter_rows(statement: Statement, meter: MeterStatement) -> Iterator[list]:
    n, month = meter.number, statement.month
    opened_before = meter.opening is not None and meter.opening.at < month.first
    yield _balance_row(meter, "opening_balance", meter.opening,
                       "last reading before the month" if opened_before else "first reading of the month")
    for p in meter.payments:
        yield [n, "payment", p.at, p.receipt, f"{p.phone} ({p.channel})", kes(p.amount), "", ""]
    for c in meter.credits:
        yield [n, "credit", c.at, c.receipt, "top-up applied", kes(c.amount), "", ""]
    for m in meter.manual:
        yield [n, "manual_topup", m.at, "", m.note, kes(m.amount), "", ""]
    used = "" if meter.consumption is None else quantity(meter.consumption, meter.unit)
    yield [n, "consumption", str(month), "", f"readings cover {meter.days_covered} of {month.days} days", "", used,
           meter.unit]
    yield _balance_row(meter, "closing_balance", meter.closing, "last reading of the month")
    yield from _totals(n, meter.paid, meter.credited, meter.manual_total, meter.waiting, meter.check_ok)


def _totals(who: str, paid, credited, manual, waiting, ok: bool) -> Iterator[list]:
    yield [who, "total_paid", "", "", "payments accepted", kes(paid), "", ""]
    yield [who, "total_credited", "", "", "of them, credited to the meter", kes(credited), "", ""]
    yield [who, "total_manual", "", "", "manual top-ups by admins", kes(manual), "", ""]
    yield [who, "not_yet_credited", "", "", "queued, failed or in review", kes(waiting), "", ""]
    yield [who, "check", "", "", check_text(ok), "", "", ""]


def statement_rows(statement: Statement) -> list[list]:
    who = "ALL" if statement.whole_property else statement.meters[0].number
    scope = "all meters" if statement.whole_property else f"meter {who}"
    rows: list[list] = [[who, "statement", str(statement.month), "",
                         f"LipaMeter monthly statement, {scope}, Nairobi time", "", "", ""]]
    if statement.empty:
        rows.append([who, "note", "", "", statement.empty_note, "", "", ""])
    for meter in statement.meters:
        if not meter.empty:
            rows.extend(_meter_rows(statement, meter))
    if statement.whole_property:
        for unit, used in statement.consumption_by_unit().items():
            rows.append(["ALL", "consumption", str(statement.month), "", "meters with readings", "",
                         quantity(used, unit), unit])
        rows.extend(_totals("ALL", statement.paid, statement.credited, statement.manual_total, statement.waiting,
                            statement.check_ok))
    return rows


def statement_csv(statement: Statement) -> str:
    return "".join([csv_line(CSV_COLUMNS), *(csv_line(cell(value) for value in row)
                                             for row in statement_rows(statement))])


# --- PDF ------------------------------------------------------------------------------------------

def latin(text: object) -> str:
    """The PDF's built-in fonts know Latin-1 only: pasted dashes and quotes print plain, a letter outside
    it loses its accent, and what is left (another script, an emoji) becomes '?' rather than failing the
    whole statement."""
    return fold("" if text is None else str(text), below=256, missing="?")


def when_text(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(NAIROBI).strftime("%d %b %Y %H:%M")


def amount_text(value: Decimal | None, unit: str) -> str:
    if value is None:
        return "-"
    return format_kes(value.quantize(CENTS)) if unit == "KES" else f"{quantity(value, unit)} kWh"


def statement_pdf(statement: Statement) -> bytes:
    # fpdf2 and its fonts take ~0.3 s to import: paid only by the process that makes a PDF, not by every
    # `lipameter` command and server start.
    from web.statement_pdf import render_pdf

    return render_pdf(statement)
