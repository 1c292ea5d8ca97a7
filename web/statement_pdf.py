"""A monthly statement as a PDF (fpdf2, its built-in fonts): `web.statements.statement_pdf` imports this
only when a PDF is asked for."""

from __future__ import annotations

from fpdf import FPDF, FontFace
from fpdf.enums import XPos, YPos

from core.statements.model import MeterStatement, Statement
from web.statements import amount_text, check_text, latin, when_text

HEADINGS = FontFace(emphasis="BOLD", fill_color=(230, 236, 242))


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
    rows = [[m.number, amount_text(m.opening.value if m.opening else None, m.unit), amount_text(m.paid, "KES"),
             amount_text(m.credited, "KES"), amount_text(m.manual_total, "KES"), amount_text(m.consumption, m.unit),
             amount_text(m.closing.value if m.closing else None, m.unit), "ok" if m.check_ok else "CHECK"]
            for m in statement.meters if not m.empty]
    if statement.whole_property:
        rows.append(["All", "", amount_text(statement.paid, "KES"), amount_text(statement.credited, "KES"),
                     amount_text(statement.manual_total, "KES"), "", "", "ok" if statement.check_ok else "CHECK"])
    pdf.grid(["Meter", "Opening", "Paid", "Credited", "Manual", "Used", "Closing", "Check"], rows,
             (18, 26, 26, 26, 24, 26, 26, 18), numeric_from=1)


def _details(pdf: _Pdf, meter: MeterStatement, statement: Statement) -> None:
    pdf.line_text(f"Meter {meter.number} {meter.name}", size=12, style="B", gap=7)
    pdf.line_text(f"Balances and use in {meter.unit}. Readings cover {meter.days_covered} of "
                  f"{statement.month.days} days. {check_text(meter.check_ok)}. "
                  f"Not yet credited: {amount_text(meter.waiting, 'KES')}.", size=9)
    if meter.payments:
        pdf.grid(["Paid at", "M-Pesa receipt", "Phone", "Channel", "KES"],
                 [[when_text(p.at), p.receipt or "-", p.phone, p.channel, amount_text(p.amount, "KES")]
                  for p in meter.payments], (40, 40, 36, 30, 44), numeric_from=4)
    if meter.credits:
        pdf.grid(["Credited at", "For receipt", "KES"],
                 [[when_text(c.at), c.receipt or "-", amount_text(c.amount, "KES")] for c in meter.credits],
                 (60, 60, 70), numeric_from=2)
    if meter.manual:
        pdf.grid(["Manual top-up at", "Reason", "KES"],
                 [[when_text(m.at), m.note, amount_text(m.amount, "KES")] for m in meter.manual],
                 (45, 105, 40), numeric_from=2)


def render_pdf(statement: Statement) -> bytes:
    pdf = _Pdf(statement)
    pdf.add_page()
    scope = "The whole property" if statement.whole_property else \
        f"Meter {statement.meters[0].number} {statement.meters[0].name}"
    pdf.line_text(f"LipaMeter statement {statement.month}", size=18, style="B", gap=10)
    pdf.line_text(f"{scope}, {statement.month.first:%B %Y}, Nairobi time. Made {when_text(statement.made_at)}.", size=10)
    pdf.ln(3)
    if statement.empty:
        pdf.line_text(statement.empty_note, size=12, gap=8)
    else:
        _summary(pdf, statement)
        pdf.line_text(f"Paid {amount_text(statement.paid, 'KES')}, credited {amount_text(statement.credited, 'KES')}: "
                      f"{check_text(statement.check_ok)}.", size=10, style="B")
        for unit, used in statement.consumption_by_unit().items():
            pdf.line_text(f"Used: {amount_text(used, unit)}", size=10)
        pdf.ln(3)
        for meter in statement.meters:
            if not meter.empty:
                _details(pdf, meter, statement)
    return bytes(pdf.output())
