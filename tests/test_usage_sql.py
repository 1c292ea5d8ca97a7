"""Sampling, the shared budget, alerts once, and the roll-up, on both engines with a fake clock and the
in-memory meters (tests/fakes.py FakeMeterGateway; our own model of the Tuya cloud)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from core.jobs.kinds import AlertKind
from core.meters.model import Meter
from core.meters.profiles import BUILTIN_PROFILES
from core.tenants.model import Tenant
from core.usage import service as usage
from core.usage.alerts import check_alerts
from core.usage.model import Reading
from storage.db import create_engine
from storage.uow import SqlUnitOfWork
from tests.fakes import FakeClock, FakeMeterGateway

T0 = datetime(2026, 11, 9, 21, 0, tzinfo=UTC)  # Nairobi midnight


class CountingGateway(FakeMeterGateway):
    def __init__(self, clock):
        super().__init__(clock)
        self.calls: list[datetime] = []

    async def status(self, device_id):
        self.calls.append(self.clock.now())
        return await super().status(device_id)


async def add_meters(engine, gateway, n: int, balance="500") -> list[str]:
    ids = []
    async with SqlUnitOfWork(engine) as uow:
        for i in range(n):
            device = f"dev-{i}"
            gateway.add(device, balance=balance)
            meter_id = f"m{i:035d}"
            await uow.meters.add(Meter(id=meter_id, number=f"A{i:03d}", name="Flat", device_id=device,
                                       dp_specs=gateway.dp_specs(device), created_at=T0))
            ids.append(meter_id)
        await uow.commit()
    return ids


async def test_sampling_never_exceeds_the_shared_budget(database_url):
    clock = FakeClock(T0 + timedelta(seconds=120))  # the meters were registered two minutes ago
    gateway = CountingGateway(clock)
    engines = [create_engine(database_url), create_engine(database_url)]  # two workers' pools
    try:
        await add_meters(engines[0], gateway, 40)
        config = usage.SamplingConfig(every_s=120, calls_per_minute=12, batch=50)  # demand: 20 a minute
        samplers = [usage.Sampler(uow=lambda e=e: SqlUnitOfWork(e), meters=gateway, profiles=BUILTIN_PROFILES,
                                  clock=clock, config=config) for e in engines]
        for _step in range(90):  # 15 minutes, both workers running every 10 s
            for sampler in samplers:
                await sampler.run()
            clock.advance(10)
        for i, at in enumerate(gateway.calls):
            assert sum(1 for other in gateway.calls[i:] if other < at + timedelta(seconds=60)) <= 12
        assert len(gateway.calls) >= 130  # about 10 a minute (12 less the burst of 2) for 15 minutes
        async with SqlUnitOfWork(engines[0]) as uow:
            assert await uow.usage.count_readings() == len(gateway.calls)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_alert_once_per_tenant_and_offline_says_nothing(engine):
    clock = FakeClock(T0 + timedelta(hours=12))  # 12:00 Nairobi
    gateway = FakeMeterGateway(clock)
    [meter_id] = await add_meters(engine, gateway, 1, balance="40")
    async with SqlUnitOfWork(engine) as uow:
        for i in range(10):  # ten tenants on the one meter
            await uow.tenants.add(Tenant(id=f"t{i}", phone=f"25471234560{i}", created_at=T0))
            await uow.tenants.link(f"t{i}", meter_id)
        await uow.commit()
    async with SqlUnitOfWork(engine) as uow:
        meter = await uow.meters.get(meter_id)
        usage_row = await uow.usage.meter(meter_id)
        usage_row.threshold = D(50)
        await uow.usage.save_meter(usage_row)
        await uow.commit()
    for _ in range(3):
        await check_alerts(SqlUnitOfWork(engine), meter, balance=D(40), threshold=D(50), average=None,
                           now=clock.now(), quiet=(21, 7))
    await check_alerts(SqlUnitOfWork(engine), meter, balance=None, threshold=D(50), average=None, now=clock.now(),
                       quiet=(21, 7))
    async with SqlUnitOfWork(engine) as uow:
        jobs = await uow.jobs.claim(["alert"], worker="w", lease_s=60, limit=100)
    assert sorted(job.payload["tenant_id"] for job in jobs) == [f"t{i}" for i in range(10)]
    assert {job.payload["alert"] for job in jobs} == {AlertKind.LOW.value}


async def test_roll_up_keeps_daily_rows_and_prunes_raw_readings(engine):
    clock = FakeClock(T0)
    gateway = FakeMeterGateway(clock)
    [meter_id] = await add_meters(engine, gateway, 1)
    async with SqlUnitOfWork(engine) as uow:
        for h in range(24 * 5):  # five days, 2 KES an hour
            await uow.usage.add_reading(Reading(meter_id, T0 + timedelta(hours=h), D(500) - 2 * h))
        await uow.commit()
    now = T0 + timedelta(days=4, hours=20)
    written = await usage.roll_up(lambda: SqlUnitOfWork(engine), BUILTIN_PROFILES, now=now)
    assert written == 3
    assert await usage.roll_up(lambda: SqlUnitOfWork(engine), BUILTIN_PROFILES, now=now) == 0  # idempotent
    async with SqlUnitOfWork(engine) as uow:
        rows = await uow.usage.daily(meter_id)
        left = await uow.usage.count_readings()
        meter = await uow.meters.get(meter_id)
        summary = await usage.summarise(uow, meter, BUILTIN_PROFILES["seed"], now=now)
    assert [row.consumption for row in rows] == [D(48), D(48), D(48)]
    assert left == 24 * 2 + 1  # today, yesterday and the anchor
    assert [day.consumption for day in summary.days][:4] == [D(48)] * 4
    assert summary.average == D(48) and summary.balance == D(262) and summary.days_left == 5
    assert summary.threshold == D(96)


class Recorder:
    def __init__(self, fail=None):
        self.sent, self.fail = [], fail

    async def send(self, to, text, **options):
        if self.fail is not None:
            raise self.fail
        self.sent.append((to, text, options))


async def test_alert_goes_to_telegram_with_buy_else_sms_with_how_to_buy(engine):
    from core.jobs.kinds import Alert
    from core.ports import Blocked
    from core.usage.alerts import BuyInfo, send_alert

    clock = FakeClock(T0)
    [meter_id] = await add_meters(engine, FakeMeterGateway(clock), 1, balance="40")
    async with SqlUnitOfWork(engine) as uow:
        await uow.tenants.add(Tenant(id="tg", phone="254712345670", telegram_chat_id=99, created_at=T0))
        await uow.tenants.add(Tenant(id="sw", phone="254712345671", language="sw", telegram_chat_id=98, created_at=T0))
        await uow.commit()
    buy = BuyInfo(ussd_code="*384*1#", paybill="174379")
    telegram, sms = Recorder(), Recorder()
    await send_alert(Alert(AlertKind.LOW, meter_id=meter_id, tenant_id="tg"), uow=SqlUnitOfWork(engine), sms=sms,
                     telegram=telegram, clock=clock, buy=buy)
    assert telegram.sent[0][0] == 99 and telegram.sent[0][2] == {"buy_button": True} and not sms.sent
    blocked = Recorder(fail=Blocked("bot was blocked by the user"))
    await send_alert(Alert(AlertKind.ZERO, meter_id=meter_id, tenant_id="sw"), uow=SqlUnitOfWork(engine), sms=sms,
                     telegram=blocked, clock=clock, buy=buy)
    [(phone, text, _)] = sms.sent
    assert phone == "254712345671" and "Piga *384*1#" in text and "Paybill 174379, akaunti A000" in text
