"""Issue 13: Paybill and Till payments (Daraja C2B), on both engines, through the real storage.

Validation accepts an active meter and an amount within limits and rejects with Safaricom's codes;
a confirmation is stored first and credits once per TransID, even under a concurrent shuffled storm
of copies; an unknown account waits for a person, who assigns it (credited once) or records a refund."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest
import sqlalchemy as sa

from core.admin.operator import Actor, list_reviews, resolve_review
from core.meters.model import Meter, account_key
from core.payments.c2b import receive_c2b_confirmation, validate_c2b
from core.payments.service import PaymentLimits
from core.shared.errors import Conflict, InvalidInput, NotFound
from storage.tables import jobs, mpesa_callbacks, payments, topups
from storage.uow import SqlUnitOfWork
from tests.c2b_samples import c2b_bytes
from tests.fakes import FakeClock

LIMITS = PaymentLimits(min_amount=10, max_amount=70_000)
ALICE = Actor("alice")


class World:
    def __init__(self, engine) -> None:
        self.engine, self.clock = engine, FakeClock()

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)

    async def validate(self, body: bytes):
        return await validate_c2b(body, source="196.201.214.200", uow=self.uow(), clock=self.clock, limits=LIMITS,
                                  shortcode="600000")

    async def confirm(self, body: bytes):
        return await receive_c2b_confirmation(body, source="196.201.214.200", uow=self.uow(), clock=self.clock)

    async def rows(self, table, *where):
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(sa.select(table).where(*where))]


@pytest.fixture
async def world(engine):
    world = World(engine)
    async with world.uow() as uow:
        now = world.clock.now()
        await uow.meters.add(Meter(id="m1", number="A101", name="Flat A1", device_id="dev1", created_at=now))
        await uow.meters.add(Meter(id="m2", number="B-201", name="Shop", device_id="dev2", created_at=now))
        await uow.meters.add(Meter(id="m3", number="OFF1", name="Closed", device_id="dev3", active=False,
                                   created_at=now))
        await uow.commit()
    return world


def test_account_numbers_are_forgiven_case_spaces_and_dashes():
    assert [account_key(raw) for raw in ("a 101", "A-101", " a101 ", "A101")] == ["A101"] * 4
    assert [account_key(raw) for raw in ("A" * 200, "A\x00101", "A\n101", "", None, 101, "\uff21101")] == [None] * 7


@pytest.mark.parametrize("account,amount,code", [
    ("A101", "100.00", "0"), ("a-101", "10", "0"), ("b 201", "70000.00", "0"),
    ("Z999", "100.00", "C2B00012"), ("OFF1", "100.00", "C2B00012"), ("", "100.00", "C2B00012"),
    ("A" * 200, "100.00", "C2B00012"), ("A\x07101", "100.00", "C2B00012"),
    ("A101", "0", "C2B00013"), ("A101", "-5", "C2B00013"), ("A101", "9.99", "C2B00013"),
    ("A101", "70000.01", "C2B00013"), ("A101", "abc", "C2B00013"),
])
async def test_validation_accepts_active_meters_within_limits_and_rejects_with_safaricoms_codes(
        world, account, amount, code):
    answer = await world.validate(c2b_bytes(account=account, amount=amount))
    assert answer.result_code == code
    assert answer.document() == {"ResultCode": code, "ResultDesc": "Accepted" if code == "0" else "Rejected"}
    [stored] = await world.rows(mpesa_callbacks)
    assert stored["kind"] == "c2b_validation" and stored["outcome"] == ("accepted" if code == "0" else code)
    assert await world.rows(payments) == []


async def test_validation_of_junk_and_a_foreign_shortcode_is_rejected_and_stored(world):
    assert (await world.validate(b"{not json")).result_code == "C2B00016"
    assert (await world.validate(c2b_bytes(shortcode="999999"))).result_code == "C2B00015"
    assert len(await world.rows(mpesa_callbacks)) == 2


async def test_confirmation_credits_the_meter_once_with_the_exact_amount(world):
    receipt = await world.confirm(c2b_bytes("SGR7ABC123", amount="250.50", account="a-101"))
    assert receipt.outcome == "completed"
    [payment] = await world.rows(payments)
    assert (payment["channel"], payment["status"], payment["mpesa_receipt"]) == ("c2b", "completed", "SGR7ABC123")
    assert payment["paid_amount"] == Decimal("250.50") and payment["amount"] == 250 and payment["meter_id"] == "m1"
    assert payment["phone"] == "" and payment["payer_msisdn"].startswith("2b4b") and payment["payer_name"] == "WANJIKU K***"
    [topup] = await world.rows(topups)
    assert topup["amount"] == Decimal("250.50") and topup["payment_id"] == payment["id"]
    assert [j["kind"] for j in await world.rows(jobs)] == ["topup"]
    again = await world.confirm(c2b_bytes("SGR7ABC123", amount="250.50", account="a-101"))
    assert again.outcome == "duplicate"
    assert len(await world.rows(payments)) == 1 and len(await world.rows(topups)) == 1
    assert [c["outcome"] for c in await world.rows(mpesa_callbacks)] == ["completed", "duplicate"]


async def test_a_phone_in_clear_is_kept_as_the_payments_phone(world):
    await world.confirm(c2b_bytes("SGR7CLEAR1", msisdn="254712345678"))
    [payment] = await world.rows(payments)
    assert payment["phone"] == "254712345678"


@pytest.mark.parametrize("body,code", [
    (b"{not json", "malformed_callback"), (b"[]", "malformed_callback"),
    (c2b_bytes("X" * 40), "malformed_callback"), (c2b_bytes("SGR7ZERO01", amount="0"), "invalid_amount"),
    (c2b_bytes("SGR7NEG001", amount="-100"), "invalid_amount"), (c2b_bytes("SGR7ODD001", amount="1.005"), "invalid_amount"),
])
async def test_bad_confirmations_are_kept_refused_and_credit_nothing(world, body, code):
    with pytest.raises(InvalidInput) as refused:
        await world.confirm(body)
    assert refused.value.code == code
    [stored] = await world.rows(mpesa_callbacks)
    assert stored["kind"] == "c2b_confirmation" and stored["outcome"] in ("malformed", "invalid_amount")
    assert await world.rows(payments) == [] and await world.rows(topups) == []


async def test_confirmation_storm_of_shuffled_concurrent_copies_credits_once(world):
    ids = [f"SGR7STORM{n}" for n in range(4)]
    bodies = [c2b_bytes(trans_id, amount="100") for trans_id in ids for _ in range(6)]
    random.Random(13).shuffle(bodies)
    receipts = await asyncio.gather(*(world.confirm(body) for body in bodies))
    assert sorted(r.outcome for r in receipts) == ["completed"] * 4 + ["duplicate"] * 20
    assert sorted(p["mpesa_receipt"] for p in await world.rows(payments)) == ids
    assert len(await world.rows(topups)) == 4


@pytest.mark.parametrize("account,kind,why", [
    ("Z999", "Pay Bill", "names no meter"), ("OFF1", "Pay Bill", "deactivated"),
    ("", "Buy Goods", "Till payment without an account"), ("A" * 200, "Pay Bill", "not a meter number"),
])
async def test_unknown_account_waits_for_a_person_then_is_assigned_and_credited_once(world, account, kind, why):
    receipt = await world.confirm(c2b_bytes("SGR7UNKN01", amount="300", account=account, kind=kind))
    assert receipt.outcome == "unknown_account" and await world.rows(payments) == []
    assert (await world.confirm(c2b_bytes("SGR7UNKN01", amount="300", account=account, kind=kind))).outcome == "duplicate"
    [item] = await list_reviews(uow=world.uow())
    assert item.kind == "c2b" and item.amount == Decimal("300") and why in item.reason and "SGR7UNKN01" in item.reason
    with pytest.raises(InvalidInput):
        await resolve_review(item.id, "wrong meter", action="assign", actor=ALICE, uow=world.uow(),
                             clock=world.clock, meter="OFF1")
    await resolve_review(item.id, "tenant phoned: flat A1", action="assign", actor=ALICE, uow=world.uow(),
                         clock=world.clock, meter="a 101")
    [payment] = await world.rows(payments)
    assert (payment["meter_id"], payment["channel"], payment["mpesa_receipt"]) == ("m1", "c2b", "SGR7UNKN01")
    assert len(await world.rows(topups)) == 1 and await list_reviews(uow=world.uow()) == []
    with pytest.raises(NotFound):
        await resolve_review(item.id, "again", action="assign", actor=ALICE, uow=world.uow(), clock=world.clock,
                             meter="A101")
    assert (await world.confirm(c2b_bytes("SGR7UNKN01", amount="300", account=account))).outcome == "duplicate"
    assert len(await world.rows(topups)) == 1


async def test_concurrent_assignments_credit_once(world):
    await world.confirm(c2b_bytes("SGR7RACE01", account="nobody"))
    [item] = await list_reviews(uow=world.uow())
    results = await asyncio.gather(*(resolve_review(item.id, "twice", action="assign", actor=ALICE, uow=world.uow(),
                                                    clock=world.clock, meter="A101") for _ in range(4)),
                                   return_exceptions=True)
    assert sum(r == "assign" for r in results) == 1
    assert all(isinstance(r, (NotFound, Conflict)) for r in results if r != "assign")
    assert len(await world.rows(topups)) == 1


async def test_a_refund_closes_the_review_and_credits_nothing(world):
    await world.confirm(c2b_bytes("SGR7REFUND", account="nobody"))
    [item] = await list_reviews(uow=world.uow())
    await resolve_review(item.id, "reversed in the M-Pesa portal", action="refund", actor=ALICE, uow=world.uow(),
                         clock=world.clock)
    assert await list_reviews(uow=world.uow()) == [] and await world.rows(payments) == []
    [stored] = await world.rows(mpesa_callbacks)
    assert stored["outcome"] == "refunded"


@pytest.mark.parametrize("language,wording", [("en", "Pay by Paybill 600000, account A101"),
                                              ("sw", "Lipa kwa Paybill 600000, akaunti A101")])
def test_balance_screen_shows_the_paybill_when_one_is_set(language, wording):
    from core.dialogue.screens import draw
    from core.dialogue.types import BalanceInfo, Caller, DialogueState, Frame, MeterChoice
    from ussd.render import to_text

    meter = MeterChoice(number="A101", name="Flat A1")
    state = DialogueState(language=language).model_copy(update={
        "frame": Frame(screen="balance", meter=meter), "balance": BalanceInfo(meter=meter, amount=Decimal(5), live=True)})
    shown = to_text(draw(state, Caller(phone="254712345678", meters=(meter,), paybill="600000"))[1])
    assert wording in shown and len(shown) <= 160
    assert "Paybill" not in to_text(draw(state, Caller(phone="254712345678", meters=(meter,)))[1])
