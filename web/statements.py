"""A monthly statement (core/statements) as a file: CSV (one table, a row per line, so a spreadsheet
can filter it) or PDF (fpdf2, its built-in fonts). Used by the dashboard and `lipameter statement`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

from fpdf import FPDF, FontFace
from fpdf.enums import XPos, YPos

from core.shared.clock import NAIROBI
from core.shared.money import format_kes
from core.statements.model import Balance, MeterStatement, Statement
from web.admin.csv_export import cell, csv_line

CSV_COLUMNS = ("meter", "kind", "date", "reference", "detail", "kes", "quantity", "unit")
CENTS = Decimal("0.01")
HEADINGS = FontFace(emphasis="BOLD", fill_color=(230, 236, 242))


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
    """The PDF's built-in fonts know Latin-1 only: anything else (a name in another script, an emoji in
    a reason) becomes '?' rather than failing the whole statement."""
    return ("" if text is None else str(text)).encode("latin-1", "replace").decode("latin-1")


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(NAIROBI).strftime("%d %b %Y %H:%M")


def _amount(value: Decimal | None, unit: str) -> str:
    if value is None:
        return "-"
    return format_kes(value.quantize(CENTS)) if unit == "KES" else f"{quantity(value, unit)} kWh"


class _Pdf(FPDF):
    def __init__(self, statement: Statement) -> None:
        super().__init__(format="A4")
        self.statement = statement
        self.set_auto_page_break(True, margin=15)
        self.set_title(latin(f"LipaMeter statement {statement.month}"))
        self.set_creator("LipaMeter")

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=8)
        self.cell(0, 5, latin(f"LipaMeter statement {self.statement.month} - page {self.page_no()}/{{nb}}"),
                  align="C")

    def line_text(self, text: str, *, size: float = 10, style: str = "", gap: float = 5) -> None:
        self.set_font("Helvetica", style, size)
        self.multi_cell(0, gap, latin(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def grid(self, header: list[str], rows: list[list[str]], widths: tuple[int, ...], *, numeric_from: int) -> None:
        self.set_font("Helvetica", size=9)
        align = tuple("LEFT" if i < numeric_from else "RIGHT" for i in range(len(header)))
        with self.table(col_widths=widths, text_align=align, line_height=5.5, first_row_as_headings=True,
                        headings_style=HEADINGS) as table:
            for values in [header, *rows]:
                row = table.row()
                for value in values:
                    row.cell(latin(value))
        self.ln(3)


def _summary(pdf: _Pdf, statement: Statement) -> None:
    rows = [[m.number, _amount(m.opening.value if m.opening else None, m.unit), _amount(m.paid, "KES"),
             _amount(m.credited, "KES"), _amount(m.manual_total, "KES"), _amount(m.consumption, m.unit),
             _amount(m.closing.value if m.closing else None, m.unit), "ok" if m.check_ok else "CHECK"]
            for m in statement.meters if not m.empty]
    if statement.whole_property:
        rows.append(["All", "", _amount(statement.paid, "KES"), _amount(statement.credited, "KES"),
                     _amount(statement.manual_total, "KES"), "", "", "ok" if statement.check_ok else "CHECK"])
    pdf.grid(["Meter", "Opening", "Paid", "Credited", "Manual", "Used", "Closing", "Check"], rows,
             (18, 26, 26, 26, 24, 26, 26, 18), numeric_from=1)


def _details(pdf: _Pdf, meter: MeterStatement, statement: Statement) -> None:
    pdf.line_text(f"Meter {meter.number} {meter.name}", size=12, style="B", gap=7)
    pdf.line_text(f"Balances and use in {meter.unit}. Readings cover {meter.days_covered} of "
                  f"{statement.month.days} days. {check_text(meter.check_ok)}. "
                  f"Not yet credited: {_amount(meter.waiting, 'KES')}.", size=9)
    if meter.payments:
        pdf.grid(["Paid at", "M-Pesa receipt", "Phone", "Channel", "KES"],
                 [[_when(p.at), p.receipt or "-", p.phone, p.channel, _amount(p.amount, "KES")]
                  for p in meter.payments], (40, 40, 36, 30, 44), numeric_from=4)
    if meter.credits:
        pdf.grid(["Credited at", "For receipt", "KES"],
                 [[_when(c.at), c.receipt or "-", _amount(c.amount, "KES")] for c in meter.credits],
                 (60, 60, 70), numeric_from=2)
    if meter.manual:
        pdf.grid(["Manual top-up at", "Reason", "KES"],
                 [[_when(m.at), m.note, _amount(m.amount, "KES")] for m in meter.manual],
                 (45, 105, 40), numeric_from=2)


def statement_pdf(statement: Statement) -> bytes:
    pdf = _Pdf(statement)
    pdf.add_page()
    scope = "The whole property" if statement.whole_property else \
        f"Meter {statement.meters[0].number} {statement.meters[0].name}"
    pdf.line_text(f"LipaMeter statement {statement.month}", size=18, style="B", gap=10)
    pdf.line_text(f"{scope}, {statement.month.first:%B %Y}, Nairobi time. Made {_when(statement.made_at)}.", size=10)
    pdf.ln(3)
    if statement.empty:
        pdf.line_text(statement.empty_note, size=12, gap=8)
    else:
        _summary(pdf, statement)
        pdf.line_text(f"Paid {_amount(statement.paid, 'KES')}, credited {_amount(statement.credited, 'KES')}: "
                      f"{check_text(statement.check_ok)}.", size=10, style="B")
        for unit, used in statement.consumption_by_unit().items():
            pdf.line_text(f"Used: {_amount(used, unit)}", size=10)
        pdf.ln(3)
        for meter in statement.meters:
            if not meter.empty:
                _details(pdf, meter, statement)
    return bytes(pdf.output())
