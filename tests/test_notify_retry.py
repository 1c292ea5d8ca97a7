"""A receipt job that runs again after a temporary failure tells nobody twice: a C2B payment's receipt goes
to every tenant linked to the meter (and the payer), and one SMS failing for now must not repeat the others."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.jobs.kinds import Notify, NotifyEvent
from core.meters.model import Meter
from core.notify.service import notify
from core.payments.model import Channel, Payment, PaymentStatus
from core.shared.errors import UpstreamError
from core.tenants.model import Tenant
from storage.uow import SqlUnitOfWork
from tests.fakes import FakeClock, FakeStore, FakeUnitOfWork

NOW = datetime(2026, 11, 29, 9, tzinfo=UTC)
WANJIKU, OTIENO, PAYER = "254712345678", "254722000111", "254733000999"


class FlakySms:
    """Refuses `phone` for now (a transient failure) `times` times, then takes it."""

    def __init__(self, phone: str, times: int = 1) -> None:
        self.phone, self.times, self.sent = phone, times, []

    async def send(self, phone: str, message: str) -> None:
        if phone == self.phone and self.times:
            self.times -= 1
            raise UpstreamError("SMS gateway busy", code="busy", transient=True)
        self.sent.append(phone)


async def c2b_paid(uow) -> None:
    async with uow:
        await uow.meters.add(Meter(id="m", number="A101", name="Flat A1", device_id="d", created_at=NOW))
        for tenant_id, phone in (("t1", WANJIKU), ("t2", OTIENO)):
            await uow.tenants.add(Tenant(id=tenant_id, phone=phone, created_at=NOW))
            await uow.tenants.link(tenant_id, "m")
        await uow.payments.add(Payment(id="p", amount=100, phone=PAYER, meter_id="m", channel=Channel.C2B,
                                       created_at=NOW, updated_at=NOW, status=PaymentStatus.COMPLETED,
                                       mpesa_receipt="TK12ABC345", paid_amount=100))
        await uow.commit()


async def retried_until_done(uow_factory, sms) -> int:
    event, runs = Notify(NotifyEvent.TOPUP_DELAYED, payment_id="p"), 0
    while True:
        runs += 1
        try:
            await notify(event, uow=uow_factory(), sms=sms, clock=FakeClock())
            return runs
        except UpstreamError:
            continue  # what the worker does, after a backoff


@pytest.mark.parametrize("flaky", [OTIENO, PAYER])
async def test_a_retried_c2b_receipt_reaches_everyone_once(flaky):
    store = FakeStore()
    await c2b_paid(FakeUnitOfWork(store))
    sms = FlakySms(flaky, times=2)
    assert await retried_until_done(lambda: FakeUnitOfWork(store), sms) == 3
    assert sorted(sms.sent) == sorted([WANJIKU, OTIENO, PAYER])  # nobody twice, nobody left out
    assert [n["status"] for n in store.notifications] == ["sent"] * 3


async def test_the_same_on_the_database(engine):
    await c2b_paid(SqlUnitOfWork(engine))
    sms = FlakySms(OTIENO, times=1)
    assert await retried_until_done(lambda: SqlUnitOfWork(engine), sms) == 2
    assert sorted(sms.sent) == sorted([WANJIKU, OTIENO, PAYER])
    async with SqlUnitOfWork(engine) as uow:
        assert len(await uow.notifications.told("p", "topup_delayed")) == 3
        assert await uow.notifications.told("p", "topup_applied") == []


async def test_two_linked_phones_that_mask_alike_are_both_told():
    """Rows keep phones masked (2547*****678): a told row stands for one message, not for every phone
    with that mask."""
    store = FakeStore()
    await c2b_paid(FakeUnitOfWork(store))
    twin = "254799999678"  # masks as Wanjiku's number does
    async with FakeUnitOfWork(store) as uow:
        await uow.tenants.add(Tenant(id="t3", phone=twin, created_at=NOW))
        await uow.tenants.link("t3", "m")
        await uow.commit()
    sms = FlakySms(twin, times=1)
    assert await retried_until_done(lambda: FakeUnitOfWork(store), sms) == 2
    assert sorted(sms.sent) == sorted([WANJIKU, twin, OTIENO, PAYER])
