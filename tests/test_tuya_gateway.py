"""TuyaMeterGateway against the Tuya sandbox over real HTTP, signed by the real tuya-connector-python."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC
from decimal import Decimal as D

import pytest

from core.admin.operator import Actor, meter_command
from core.meters.model import Meter
from core.meters.profiles import BUILTIN_PROFILES, missing_codes
from core.shared.errors import InvalidInput, UpstreamError
from core.topups.decision import Verdict, plan_charge, read_meter
from core.topups.model import TopUp, TopUpStatus
from core.topups.service import TopUpEngine, TopUpPolicy
from gateways.tuya import TuyaMeterGateway
from gateways.tuya_errors import TuyaOutcomeUnknown, TuyaPermanentError, TuyaTransientError
from sandbox.tuya import create_tuya_sandbox
from tests.fakes import FakeClock, FakeUnitOfWork
from tests.servers import reserve_port, serve

ACCESS_ID, SECRET = "gw-access-id-0001", "gw-secret-do-not-log"
SEED, STANDARD = BUILTIN_PROFILES["seed"], BUILTIN_PROFILES["tuya-standard"]


@pytest.fixture
def cloud():
    app = create_tuya_sandbox(access_id=ACCESS_ID, access_secret=SECRET)
    app.state.tuya.add_device("seed1", "seed", balance="100", price="25")
    app.state.tuya.add_device("std1", "tuya-standard", balance="10")
    with serve(app) as server:
        yield server, app.state.tuya


@pytest.fixture
def gateway(cloud):
    gw = TuyaMeterGateway(cloud[0].url, ACCESS_ID, SECRET, timeout_s=0.4)
    yield gw
    gw.close()


async def reading_of(gateway, device_id, profile):
    specs = await gateway.specifications(device_id)
    return read_meter(profile, specs, await gateway.status(device_id))


async def charge_and_check(gateway, device_id, profile, amount):
    specs = await gateway.specifications(device_id)
    reading = read_meter(profile, specs, await gateway.status(device_id))
    plan = plan_charge(profile, specs, amount, reading.price or D("25"))
    before = plan.check.value(await gateway.status(device_id))
    return plan, before


async def verdict(gateway, device_id, plan, before):
    return plan.check.verdict(before, plan.check.value(await gateway.status(device_id)))


# --- reads -------------------------------------------------------------------------------------------

async def test_device_info_specifications_and_status(gateway, cloud):
    info = await gateway.device_info("seed1")
    assert info["online"] is True and info["name"] and "local_key" not in info
    specs = await gateway.specifications("seed1")
    by_code = {s.code: s for s in specs}
    assert (by_code["charge_money"].scale, by_code["charge_money"].writable) == (2, True)
    assert missing_codes(SEED, specs) == []
    assert missing_codes(STANDARD, specs) == ["charge_energy", "switch_prepayment"]
    assert (await gateway.status("seed1"))["balance"] == 10000
    reading = await reading_of(gateway, "seed1", SEED)
    assert (reading.money_balance, reading.energy_balance) == (D("100.00"), D("4.00"))
    cloud[1].set_fault("seed1", "offline")
    assert (await gateway.device_info("seed1"))["online"] is False


async def test_invalid_device_id_never_reaches_the_cloud(gateway, cloud):
    with pytest.raises(InvalidInput):
        await gateway.status("../token")
    assert cloud[1].requests == []


# --- charges -------------------------------------------------------------------------------------------

async def meter_world(gateway, device_id, profile) -> FakeUnitOfWork:
    """A store holding one meter on the sandbox device, as `lipameter meter add` would leave it."""
    uow = FakeUnitOfWork()
    specs = await gateway.specifications(device_id)
    uow.store.meters[device_id] = Meter(id=device_id, number=device_id.upper(), name=device_id, device_id=device_id,
                                        profile=profile.name, price_per_kwh=D("25"),
                                        dp_specs={spec.code: spec.to_dict() for spec in specs})
    return uow


async def test_the_engine_charges_a_seed_meter_once_through_the_gateway(gateway, cloud):
    uow, clock = await meter_world(gateway, "seed1", SEED), FakeClock()
    now = clock.now()
    uow.store.topups["t1"] = TopUp(id="t1", meter_id="seed1", amount=D("19.99"), created_at=now, updated_at=now,
                                   next_attempt_at=now)
    engine = TopUpEngine(uow=lambda: FakeUnitOfWork(uow.store), meters=gateway, profiles=BUILTIN_PROFILES,
                         clock=clock, policy=TopUpPolicy(confirm_deadline_s=5, poll_interval_s=0.05))
    assert await engine.run("t1") is TopUpStatus.APPLIED
    assert await engine.run("t1") is TopUpStatus.APPLIED  # a duplicate job changes nothing
    reading = await reading_of(gateway, "seed1", SEED)
    assert reading.money_balance == D("119.99") and reading.purchase_total == D("0.79")
    assert uow.store.topups["t1"].balance_after == D("119.99")
    assert cloud[1].total_credits("seed1") == D("19.99")


async def test_standard_charge_survives_consumption_in_the_check(gateway, cloud):
    plan, before = await charge_and_check(gateway, "std1", STANDARD, D("510"))
    assert plan.command == {"code": "charge_energy", "value": 20} and plan.remainder == D("10")
    cloud[1].consume("std1", "0.3")
    assert await verdict(gateway, "std1", plan, before) == Verdict.NOT_APPLIED
    await gateway.send_commands("std1", [plan.command])
    assert await verdict(gateway, "std1", plan, before) == Verdict.APPLIED
    assert (await reading_of(gateway, "std1", STANDARD)).energy_balance == D("29")


async def operate(gateway, uow, number, operation, value):
    return await meter_command(number, operation, value, actor=Actor("ops"), reason="test", uow=uow, meters=gateway,
                               profiles=BUILTIN_PROFILES, clock=FakeClock())


async def test_meter_settings_through_operator_commands(gateway, cloud):
    uow = await meter_world(gateway, "seed1", SEED)
    meter = await operate(gateway, uow, "SEED1", "set_price", "30.50")
    assert meter.price_per_kwh == D("30.50") and (await reading_of(gateway, "seed1", SEED)).price == D("30.50")
    await operate(gateway, uow, "SEED1", "prepayment_switch", False)
    await operate(gateway, uow, "SEED1", "clear", True)
    reading = await reading_of(gateway, "seed1", SEED)
    assert (reading.prepayment, reading.money_balance) == (False, D("0.00"))
    standard = await meter_world(gateway, "std1", STANDARD)
    with pytest.raises(InvalidInput, match="cannot set price"):
        await operate(gateway, standard, "STD1", "set_price", "30")


async def test_values_the_meter_cannot_hold_are_refused(gateway, cloud):
    specs = await gateway.specifications("seed1")
    with pytest.raises(InvalidInput, match="outside"):
        plan_charge(SEED, specs, D("100000"), D("25"))  # refused before anything is sent
    with pytest.raises(TuyaPermanentError) as exc:
        await gateway.send_commands("seed1", [{"code": "charge_money", "value": 10_000_000}])
    assert exc.value.tuya_code == 1101 and exc.value.transient is False
    with pytest.raises(TuyaPermanentError) as exc:
        await gateway.send_commands("seed1", [{"code": "charge_energy", "value": 5}])
    assert exc.value.tuya_code == 2008 and isinstance(exc.value, UpstreamError)
    assert cloud[1].total_credits("seed1") == 0


# --- auth ---------------------------------------------------------------------------------------------

async def test_wrong_secret_is_permanent(cloud):
    gw = TuyaMeterGateway(cloud[0].url, ACCESS_ID, "not-the-secret", timeout_s=0.4)
    with pytest.raises(TuyaPermanentError) as exc:
        await gw.status("seed1")
    assert exc.value.tuya_code == 1004 and exc.value.code == "tuya_1004"


async def test_expired_token_reconnects_transparently(gateway, cloud):
    await gateway.status("seed1")
    cloud[1].expire_tokens()
    assert (await gateway.status("seed1"))["balance"] == 10000
    assert [p for _, p in cloud[1].requests].count("/v1.0/token") == 2


async def test_unknown_token_1011_reconnects_once(gateway, cloud):
    await gateway.status("seed1")
    gateway._api.token_info.access_token = "f" * 32  # the client itself only handles 1010
    assert (await gateway.status("seed1"))["balance"] == 10000


async def test_short_lived_tokens_are_renewed_without_refresh_tokens_in_urls(cloud, caplog):
    cloud[1].token_ttl_s = 30  # inside the client's 60 s refresh margin
    gw = TuyaMeterGateway(cloud[0].url, ACCESS_ID, SECRET, timeout_s=5)  # 0.4 s timed out on a busy CI machine
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        await gw.status("seed1")
    paths = [p for _, p in cloud[1].requests]
    assert paths.count("/v1.0/token") == 3 and not any(p.startswith("/v1.0/token/") for p in paths)
    secrets_seen = [SECRET, *cloud[1]._tokens, *cloud[1]._refresh]
    assert not [s for s in secrets_seen if s in caplog.text]


# --- failures -----------------------------------------------------------------------------------------

async def test_offline_is_transient_and_not_an_unknown_outcome(gateway, cloud):
    cloud[1].set_fault("seed1", "offline")
    with pytest.raises(TuyaTransientError) as exc:
        await gateway.send_commands("seed1", [{"code": "charge_money", "value": 100}])
    assert exc.value.tuya_code == 2001 and exc.value.transient and not isinstance(exc.value, TuyaOutcomeUnknown)


@pytest.mark.parametrize("code", [1110, 1111, 1199])
async def test_throttling_is_transient(gateway, cloud, code):
    cloud[1].set_fault("seed1", "throttle", n=1, code=code)
    with pytest.raises(TuyaTransientError) as exc:
        await gateway.status("seed1")
    assert exc.value.tuya_code == code
    assert (await gateway.status("seed1"))["balance"] == 10000


async def test_server_errors(gateway, cloud):
    plan, before = await charge_and_check(gateway, "seed1", SEED, D("50"))
    cloud[1].set_fault("seed1", "server_error", n=2)
    with pytest.raises(TuyaTransientError) as read_exc:
        await gateway.status("seed1")
    assert not isinstance(read_exc.value, TuyaOutcomeUnknown)
    with pytest.raises(TuyaOutcomeUnknown):  # a 5xx after sending says nothing about the meter
        await gateway.send_commands("seed1", [plan.command])
    assert await verdict(gateway, "seed1", plan, before) == Verdict.NOT_APPLIED  # so it may be sent again
    assert cloud[1].total_credits("seed1") == 0


async def test_slow_read_times_out_as_transient(gateway, cloud):
    cloud[1].set_fault("seed1", "slow", seconds=0.8)
    with pytest.raises(TuyaTransientError) as exc:
        await gateway.status("seed1")
    assert not isinstance(exc.value, TuyaOutcomeUnknown)


async def test_slow_command_is_an_unknown_outcome_then_verified_applied(gateway, cloud):
    plan, before = await charge_and_check(gateway, "seed1", SEED, D("500"))
    cloud[1].set_fault("seed1", "slow", seconds=0.6)
    with pytest.raises(TuyaOutcomeUnknown):
        await gateway.send_commands("seed1", [plan.command])
    await asyncio.sleep(0.4)  # the cloud carries on after the client gave up
    assert await verdict(gateway, "seed1", plan, before) == Verdict.APPLIED
    assert cloud[1].total_credits("seed1") == D("500")


async def test_accept_not_apply_is_seen_as_not_applied(gateway, cloud):
    plan, before = await charge_and_check(gateway, "seed1", SEED, D("500"))
    cloud[1].set_fault("seed1", "accept_not_apply")
    await gateway.send_commands("seed1", [plan.command])  # Tuya says yes
    assert await verdict(gateway, "seed1", plan, before) == Verdict.NOT_APPLIED
    assert (await gateway.status("seed1"))["balance"] == 10000 and cloud[1].total_credits("seed1") == 0


@pytest.mark.parametrize("mode", ["sleep", "drop"])
async def test_apply_lose_answer_applies_exactly_once(gateway, cloud, mode):
    plan, before = await charge_and_check(gateway, "seed1", SEED, D("500"))
    cloud[1].set_fault("seed1", "apply_lose_answer", mode=mode, seconds=0.6)
    with pytest.raises(TuyaOutcomeUnknown):
        await gateway.send_commands("seed1", [plan.command])
    # The next attempt verifies first (DESIGN §5) and finds the charge: nothing is resent.
    assert await verdict(gateway, "seed1", plan, before) == Verdict.APPLIED
    assert cloud[1].total_credits("seed1") == D("500")


async def test_deadline_backstop_and_queued_commands_are_never_sent_late(cloud):
    gw = TuyaMeterGateway(cloud[0].url, ACCESS_ID, SECRET, timeout_s=2.0, deadline_s=0.3)
    await gw.status("seed1")
    cloud[1].set_fault("seed1", "slow", seconds=0.6)
    first = gw.send_commands("seed1", [{"code": "charge_money", "value": 100}])
    second = gw.send_commands("seed1", [{"code": "charge_money", "value": 200}])
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], TuyaOutcomeUnknown)  # sent, answer late
    assert type(results[1]) is TuyaTransientError  # waited for the lock, gave up before sending
    await asyncio.sleep(0.6)
    assert cloud[1].total_credits("seed1") == D("1.00")  # the queued one never left
    gw.close()


async def test_connection_refused_is_transient_not_unknown():
    gw = TuyaMeterGateway(f"http://127.0.0.1:{reserve_port()}", ACCESS_ID, SECRET, timeout_s=0.4)
    with pytest.raises(TuyaTransientError) as exc:
        await gw.send_commands("seed1", [{"code": "charge_money", "value": 100}])
    assert not isinstance(exc.value, TuyaOutcomeUnknown) and exc.value.tuya_code is None


# --- report times, and the cloud's setup errors (issue 10) --------------------------------------------

async def test_reports_give_each_dp_its_report_time_on_our_clock(gateway, cloud):
    from datetime import datetime, timedelta

    meter = cloud[1].meter("seed1")
    meter.report_late(600, ["electric_total"])
    meter._reported["electric_total"] = (0, time.time() - 120)  # last reported two minutes ago
    reports = await gateway.reports("seed1", ["electric_total", "balance"])
    now = datetime.now(UTC)
    assert set(reports) == {"electric_total", "balance"} and reports["balance"].value == 10000
    assert abs((now - reports["electric_total"].reported_at) - timedelta(seconds=120)) < timedelta(seconds=5)
    assert abs(now - reports["balance"].reported_at) < timedelta(seconds=5)
    with pytest.raises(InvalidInput):
        await gateway.reports("seed1", ["bad code"])


@pytest.mark.parametrize("code, words", [
    (28841002, "plan has expired"), (28841004, "quota"), (28841101, "not subscribed"),
    (28841105, "not authorized"), (28841001, "Cloud Services")])
async def test_permission_and_quota_errors_are_configuration_errors(gateway, cloud, code, words):
    from core.shared.errors import ConfigurationError
    from gateways.tuya_errors import TuyaConfigurationError

    cloud[1].set_project_fault("error", code=code)
    with pytest.raises(TuyaConfigurationError) as exc:
        await gateway.status("seed1")
    assert isinstance(exc.value, ConfigurationError) and not exc.value.transient
    assert exc.value.tuya_code == code and words in exc.value.message and "platform.tuya.com" in exc.value.message
    assert [p for _, p in cloud[1].requests].count("/v1.0/devices/seed1/status") == 1  # asked once, not retried


async def test_clock_skew_is_reported_as_such(gateway, cloud):
    from gateways.tuya_errors import TuyaConfigurationError

    cloud[1].set_project_fault("clock_skew", seconds=1200)
    with pytest.raises(TuyaConfigurationError) as exc:
        await gateway.status("seed1")
    assert exc.value.tuya_code == 1013 and "clock" in exc.value.message and "NTP" in exc.value.message


async def test_token_expiring_mid_use_is_renewed_once_and_the_call_retried(gateway, cloud):
    await gateway.status("seed1")
    cloud[1].set_project_fault("expire_tokens")
    assert (await gateway.reports("seed1", ["balance"]))["balance"].value == 10000
    paths = [p for _, p in cloud[1].requests]
    assert paths.count("/v1.0/token") == 2 and paths.count("/v2.0/cloud/thing/seed1/shadow/properties") == 2


# --- the way out ------------------------------------------------------------------------------------

@pytest.fixture
def proxy():
    """A forward proxy that refuses everything, keeping what was asked of it."""
    asked: list[bytes] = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        asked.append(scope["raw_path"])
        await send({"type": "http.response.start", "status": 502, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as server:
        yield server.url, asked


async def test_calls_go_through_the_proxy_the_environment_names_unless_no_proxy_names_the_cloud(cloud, proxy,
                                                                                                 monkeypatch):
    url, asked = proxy
    for name in ("HTTP_PROXY", "http_proxy"):  # urllib prefers the lowercase one where both are set
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    through = TuyaMeterGateway(cloud[0].url, ACCESS_ID, SECRET, timeout_s=0.4)
    with pytest.raises(TuyaTransientError):
        await through.check_token()
    through.close()
    assert asked and all(b"/v1.0/token" in target for target in asked)

    asked.clear()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    direct = TuyaMeterGateway(cloud[0].url, ACCESS_ID, SECRET, timeout_s=0.4)
    await direct.check_token()
    direct.close()
    assert asked == []
