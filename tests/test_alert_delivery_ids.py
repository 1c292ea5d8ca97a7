"""The tenant's low-balance alert and the landlord's alert keep the SMS gateway's message id, as receipts do,
so that Africa's Talking's delivery report (core/notify/delivery.py) finds their row and records what became
of the message. On both engines."""

from __future__ import annotations

from datetime import UTC, datetime

from core.audit.alerts import ALERT_EVENT, tell_landlord
from core.audit.checks import audit
from core.audit.facts import Facts, ReviewItem
from core.jobs.kinds import Alert, AlertKind
from core.notify.delivery import DeliveryReport, record_delivery
from core.tenants.model import Tenant
from core.usage.alerts import BuyInfo, send_alert
from storage.uow import SqlUnitOfWork
from tests.fakes import AtLikeSms, FakeClock, FakeMeterGateway
from tests.test_usage_sql import add_meters

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
LANDLORD = "254722000111"


async def test_a_low_balance_alert_sms_gets_its_delivery_report(engine):
    clock, sms = FakeClock(T0), AtLikeSms()
    [meter_id] = await add_meters(engine, FakeMeterGateway(clock), 1, balance="40")
    async with SqlUnitOfWork(engine) as uow:
        await uow.tenants.add(Tenant(id="t", phone="254712345670", created_at=T0))
        await uow.commit()
    assert await send_alert(Alert(AlertKind.LOW, meter_id=meter_id, tenant_id="t"), uow=SqlUnitOfWork(engine),
                            sms=sms, telegram=None, clock=clock, buy=BuyInfo(ussd_code="*384*1#")) == "sent"
    async with SqlUnitOfWork(engine) as uow:
        notice = await uow.notifications.by_provider_id("ATXid_1")
    assert notice is not None and notice.event == "alert_low"
    await record_delivery(DeliveryReport("ATXid_1", "Failed", "+254712345670", "63902", "DeliveryFailure"),
                          uow=SqlUnitOfWork(engine), clock=clock)
    async with SqlUnitOfWork(engine) as uow:
        notice = await uow.notifications.by_provider_id("ATXid_1")
    assert notice.delivery_status == "Failed" and notice.delivery_error == "DeliveryFailure"


async def test_the_landlords_alert_sms_keeps_its_message_id(engine):
    clock, sms = FakeClock(T0), AtLikeSms()
    told = await tell_landlord(audit(Facts()), [ReviewItem("payment KES 500 for meter A101", T0)], phone=LANDLORD,
                               uow=SqlUnitOfWork(engine), sms=sms, telegram=None, clock=clock)
    assert told == "sent"
    async with SqlUnitOfWork(engine) as uow:
        notice = await uow.notifications.by_provider_id("ATXid_1")
    assert notice is not None and notice.event == ALERT_EVENT
