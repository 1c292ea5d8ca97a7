"""Monthly statements: a constructed November 2026 (payments on both sides of the month's edges, a C2B
payment to the cent, a failed payment, a manual top-up, rolled-up days and raw readings), its CSV exact on
both engines; the CLI's answers to bad input; the PDF rendered to PNG with poppler and looked at."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date, datetime
from decimal import Decimal as D

import pytest

from core.meters.model import Meter
from core.meters.profiles import BUILTIN_PROFILES
from core.payments.model import Channel, Payment, PaymentStatus
from core.shared.clock import NAIROBI
from core.shared.errors import InvalidInput, NotFound
from core.statements.model import parse_month
from core.topups.model import TopUp, TopUpStatus
from core.usage.model import DailyUsage, MeterUsage, Reading
from storage.db import create_engine
from storage.statements import monthly_statement
from storage.uow import SqlUnitOfWork
from tests.test_cli import lipameter, sqlite_url  # noqa: F401  (fixture)
from web.statements import latin, statement_csv

NOVEMBER = parse_month("2026-11", today=date(2026, 12, 5))
MADE_AT = datetime(2026, 12, 5, 9, 0, tzinfo=NAIROBI)


def eat(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=NAIROBI)


def _meter(meter_id: str, number: str, profile: str = "seed") -> Meter:
    return Meter(id=meter_id, number=number, name=f"Flat {number}", device_id=f"dev-{number}", profile=profile,
                 dp_specs={}, created_at=eat(1, 0, month=10))


def _payment(pid: str, meter_id: str, amount: int, at: datetime, *, receipt: str | None, phone: str,
             channel=Channel.USSD, status=PaymentStatus.COMPLETED, paid: D | None = None) -> Payment:
    return Payment(id=pid, amount=amount, phone=phone, meter_id=meter_id, channel=channel, created_at=at,
                   updated_at=at, status=status, mpesa_receipt=receipt, paid_amount=paid)


def _topup(tid: str, meter_id: str, amount: str, at: datetime, *, payment_id: str | None,
           status=TopUpStatus.APPLIED, applied: datetime | None = None, by: str | None = None,
           reason: str | None = None) -> TopUp:
    return TopUp(id=tid, meter_id=meter_id, amount=D(amount), created_at=at, updated_at=at, payment_id=payment_id,
                 status=status, applied_at=applied, applied_by=by, reason=reason)


def _day(meter_id: str, day: date, used: str, first: str, last: str, credits: str = "0") -> DailyUsage:
    return DailyUsage(meter_id=meter_id, day=day, consumption=D(used), credits=D(credits), first_balance=D(first),
                      last_balance=D(last), covered_s=86_400, readings=96)


async def seed_november(engine) -> None:
    a, b, k = "a" * 36, "b" * 36, "k" * 36
    async with SqlUnitOfWork(engine) as uow:
        for meter in (_meter(a, "A101"), _meter(b, "B201"), _meter(k, "K1", "tuya-standard")):
            await uow.meters.add(meter)
        for payment in (
            _payment("p1", a, 200, eat(2, 9), receipt="SKA1", phone="254712345678"),
            _payment("p2", a, 150, eat(15, 12), receipt="SKC2B1", phone="254722000111", channel=Channel.C2B,
                     paid=D("150.50")),
            _payment("p3", a, 300, eat(10, 8), receipt=None, phone="254733000222", status=PaymentStatus.FAILED),
            # The last minute of October, credited on 1 November: October's money, in October's statement.
            _payment("p4", a, 100, eat(31, 23, 30, month=10), receipt="SKOCT", phone="254712345678"),
            _payment("p5", b, 500, eat(1, 0, 5, month=12), receipt="SKDEC", phone="254744000333"),
        ):
            await uow.payments.add(payment)
        for topup in (
            _topup("t1", a, "200", eat(2, 9), payment_id="p1", applied=eat(2, 9, 1), by="worker"),
            _topup("t2", a, "150.50", eat(15, 12), payment_id="p2", status=TopUpStatus.QUEUED),
            _topup("t4", a, "100", eat(31, 23, 30, month=10), payment_id="p4", applied=eat(1, 0, 10), by="worker"),
            _topup("t5", a, "50", eat(20, 10), payment_id=None, applied=eat(20, 10), by="boss",
                   reason="Refund, outage"),
        ):
            await uow.topups.add(topup)
        await uow.usage.save_days([_day(a, date(2026, 10, 31), "20", "120", "100"),
                                   _day(a, date(2026, 11, 1), "10", "100", "90"),
                                   _day(a, date(2026, 11, 2), "10", "90", "280", credits="200")])
        await uow.usage.save_meter(MeterUsage(a, rolled_until=date(2026, 11, 3)))
        for at, balance in ((eat(30, 6), "250"), (eat(30, 12), "244"), (eat(30, 18), "238"),
                            (eat(1, 1, month=12), "230")):
            await uow.usage.add_reading(Reading(meter_id=a, at=at.astimezone(NAIROBI), balance=D(balance)))
        await uow.commit()


A101_ROWS = (
    "A101,opening_balance,2026-10-31,,last reading before the month,,100.00,KES\r\n"
    "A101,payment,2026-11-02T09:00:00+03:00,SKA1,254712345678 (ussd),200.00,,\r\n"
    "A101,payment,2026-11-15T12:00:00+03:00,SKC2B1,254722000111 (c2b),150.50,,\r\n"
    "A101,credit,2026-11-02T09:01:00+03:00,SKA1,top-up applied,200.00,,\r\n"
    'A101,manual_topup,2026-11-20T10:00:00+03:00,,"Refund, outage (by boss)",50.00,,\r\n'
    "A101,consumption,2026-11,,readings cover 3 of 30 days,,32.00,KES\r\n"
    "A101,closing_balance,2026-11-30,,last reading of the month,,238.00,KES\r\n"
    "A101,total_paid,,,payments accepted,350.50,,\r\n"
    'A101,total_credited,,,"of them, credited to the meter",200.00,,\r\n'
    "A101,total_manual,,,manual top-ups by admins,50.00,,\r\n"
    'A101,not_yet_credited,,,"queued, failed or in review",150.50,,\r\n'
    "A101,check,,,credited <= paid: ok,,,\r\n"
)
HEADER = "meter,kind,date,reference,detail,kes,quantity,unit\r\n"


async def _statement(engine, month=NOVEMBER, meter=None):
    return await monthly_statement(engine, month, profiles=BUILTIN_PROFILES, made_at=MADE_AT, meter_number=meter)


async def test_meter_statement_csv_is_exact(engine):
    await seed_november(engine)
    statement = await _statement(engine, meter="A101")
    assert statement_csv(statement) == (
        HEADER + 'A101,statement,2026-11,,"LipaMeter monthly statement, meter A101, Nairobi time",,,\r\n'
        + A101_ROWS)


async def test_property_statement_csv_is_exact(engine):
    await seed_november(engine)
    statement = await _statement(engine)
    # B201 (paid in December) and K1 (never read) have nothing in November: no section, only the totals.
    assert statement_csv(statement) == (
        HEADER + 'ALL,statement,2026-11,,"LipaMeter monthly statement, all meters, Nairobi time",,,\r\n'
        + A101_ROWS
        + "ALL,consumption,2026-11,,meters with readings,,32.00,KES\r\n"
        "ALL,total_paid,,,payments accepted,350.50,,\r\n"
        'ALL,total_credited,,,"of them, credited to the meter",200.00,,\r\n'
        "ALL,total_manual,,,manual top-ups by admins,50.00,,\r\n"
        'ALL,not_yet_credited,,,"queued, failed or in review",150.50,,\r\n'
        "ALL,check,,,credited <= paid: ok,,,\r\n")


async def test_a_month_without_data_says_so(engine):
    await seed_november(engine)
    september = parse_month("2026-09", today=date(2026, 12, 5))
    assert statement_csv(await _statement(engine, september, "A101")) == (
        HEADER + 'A101,statement,2026-09,,"LipaMeter monthly statement, meter A101, Nairobi time",,,\r\n'
        "A101,note,,,No payments, top-ups or readings for this meter in 2026-09.,,,\r\n".replace(
            "No payments, top-ups or readings for this meter in 2026-09.",
            '"No payments, top-ups or readings for this meter in 2026-09."'))
    with pytest.raises(NotFound):
        await _statement(engine, NOVEMBER, "NOPE")


@pytest.mark.parametrize(("typed", "printed"), [
    ("Nyumba ya Mzee \u2013 Ruaka", "Nyumba ya Mzee - Ruaka"),  # an en dash pasted from a phone
    ("Caf\u00e9 \u201cKaribu\u201d", 'Caf\u00e9 "Karibu"'),  # Latin-1 letters stay as they are
    ("\u0141\u00f3d\u017a", "?\u00f3dz"),  # ź loses its accent; Ł has no plain form
    ("meter \U0001F50C", "meter ?"),
    (None, ""),
])
def test_the_pdf_text_keeps_what_latin1_can_show(typed, printed):
    assert latin(typed) == printed


def test_month_parsing_refuses_bad_and_future_months():
    today = date(2026, 11, 28)
    assert str(parse_month(" 2026-11 ", today=today)) == "2026-11"
    assert parse_month("2026-02", today=today).days == 28
    assert parse_month("2025-12", today=today).next == date(2026, 1, 1)
    for bad in ("2026-13", "2026-1", "26-11", "november", "", "2026-11-01", "1999-12", "\uff12\uff10\uff12\uff16-11"):
        with pytest.raises(InvalidInput, match="must look like"):
            parse_month(bad, today=today)
    with pytest.raises(InvalidInput, match="has not begun"):
        parse_month("2026-12", today=today)


# --- the command line and the PDF -----------------------------------------------------------------

@pytest.fixture
def november_db(sqlite_url):
    import asyncio

    async def seed():
        engine = create_engine(sqlite_url)
        try:
            await seed_november(engine)
        finally:
            await engine.dispose()

    asyncio.run(seed())
    return sqlite_url


def test_cli_statement_csv_to_stdout_and_bad_input(november_db, tmp_path):
    done = lipameter("statement", "--month", "2026-11", "--meter", "A101", "--format", "csv", database_url=november_db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.replace("\r\n", "\n").endswith(A101_ROWS.replace("\r\n", "\n"))
    for args, message in ((("--month", "2999-01"), "has not begun yet"),
                          (("--month", "2026-13"), "must look like 2026-11"),
                          (("--month", "2026-11", "--meter", "NOPE"), "no meter 'NOPE'"),
                          (("--month", "2026-11", "--format", "pdf"), "needs --out")):
        refused = lipameter("statement", *args, database_url=november_db)
        assert refused.returncode == 2, (args, refused.stderr)
        assert refused.stderr.count("\n") == 1 and message in refused.stderr, refused.stderr
        assert refused.stdout == ""
    empty = lipameter("statement", "--month", "2026-09", "--out", str(tmp_path / "sep.csv"), database_url=november_db)
    assert empty.returncode == 0 and "no data that month" in empty.stdout
    assert "No payments, top-ups or readings for any meter in 2026-09." in (tmp_path / "sep.csv").read_text()


def _poppler() -> None:
    if not (shutil.which("pdftoppm") and shutil.which("pdftotext")):
        pytest.fail("poppler-utils is missing (apt-get install poppler-utils): the PDF cannot be checked")


def test_cli_statement_pdf_renders(november_db, tmp_path):
    _poppler()
    from PIL import Image

    out = tmp_path / "nov.pdf"
    done = lipameter("statement", "--month", "2026-11", "--format", "pdf", "--out", str(out), database_url=november_db)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"%PDF-")
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(out), str(tmp_path / "page")], check=True, timeout=60)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 1
    image = Image.open(pages[0]).convert("L")
    width, height = image.size
    assert height > width  # A4 portrait
    dark = sum(image.histogram()[:128])
    assert dark > 0.005 * width * height  # text and table lines, not a blank page
    _keep(pages[0], "statement-2026-11-property.png")  # next to the dashboard's screenshots
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    for expected in ("LipaMeter statement 2026-11", "The whole property", "Meter A101", "SKA1", "SKC2B1",
                     "KES 350.50", "credited <= paid: ok", "Refund, outage (by boss)", "3 of 30 days"):
        assert expected in text, (expected, text)
    assert "SKOCT" not in text and "SKDEC" not in text  # October's and December's money stay in their months


def test_cli_statement_pdf_for_an_empty_month(november_db, tmp_path):
    _poppler()
    out = tmp_path / "sep.pdf"
    done = lipameter("statement", "--month", "2026-09", "--meter", "B201", "--format", "pdf", "--out", str(out),
                     database_url=november_db)
    assert done.returncode == 0, done.stderr
    text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    assert "No payments, top-ups or readings for this meter in 2026-09." in " ".join(text.split())


def _keep(png, name: str) -> None:
    from pathlib import Path

    shots = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, shots / name)
