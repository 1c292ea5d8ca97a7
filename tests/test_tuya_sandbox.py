"""The Tuya cloud sandbox over real HTTP, driven by the real tuya-connector-python client."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from decimal import Decimal as D

import httpx
import pytest
import requests
from tuya_connector import TuyaOpenAPI

from sandbox.tuya import create_tuya_sandbox
from sandbox.tuya_meters import DAY_SHAPE, nairobi_hour, shaped_kwh
from tests.servers import serve

ACCESS_ID, SECRET = "sandbox-id-0001", "sandbox-secret-0001"




@pytest.fixture
def cloud():
    app = create_tuya_sandbox(access_id=ACCESS_ID, access_secret=SECRET)
    sandbox = app.state.tuya
    sandbox.add_device("seed1", "seed", balance="100", price="25")
    sandbox.add_device("std1", "tuya-standard", balance="10")
    with serve(app) as server:
        yield server, sandbox


@pytest.fixture
def api(cloud):
    client = TuyaOpenAPI(cloud[0].url, ACCESS_ID, SECRET)
    assert client.connect()["success"]
    return client


def has(mapping: dict, **expected) -> bool:
    return {k: mapping.get(k) for k in expected} == expected


def status(api: TuyaOpenAPI, device_id: str) -> dict:
    response = api.get(f"/v1.0/devices/{device_id}/status")
    assert response["success"], response
    return {item["code"]: item["value"] for item in response["result"]}


def command(api: TuyaOpenAPI, device_id: str, code: str, value) -> dict:
    return api.post(f"/v1.0/devices/{device_id}/commands", {"commands": [{"code": code, "value": value}]})


def signed_get(url: str, path: str, *, secret: str = SECRET, t: int | None = None, token: str = "",
               nonce: str = "", extra: dict | None = None) -> dict:
    """Sign as Tuya's documentation describes (independently of the client and the sandbox)."""
    t = t if t is not None else int(time.time() * 1000)
    headers = {"client_id": ACCESS_ID, "t": str(t), "sign_method": "HMAC-SHA256", "nonce": nonce,
               "access_token": token, **(extra or {})}
    signed = "".join(f"{n}:{headers[n]}\n" for n in headers.get("Signature-Headers", "").split(":") if n)
    sts = f"GET\n{hashlib.sha256(b'').hexdigest()}\n{signed}\n{path}"
    headers["sign"] = hmac.new(secret.encode(), f"{ACCESS_ID}{token}{t}{nonce}{sts}".encode(),
                               hashlib.sha256).hexdigest().upper()
    return requests.get(url + path, headers=headers, timeout=5).json()


# --- tokens and signatures -------------------------------------------------------------------------

def test_token_answer_has_tuyas_shape(cloud):
    body = signed_get(cloud[0].url, "/v1.0/token?grant_type=1")
    assert body["success"] is True and isinstance(body["t"], int)
    assert set(body["result"]) == {"access_token", "refresh_token", "expire_time", "uid"}
    assert body["result"]["expire_time"] == 7200


def test_signature_with_nonce_and_signed_headers_is_accepted(cloud):
    body = signed_get(cloud[0].url, "/v1.0/token?grant_type=1", nonce="5138cc3a9033d69856923fd07b491173",
                      extra={"Signature-Headers": "area_id:call_id", "area_id": "29a33e8796834b1efa6",
                             "call_id": "8afdb70ab2ed11eb85290242ac130003"})
    assert body["success"] is True


def test_wrong_secret_missing_client_and_stale_time_are_refused(cloud):
    url = cloud[0].url
    assert signed_get(url, "/v1.0/token?grant_type=1", secret="wrong")["code"] == 1004
    assert has(TuyaOpenAPI(url, ACCESS_ID, "wrong").connect(), success=False, code=1004, msg="sign invalid")
    assert requests.get(url + "/v1.0/token?grant_type=1", timeout=5).json()["code"] == 1005
    stale = int(time.time() * 1000) - 3600_000
    assert signed_get(url, "/v1.0/token?grant_type=1", t=stale)["code"] == 1013
    assert signed_get(url, "/v1.0/token?grant_type=2")["code"] == 1003


def test_tampered_body_breaks_the_signature(cloud, api):
    t = str(int(time.time() * 1000))
    body = json.dumps({"commands": [{"code": "charge_money", "value": 100}]})
    sts = f"POST\n{hashlib.sha256(body.encode()).hexdigest()}\n\n/v1.0/devices/seed1/commands"
    token = api.token_info.access_token
    sign = hmac.new(SECRET.encode(), f"{ACCESS_ID}{token}{t}{sts}".encode(), hashlib.sha256).hexdigest().upper()
    headers = {"client_id": ACCESS_ID, "t": t, "sign": sign, "access_token": token, "sign_method": "HMAC-SHA256",
               "content-type": "application/json"}
    tampered = body.replace("100", "900000")
    assert requests.post(cloud[0].url + "/v1.0/devices/seed1/commands", data=tampered, headers=headers,
                         timeout=5).json()["code"] == 1004
    assert requests.post(cloud[0].url + "/v1.0/devices/seed1/commands", data=body, headers=headers,
                         timeout=5).json()["success"] is True


def test_refresh_token_is_single_use_and_replaces_the_access_token(cloud, api):
    old_access, refresh = api.token_info.access_token, api.token_info.refresh_token
    api.token_info.access_token = ""  # token APIs are signed without it, as the client does
    first = api.get(f"/v1.0/token/{refresh}")
    second = api.get(f"/v1.0/token/{refresh}")
    assert first["success"] is True and first["result"]["access_token"] != old_access
    assert has(second, success=False, code=1012)
    api.token_info.access_token = old_access
    assert api.get("/v1.0/devices/seed1/status")["code"] == 1010  # replaced by the refresh


def test_expired_token_is_refused_with_1010(cloud, api):
    cloud[1].expire_tokens()
    raw = requests.get(cloud[0].url + "/v1.0/devices/seed1/status", timeout=5)
    assert raw.status_code == 200
    assert has(api.get("/v1.0/devices/seed1/status"), success=False, code=1010, msg="token invalid")
    assert api.get("/v1.0/devices/seed1/status")["success"] is True  # the client reconnected on 1010


def test_token_expiry_is_honoured():
    app = create_tuya_sandbox(access_id=ACCESS_ID, access_secret=SECRET, token_ttl_s=1)
    app.state.tuya.add_device("d1")
    with serve(app) as server:
        token = signed_get(server.url, "/v1.0/token?grant_type=1")["result"]["access_token"]
        assert signed_get(server.url, "/v1.0/devices/d1/status", token=token)["success"] is True
        time.sleep(1.1)
        assert signed_get(server.url, "/v1.0/devices/d1/status", token=token)["code"] == 1010
        assert signed_get(server.url, "/v1.0/devices/d1/status", token="never-issued")["code"] == 1011


# --- devices ----------------------------------------------------------------------------------------

def test_specifications_info_and_status_shapes(api):
    specs = api.get("/v1.0/devices/seed1/specifications")["result"]
    charge = next(f for f in specs["functions"] if f["code"] == "charge_money")
    assert charge["type"] == "Integer" and isinstance(charge["values"], str)
    assert json.loads(charge["values"]) == {"unit": "KES", "min": 1, "max": 9999999, "scale": 2, "step": 1}
    assert {s["code"] for s in specs["status"]} >= {"balance", "electric_total", "forward_energy_total"}
    std = api.get("/v1.0/iot-03/devices/std1/specification")["result"]
    assert {f["code"] for f in std["functions"]} == {"charge_energy", "clear_energy", "switch", "switch_prepayment"}
    assert api.get("/v1.0/devices/seed1")["result"]["online"] is True
    assert status(api, "seed1") == {"balance": 10000, "balance_energy": 400, "forward_energy_total": 0,
                                    "electric_total": 0, "goods_price": 2500, "unit_price": "25.00",
                                    "prepayment_switch": True}
    assert api.get("/v1.0/devices/nope/status")["code"] == 1106
    assert api.get("/v1.0/nothing/here")["code"] == 1108


def test_commands_are_validated(api, cloud):
    assert command(api, "seed1", "no_such_dp", 1)["code"] == 2008
    assert command(api, "seed1", "charge_money", "100")["code"] == 2008  # wrong type
    assert command(api, "seed1", "charge_money", True)["code"] == 2008
    assert command(api, "seed1", "charge_money", 10_000_000)["code"] == 1101  # above max
    assert command(api, "seed1", "charge_money", 0)["code"] == 1101  # below min
    assert command(api, "seed1", "balance", 5)["code"] == 2008  # a status DP is not a function
    assert command(api, "seed1", "unit_price", "abc")["code"] == 2008
    assert api.post("/v1.0/devices/seed1/commands", {"nope": 1})["code"] == 1109
    assert status(api, "seed1")["balance"] == 10000 and cloud[1].credit_log == []


def test_offline_device_refuses_commands_but_reports_last_status(api, cloud):
    cloud[1].set_fault("seed1", "offline")
    assert has(command(api, "seed1", "charge_money", 100), success=False, code=2001, msg="device is offline")
    assert api.get("/v1.0/devices/seed1")["result"]["online"] is False
    assert status(api, "seed1")["balance"] == 10000


def test_seed_meter_charge_consume_price_and_clear(api, cloud):
    sandbox = cloud[1]
    assert command(api, "seed1", "charge_money", 1999)["result"] is True
    after = status(api, "seed1")
    assert after["balance"] == 11999 and after["electric_total"] == 79  # 19.99 / 25 = 0.7996 → 0.79 kWh
    assert sandbox.consume("seed1", "2") == D("2")
    after = status(api, "seed1")
    assert after["balance"] == 6999 and after["forward_energy_total"] == 200 and after["electric_total"] == 79
    assert command(api, "seed1", "goods_price", 5000)["success"] and status(api, "seed1")["balance_energy"] == 139
    assert command(api, "seed1", "unit_price", "20.00")["success"] and status(api, "seed1")["goods_price"] == 2000
    assert sandbox.consume("seed1", "1000") == D("3.4995")  # the relay cuts at a zero balance
    assert command(api, "seed1", "clear_energy", True)["success"] and status(api, "seed1")["balance"] == 0
    assert command(api, "seed1", "prepayment_switch", False)["success"]
    assert status(api, "seed1")["prepayment_switch"] is False
    assert sandbox.total_credits("seed1") == D("19.99")


def test_standard_meter_charge_and_consumption(api, cloud):
    assert command(api, "std1", "charge_energy", 20)["success"]
    cloud[1].consume("std1", "0.3")
    after = status(api, "std1")
    assert after["balance_energy"] == 29 and after["forward_energy_total"] == 30  # 29.7 kWh shown floored
    assert command(api, "std1", "charge_energy", 5001)["code"] == 1101
    assert cloud[1].total_credits("std1") == D("20")


def test_background_consumption_rate(cloud):
    meter = cloud[1].add_device("bg1", "tuya-standard", balance="10", rate_kw="10")
    clock = [0.0]
    meter.clock, meter._last_tick = (lambda: clock[0]), 0.0
    meter.wall = lambda: EVENING_PEAK + clock[0]
    clock[0] = 360.0  # a mean load of 10 kW for 0.1 h, at 19:00 Nairobi time: 2.3 times the mean
    assert has(cloud[1].describe(meter)["status"], balance_energy=7, forward_energy_total=230)


EVENING_PEAK = datetime(2026, 11, 2, 16, 0, tzinfo=UTC).timestamp()  # 19:00 in Nairobi


def test_consumption_follows_the_hour_of_the_day_in_nairobi():
    """Low at night, a morning peak, the highest in the evening; a whole day uses the mean load x 24 h."""
    midnight = datetime(2026, 11, 1, 21, 0, tzinfo=UTC).timestamp()  # 00:00 in Nairobi
    rate = D("0.5")
    by_hour = [shaped_kwh(rate, midnight + h * 3600, midnight + (h + 1) * 3600) for h in range(24)]
    assert shaped_kwh(rate, midnight, midnight + 86_400) == sum(by_hour) == rate * 24
    night, morning, day, evening = max(by_hour[0:5]), max(by_hour[6:9]), max(by_hour[10:17]), max(by_hour[18:22])
    assert night < day < morning < evening and by_hour[19] == max(by_hour)
    assert min(by_hour) <= rate / 3 and max(by_hour) >= rate * 2
    assert nairobi_hour(EVENING_PEAK) == 19
    # Across an hour boundary each part is charged at its own hour's load.
    assert shaped_kwh(rate, EVENING_PEAK - 1800, EVENING_PEAK + 1800) == rate * (DAY_SHAPE[18] + DAY_SHAPE[19]) / 2


def test_a_sandbox_meter_runs_down_faster_in_the_evening_than_at_night(cloud):
    meter = cloud[1].add_device("shape1", "seed", balance="1000", price="25", rate_kw="0.5")
    clock, wall = [0.0], [datetime(2026, 11, 2, 0, 0, tzinfo=UTC).timestamp()]  # 03:00 Nairobi
    meter.clock, meter._last_tick, meter.wall = (lambda: clock[0]), 0.0, (lambda: wall[0])

    def spend_an_hour() -> D:
        before = meter.balance_kes
        clock[0] += 3600
        wall[0] += 3600
        meter.tick()
        return before - meter.balance_kes

    night = spend_an_hour()  # 03:00-04:00
    wall[0] += 15 * 3600  # to 19:00 (the sandbox was not asked meanwhile: no time passed for it)
    evening = spend_an_hour()  # 19:00-20:00
    assert night == D("0.5") * DAY_SHAPE[3] * 25 and evening == D("0.5") * DAY_SHAPE[19] * 25
    assert evening > 5 * night


# --- faults -----------------------------------------------------------------------------------------

def test_server_error_and_throttle_faults(api, cloud):
    cloud[1].set_fault("seed1", "server_error", n=2)
    raw = requests.get(cloud[0].url + "/v1.0/devices/seed1/status", timeout=5)
    assert raw.status_code == 200  # unauthenticated: refused before faults play
    for _ in range(2):
        with pytest.raises(AttributeError):  # the real client's own bug on non-2xx (response.body)
            api.get("/v1.0/devices/seed1/status")
    assert api.get("/v1.0/devices/seed1/status")["success"] is True
    cloud[1].set_fault("seed1", "throttle", n=1, code=1199)
    assert api.get("/v1.0/devices/seed1/status")["code"] == 1199
    assert api.get("/v1.0/devices/seed1/status")["success"] is True


def test_accept_not_apply_answers_success_and_changes_nothing(api, cloud):
    cloud[1].set_fault("seed1", "accept_not_apply")
    assert command(api, "seed1", "charge_money", 50000)["result"] is True
    assert status(api, "seed1")["balance"] == 10000 and cloud[1].total_credits("seed1") == 0


def test_apply_lose_answer_applies_once_and_drops_the_answer(api, cloud):
    cloud[1].set_fault("seed1", "apply_lose_answer", mode="drop")
    with pytest.raises(requests.exceptions.RequestException):
        command(api, "seed1", "charge_money", 50000)
    assert status(api, "seed1")["balance"] == 60000 and cloud[1].total_credits("seed1") == D("500")
    cloud[1].set_fault("seed1", "apply_lose_answer", seconds=0.5)
    started = time.monotonic()
    assert command(api, "seed1", "charge_money", 100)["result"] is True
    assert time.monotonic() - started >= 0.5 and cloud[1].total_credits("seed1") == D("501")


def test_control_routes(cloud):
    url = cloud[0].url
    created = httpx.post(url + "/sandbox/devices", json={"device_id": "new1", "profile": "tuya-standard", "balance": 5})
    assert created.status_code == 201 and created.json()["status"]["balance_energy"] == 5
    assert {d["device_id"] for d in httpx.get(url + "/sandbox/devices").json()["devices"]} == {"seed1", "std1", "new1"}
    fault = httpx.post(url + "/sandbox/devices/new1/fault", json={"kind": "throttle", "n": 2})
    assert fault.json()["faults"] == ["throttle"]
    assert httpx.post(url + "/sandbox/devices/new1/fault", json={"kind": "offline"}).json()["online"] is False
    assert httpx.post(url + "/sandbox/devices/new1/fault", json={"kind": "clear"}).json()["faults"] == []
    assert httpx.post(url + "/sandbox/devices/new1/fault", json={"kind": "meteor"}).status_code == 400
    assert httpx.post(url + "/sandbox/devices/new1/consume", json={"kwh": "2"}).json() == {"consumed_kwh": "2"}
    assert httpx.post(url + "/sandbox/devices/nope/consume", json={"kwh": "2"}).status_code == 404
    assert httpx.post(url + "/sandbox/devices", json={"device_id": "x", "profile": "gas"}).status_code == 400


# --- a slow meter's reports, the shadow properties API, project faults ---------------------------------

def shadow(api: TuyaOpenAPI, device_id: str, codes: str | None = None) -> dict:
    response = api.get(f"/v2.0/cloud/thing/{device_id}/shadow/properties", {"codes": codes} if codes else None)
    assert response["success"], response
    return {item["code"]: item for item in response["result"]["properties"]}


def test_shadow_properties_give_each_dp_its_report_time(api):
    props = shadow(api, "seed1", "balance,electric_total")
    assert set(props) == {"balance", "electric_total"}
    assert has(props["balance"], value=10000) and isinstance(props["balance"]["dp_id"], int)
    assert abs(props["balance"]["time"] / 1000 - time.time()) < 5


def test_late_reporting_dps_keep_their_old_value_and_time_until_their_next_report(api, cloud):
    meter = cloud[1].meter("seed1")
    clock = [1_000_000.0]
    meter.wall = lambda: clock[0]
    cloud[1].set_fault("seed1", "late_report", seconds=60, codes=["electric_total"])
    assert command(api, "seed1", "charge_money", 2500)["success"]
    clock[0] += 30
    now = shadow(api, "seed1")
    assert now["balance"]["value"] == 12500 and now["balance"]["time"] == 1_000_030_000  # reports at once
    assert now["electric_total"]["value"] == 0 and now["electric_total"]["time"] == 1_000_000_000  # not yet
    assert status(api, "seed1")["electric_total"] == 0  # the status is the same cache
    clock[0] += 45
    later = shadow(api, "seed1", "electric_total")["electric_total"]
    assert later["value"] == 100 and later["time"] == 1_000_060_000  # at its scheduled report


@pytest.mark.parametrize("code", [28841002, 28841004, 28841101, 28841105])
def test_project_errors_answer_200_with_success_false(api, cloud, code):
    cloud[1].set_project_fault("error", code=code)
    response = api.get("/v1.0/devices/seed1/status")
    assert response["success"] is False and response["code"] == code and "No permissions" in response["msg"]
    assert TuyaOpenAPI(cloud[0].url, ACCESS_ID, SECRET).connect()["success"]  # the token is still issued
    cloud[1].set_project_fault("clear")
    assert api.get("/v1.0/devices/seed1/status")["success"]


def test_scripted_device_error_and_clock_skew(api, cloud):
    cloud[1].set_fault("seed1", "error", code=28841105)
    assert api.get("/v1.0/devices/seed1/status")["code"] == 28841105
    assert api.get("/v1.0/devices/seed1/status")["success"]  # once
    cloud[1].set_project_fault("clock_skew", seconds=900)
    assert api.get("/v1.0/devices/seed1/status")["code"] == 1013
