"""Simulated Tuya prepaid meters for the Tuya cloud sandbox: specifications, status, commands, faults.

Deliberately independent of core/ (stdlib only): a stand-in that shared our scaling code could not
catch our scaling bugs. Values are tracked exactly (Decimal) and reported as Tuya does, as raw
integers floored to each DP's scale.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

FAULT_KINDS = ("offline", "online", "slow", "server_error", "throttle", "accept_not_apply", "apply_lose_answer",
               "late_report", "error")


# How a Kenyan household's load moves through the day, by Nairobi hour (UTC+3, no daylight saving): little
# at night (a fridge, a security light), a morning peak (water heating, breakfast, ironing before work), a
# quiet working day, and the day's highest peak in the evening (cooking, lights, TV). The 24 factors average
# 1, so a meter's `rate_kw` stays its mean load over a day.
DAY_SHAPE = tuple(Decimal(f) for f in (
    "0.35", "0.3", "0.3", "0.3", "0.35", "0.6",  # 00-05
    "1.4", "1.8", "1.5", "0.9", "0.75", "0.75",  # 06-11
    "0.8", "0.75", "0.7", "0.7", "0.8", "1.1",  # 12-17
    "1.9", "2.3", "2.2", "1.8", "1.1", "0.55",  # 18-23
))
NAIROBI_OFFSET_S = 3 * 3600


def nairobi_hour(wall_s: float) -> int:
    return int((wall_s + NAIROBI_OFFSET_S) // 3600) % 24


def shaped_kwh(rate_kw: Decimal, start_s: float, end_s: float) -> Decimal:
    """kWh used between two wall-clock times at a mean load of `rate_kw`, shaped by the hour of the day."""
    total, cursor = Decimal(0), start_s
    while cursor < end_s:
        boundary = min(end_s, (cursor // 3600 + 1) * 3600)
        hours = Decimal(str(round(boundary - cursor, 6))) / 3600
        total += rate_kw * DAY_SHAPE[nairobi_hour(cursor)] * hours
        cursor = boundary
    return total


class CommandError(Exception):
    """A Tuya business error: answered as {"success": false, "code": code, "msg": msg}."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg = code, msg


def _integer(unit: str, lo: int, hi: int, scale: int, step: int = 1) -> str:
    # Tuya sends `values` as compact JSON text, not as an object.
    return json.dumps({"unit": unit, "min": lo, "max": hi, "scale": scale, "step": step}, separators=(",", ":"))


def _dp(code: str, dp_type: str, values: str = "{}") -> dict[str, str]:
    return {"code": code, "type": dp_type, "values": values}


def _floor(value: Decimal, scale: int) -> int:
    return int(value.scaleb(scale).to_integral_value(rounding=ROUND_FLOOR))


@dataclass
class Fault:
    kind: str
    remaining: int | None = 1  # None: until cleared
    seconds: float = 0.0
    code: int = 1110
    mode: str = "sleep"  # apply_lose_answer: "sleep" past the client's timeout, or "drop" the connection
    msg: str = ""  # error: the message sent with `code`


@dataclass
class SandboxMeter:
    """Common behaviour; subclasses define the DPs and what a command does."""

    device_id: str
    name: str
    online: bool = True
    rate_kw: Decimal = Decimal(0)  # mean background load over a day, shaped by the hour (DAY_SHAPE), applied lazily
    clock: Callable[[], float] = time.monotonic
    faults: dict[str, Fault] = field(default_factory=dict)
    prepayment: bool = True
    consumed_kwh: Decimal = Decimal(0)
    category: str = "zndb"
    profile: str = ""
    functions: list[dict[str, str]] = field(default_factory=list)
    status_specs: list[dict[str, str]] = field(default_factory=list)
    # How the device reports to the cloud: DP code (or "*") -> seconds between reports. A DP not
    # listed reports every change at once. The cloud's status is what was last reported, not the truth.
    report_every: dict[str, float] = field(default_factory=dict)
    wall: Callable[[], float] = time.time  # report times are wall-clock, as Tuya's `time` (ms)
    _reported: dict[str, tuple[Any, float]] = field(default_factory=dict, init=False, repr=False)
    _last_tick: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._last_tick = self.clock()

    # --- faults ---
    def take_fault(self, kind: str) -> Fault | None:
        fault = self.faults.get(kind)
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self.faults[kind]
        return fault

    # --- consumption ---
    def tick(self) -> None:
        """Consume what the load used since the last access: the elapsed time from `clock`, placed on the
        day by the wall clock (its Nairobi hours set the load)."""
        now = self.clock()
        elapsed = now - self._last_tick
        self._last_tick = now
        if self.rate_kw > 0 and elapsed > 0:
            end = self.wall()
            self.consume(shaped_kwh(self.rate_kw, end - elapsed, end).quantize(Decimal("0.000001")))

    def consume(self, kwh: Decimal) -> Decimal:
        """Use up to `kwh`; with prepayment on, the relay cuts at a zero balance. Returns kWh used."""
        used = kwh if not self.prepayment else min(kwh, self.available_kwh())
        used = max(used, Decimal(0))
        self._deduct(used)
        self.consumed_kwh += used
        return used

    def available_kwh(self) -> Decimal:
        raise NotImplementedError

    def _deduct(self, kwh: Decimal) -> None:
        raise NotImplementedError

    # --- cloud views ---
    def specifications(self) -> dict[str, Any]:
        return {"category": self.category, "functions": [dict(f) for f in self.functions],
                "status": [dict(s) for s in self.status_specs]}

    def status(self) -> list[dict[str, Any]]:
        """What the cloud shows: each DP's last reported value (a cache, possibly behind the device)."""
        reported = self.reported()
        return [{"code": code, "value": value} for code, (value, _) in reported.items()]

    def reported(self) -> dict[str, tuple[Any, float]]:
        """DP code -> (value, report time in wall seconds), as the cloud last heard it."""
        values, now = self.status_values(), self.wall()
        for spec in self.status_specs:
            code = spec["code"]
            if code not in values:
                continue
            period = self.report_every.get(code, self.report_every.get("*", 0.0))
            last = self._reported.get(code)
            if period <= 0 or last is None:
                self._reported[code] = (values[code], now)
            elif now - last[1] >= period:
                # Reports go out on the device's own schedule: the latest slot that has passed.
                slot = last[1] + period * int((now - last[1]) // period)
                self._reported[code] = (values[code], slot)
        return {code: self._reported[code] for code in (s["code"] for s in self.status_specs)
                if code in self._reported}

    def shadow_properties(self, codes: list[str] | None = None) -> list[dict[str, Any]]:
        """Tuya's GET /v2.0/cloud/thing/{id}/shadow/properties: each DP with its report `time` (ms)."""
        reported = self.reported()
        ids = {s["code"]: n for n, s in enumerate(self.status_specs, start=1)}
        return [{"code": code, "custom_name": "", "dp_id": ids[code], "time": int(at * 1000), "value": value}
                for code, (value, at) in reported.items() if not codes or code in codes]

    def report_late(self, seconds: float, codes: list[str] | None = None) -> None:
        """From now on the listed DPs (all when None) report every `seconds` (0: at once again)."""
        self.reported()  # what was reported so far stays as it was
        for code in codes or ["*"]:
            self.report_every[code] = float(seconds)

    def status_values(self) -> dict[str, Any]:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {"id": self.device_id, "name": self.name, "online": self.online, "category": self.category,
                "product_name": f"Sandbox {self.profile} meter", "product_id": f"sandbox-{self.profile}",
                "local_key": "0123456789abcdef", "time_zone": "+03:00", "status": self.status()}

    # --- commands ---
    def validate(self, commands: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        """Check every command before applying any, as one request is applied whole or not at all."""
        specs = {f["code"]: f for f in self.functions}
        return [(c["code"], _check_value(specs.get(c["code"]), c["code"], c["value"])) for c in commands]

    def apply(self, code: str, value: Any) -> dict[str, Any] | None:
        """Apply one validated command; return a credit record when it credits the meter."""
        raise NotImplementedError


def _check_value(spec: dict[str, str] | None, code: str, value: Any) -> Any:
    if spec is None:
        raise CommandError(2008, "command or value not support")
    values = json.loads(spec["values"] or "{}")
    kind = spec["type"]
    if kind == "Boolean" and isinstance(value, bool):
        return value
    if kind == "Integer" and isinstance(value, int) and not isinstance(value, bool):
        if not values["min"] <= value <= values["max"] or (value - values["min"]) % values.get("step", 1):
            raise CommandError(1101, "params range invalid")
        return value
    if kind == "Enum" and value in values.get("range", []):
        return value
    if kind == "String" and isinstance(value, str):
        if len(value) > values.get("maxlen", 255):
            raise CommandError(1101, "params range invalid")
        return value
    raise CommandError(2008, "command or value not support")


_PRICE_TEXT = re.compile(r"^\d{1,6}(\.\d{1,2})?$")


@dataclass
class SeedMeter(SandboxMeter):
    """The seed's money meter: charge_money adds KES, the meter converts at its goods_price and
    counts energy bought (floored to 0.01 kWh) in electric_total; consumption lowers the balance."""

    balance_kes: Decimal = Decimal(0)
    price: Decimal = Decimal("25")
    purchased_kwh: Decimal = Decimal(0)
    tokens: list[str] = field(default_factory=list)
    profile: str = "seed"
    functions: list[dict[str, str]] = field(default_factory=lambda: [
        _dp("charge_money", "Integer", _integer("KES", 1, 9999999, 2)),
        _dp("charge_token", "String", '{"maxlen":20}'),
        _dp("goods_price", "Integer", _integer("KES", 1, 100000, 2)),
        _dp("unit_price", "String", '{"maxlen":9}'),
        _dp("clear_energy", "Boolean"), _dp("prepayment_switch", "Boolean")])
    status_specs: list[dict[str, str]] = field(default_factory=lambda: [
        _dp("balance", "Integer", _integer("KES", 0, 999999999, 2)),
        _dp("balance_energy", "Integer", _integer("kWh", 0, 99999999, 2)),
        _dp("forward_energy_total", "Integer", _integer("kWh", 0, 99999999, 2)),
        _dp("electric_total", "Integer", _integer("kWh", 0, 99999999, 2)),
        _dp("goods_price", "Integer", _integer("KES", 1, 100000, 2)),
        _dp("unit_price", "String", '{"maxlen":9}'),
        _dp("prepayment_switch", "Boolean")])

    def available_kwh(self) -> Decimal:
        return self.balance_kes / self.price

    def _deduct(self, kwh: Decimal) -> None:
        self.balance_kes -= kwh * self.price

    def status_values(self) -> dict[str, Any]:
        return {"balance": _floor(self.balance_kes, 2), "balance_energy": _floor(self.available_kwh(), 2),
                "forward_energy_total": _floor(self.consumed_kwh, 2),
                "electric_total": _floor(self.purchased_kwh, 2), "goods_price": _floor(self.price, 2),
                "unit_price": f"{self.price:.2f}", "prepayment_switch": self.prepayment}

    def validate(self, commands: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        checked = super().validate(commands)
        for code, value in checked:
            if code == "unit_price" and not (_PRICE_TEXT.match(value) and Decimal(value) > 0):
                raise CommandError(2008, "command or value not support")
        return checked

    def apply(self, code: str, value: Any) -> dict[str, Any] | None:
        if code == "charge_money":
            kes = Decimal(value).scaleb(-2)
            self.balance_kes += kes
            self.purchased_kwh += Decimal(_floor(kes / self.price, 2)).scaleb(-2)
            return {"code": code, "raw": value, "value": kes, "unit": "KES"}
        if code == "charge_token":
            self.tokens.append(value)  # STS token decoding is vendor-specific: recorded, not credited
        elif code in ("goods_price", "unit_price"):
            self.price = Decimal(value).scaleb(-2) if code == "goods_price" else Decimal(value)
        elif code == "clear_energy" and value:
            self.balance_kes = Decimal(0)
        elif code == "prepayment_switch":
            self.prepayment = value
        return None


@dataclass
class StandardMeter(SandboxMeter):
    """Tuya's standard zndb set: charge_energy adds whole kWh; balance_energy is shown in whole kWh
    (floored), forward_energy_total in 0.01 kWh. There is no purchase counter."""

    balance_kwh: Decimal = Decimal(0)
    relay: bool = True
    last_charge: int = 0
    profile: str = "tuya-standard"
    functions: list[dict[str, str]] = field(default_factory=lambda: [
        _dp("charge_energy", "Integer", _integer("kW·h", 0, 5000, 0)),
        _dp("clear_energy", "Boolean"), _dp("switch", "Boolean"), _dp("switch_prepayment", "Boolean")])
    status_specs: list[dict[str, str]] = field(default_factory=lambda: [
        _dp("balance_energy", "Integer", _integer("kW·h", 0, 5000, 0)),
        _dp("charge_energy", "Integer", _integer("kW·h", 0, 5000, 0)),
        _dp("forward_energy_total", "Integer", _integer("kW·h", 0, 99999999, 2)),
        _dp("switch", "Boolean"), _dp("switch_prepayment", "Boolean")])

    def available_kwh(self) -> Decimal:
        return self.balance_kwh if self.relay else Decimal(0)

    def _deduct(self, kwh: Decimal) -> None:
        self.balance_kwh -= kwh

    def status_values(self) -> dict[str, Any]:
        return {"balance_energy": _floor(self.balance_kwh, 0), "charge_energy": self.last_charge,
                "forward_energy_total": _floor(self.consumed_kwh, 2), "switch": self.relay,
                "switch_prepayment": self.prepayment}

    def apply(self, code: str, value: Any) -> dict[str, Any] | None:
        if code == "charge_energy":
            self.balance_kwh += value
            self.last_charge = value
            return {"code": code, "raw": value, "value": Decimal(value), "unit": "kWh"}
        if code == "clear_energy" and value:
            self.balance_kwh = Decimal(0)
        elif code == "switch":
            self.relay = value
        elif code == "switch_prepayment":
            self.prepayment = value
        return None


def make_meter(device_id: str, profile: str, *, name: str | None, online: bool, balance: Decimal,
               price: Decimal, rate_kw: Decimal) -> SandboxMeter:
    """`balance` is KES for a seed meter and kWh for a tuya-standard one (it has no money DPs)."""
    label = name or f"Meter {device_id[-4:]}"
    if profile == "seed":
        return SeedMeter(device_id=device_id, name=label, online=online, rate_kw=rate_kw,
                         balance_kes=balance, price=price)
    if profile == "tuya-standard":
        return StandardMeter(device_id=device_id, name=label, online=online, rate_kw=rate_kw, balance_kwh=balance)
    raise ValueError(f"unknown sandbox meter profile {profile!r}")


class MeterFleet:
    """The sandbox's meters, their faults and every credit applied to them."""

    def __init__(self) -> None:
        self.devices: dict[str, SandboxMeter] = {}
        self.credit_log: list[dict[str, Any]] = []

    def add_device(self, device_id: str, profile: str = "seed", *, online: bool = True,
                   balance: Decimal | int | str = 0, price: Decimal | int | str = "25",
                   name: str | None = None, rate_kw: Decimal | int | str = 0) -> SandboxMeter:
        meter = make_meter(device_id, profile, name=name, online=online, balance=Decimal(str(balance)),
                           price=Decimal(str(price)), rate_kw=Decimal(str(rate_kw)))
        self.devices[device_id] = meter
        return meter

    def meter(self, device_id: str) -> SandboxMeter:
        if device_id not in self.devices:
            raise KeyError(device_id)
        return self.devices[device_id]

    def set_fault(self, device_id: str, kind: str, **opts: Any) -> None:
        """offline/online toggle the device; late_report: the DPs in `codes` (default all) report only
        every `seconds`; others: n (times, None = until cleared), seconds, code (throttle:
        1110/1111/1199; error: any Tuya code, with msg), mode (apply_lose_answer: "sleep" or "drop")."""
        meter = self.meter(device_id)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind in ("offline", "online"):
            meter.online = kind == "online"
            return
        if kind == "late_report":
            codes = opts.get("codes")
            if codes is not None and (not isinstance(codes, list) or not all(isinstance(c, str) for c in codes)):
                raise ValueError("codes must be a list of DP codes")
            meter.report_late(float(opts.get("seconds", 30.0)), codes)
            return
        defaults = {"slow": 5.0, "apply_lose_answer": 30.0}
        meter.faults[kind] = Fault(kind=kind, remaining=opts.get("n", 1), code=int(opts.get("code", 1110)),
                                   seconds=float(opts.get("seconds", defaults.get(kind, 0.0))),
                                   mode=str(opts.get("mode", "sleep")), msg=str(opts.get("msg", "")))

    def clear_faults(self, device_id: str) -> None:
        meter = self.meter(device_id)
        meter.faults.clear()
        meter.online = True
        meter.report_late(0)
        meter.report_every.clear()

    def consume(self, device_id: str, kwh: Decimal | int | str) -> Decimal:
        meter = self.meter(device_id)
        meter.tick()
        return meter.consume(Decimal(str(kwh)))

    def total_credits(self, device_id: str) -> Decimal:
        """Sum of applied charges (KES for seed meters, kWh for tuya-standard ones)."""
        return sum((r["value"] for r in self.credit_log if r["device_id"] == device_id), Decimal(0))

    def describe(self, meter: SandboxMeter) -> dict[str, Any]:
        meter.tick()
        return {"device_id": meter.device_id, "name": meter.name, "profile": meter.profile,
                "online": meter.online, "status": meter.status_values(),
                "faults": sorted(meter.faults), "report_every": dict(meter.report_every),
                "total_credits": str(self.total_credits(meter.device_id))}

    def record_credit(self, meter: SandboxMeter, record: dict[str, Any]) -> None:
        self.credit_log.append({"device_id": meter.device_id, "at": time.time(), **record})
