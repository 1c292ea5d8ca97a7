"""TuyaMeterGateway against the Tuya sandbox over real HTTP, signed by the real tuya-connector-python."""

from __future__ import annotations

import asyncio
import time
import logging
from decimal import Decimal as D

import pytest

from core.shared.errors import InvalidInput, UpstreamError
from core.meters.profiles import BUILTIN_PROFILES, missing_codes
from core.topups.decision import Verdict, plan_charge
from gateways.tuya import TuyaMeterGateway
from gateways.tuya_errors import TuyaOutcomeUnknown, TuyaPermanentError, TuyaTransientError
from sandbox.tuya import create_tuya_sandbox
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


async def charge_and_check(gateway, device_id, profile, amount):
    specs = await gateway.specifications(device_id)
    reading = await gateway.read_meter(device_id, profile=profile, specs=specs)
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
    assert await gateway.balance("seed1", profile=SEED, specs=specs) == D("100.00")
    assert await gateway.balance_energy("seed1", profile=SEED, specs=specs) == D("4.00")
    cloud[1].set_fault("seed1", "offline")
    assert (await gateway.device_info("seed1"))["online"] is False


async def test_invalid_device_id_never_reaches_the_cloud(gateway, cloud):
    with pytest.raises(InvalidInput):
        await gateway.status("../token")
    assert cloud[1].requests == []


# --- charges -------------------------------------------------------------------------------------------

async def test_seed_charge_raises_balance_and_purchase_counter(gateway, cloud):
    plan, before = await charge_and_check(gateway, "seed1", SEED, D("19.99"))
    await gateway.execute("seed1", plan)
    specs = await gateway.specifications("seed1")
    reading = await gateway.read_meter("seed1", profile=SEED, specs=specs)
    assert reading.money_balance == D("119.99") and reading.purchase_total == D("0.79")
    assert await verdict(gateway, "seed1", plan, before) == Verdict.APPLIED
    assert cloud[1].total_credits("seed1") == D("19.99")


async def test_standard_charge_survives_consumption_in_the_check(gateway, cloud):
    plan, before = await charge_and_check(gateway, "std1", STANDARD, D("510"))
    assert plan.command == {"code": "charge_energy", "value": 20} and plan.remainder == D("10")
    cloud[1].consume("std1", "0.3")
    assert await verdict(gateway, "std1", plan, before) == Verdict.NOT_APPLIED
    await gateway.execute("std1", plan)
    assert await verdict(gateway, "std1", plan, before) == Verdict.APPLIED
    specs = await gateway.specifications("std1")
    assert await gateway.balance_energy("std1", profile=STANDARD, specs=specs) == D("29")


async def test_meter_settings(gateway, cloud):
    specs = await gateway.specifications("seed1")
    assert await gateway.goods_price("seed1", D("30.50"), profile=SEED, specs=specs) == 3050
    assert await gateway.unit_price("seed1", D("28")) == "28.00"
    await gateway.prepayment_switch("seed1", False, profile=SEED, specs=specs)
    await gateway.clear_energy("seed1", profile=SEED, specs=specs)
    reading = await gateway.read_meter("seed1", profile=SEED, specs=specs)
    assert (reading.price, reading.prepayment, reading.money_balance) == (D("28.00"), False, D("0.00"))
    await gateway.charge_token("seed1", "12345678901234567890")
    assert cloud[1].devices["seed1"].tokens == ["12345678901234567890"]
    with pytest.raises(InvalidInput, match="does not support"):
        await gateway.charge_energy("seed1", D("5"), profile=SEED, specs=specs)


async def test_values_the_meter_cannot_hold_are_refused(gateway, cloud):
    specs = await gateway.specifications("seed1")
    with pytest.raises(InvalidInput, match="outside"):
        await gateway.charge_money("seed1", D("100000"), profile=SEED, specs=specs)  # refused before sending
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
    gw = TuyaMeterGateway(cloud[0].url, ACCESS_ID, SECRET, timeout_s=0.4)
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
        await gateway.execute("seed1", plan)
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
        await gateway.execute("seed1", plan)
    await asyncio.sleep(0.4)  # the cloud carries on after the client gave up
    assert await verdict(gateway, "seed1", plan, before) == Verdict.APPLIED
    assert cloud[1].total_credits("seed1") == D("500")


async def test_accept_not_apply_is_seen_as_not_applied(gateway, cloud):
    plan, before = await charge_and_check(gateway, "seed1", SEED, D("500"))
    cloud[1].set_fault("seed1", "accept_not_apply")
    await gateway.execute("seed1", plan)  # Tuya says yes
    assert await verdict(gateway, "seed1", plan, before) == Verdict.NOT_APPLIED
    assert (await gateway.status("seed1"))["balance"] == 10000 and cloud[1].total_credits("seed1") == 0


@pytest.mark.parametrize("mode", ["sleep", "drop"])
async def test_apply_lose_answer_applies_exactly_once(gateway, cloud, mode):
    plan, before = await charge_and_check(gateway, "seed1", SEED, D("500"))
    cloud[1].set_fault("seed1", "apply_lose_answer", mode=mode, seconds=0.6)
    with pytest.raises(TuyaOutcomeUnknown):
        await gateway.execute("seed1", plan)
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
    from datetime import datetime, timedelta, timezone

    meter = cloud[1].meter("seed1")
    meter.report_late(600, ["electric_total"])
    meter._reported["electric_total"] = (0, time.time() - 120)  # last reported two minutes ago
    reports = await gateway.reports("seed1", ["electric_total", "balance"])
    now = datetime.now(timezone.utc)
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
