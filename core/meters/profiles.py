"""Meter profiles (which Tuya DP codes a meter model speaks) and exact value scaling.

Pure: no I/O except `load_profiles`, which reads one config file. Tuya describes every Integer DP by
`scale`, `step`, `min` and `max` in *raw* units; the human value is `raw / 10**scale`. All arithmetic
here is Decimal/Fraction so that KES 19.99 at scale 2 is 1999, never 1998 (`int(19.99*100)`).

Planning a charge and checking it landed (the counter verdict) is core/topups/decision.py.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from core.shared.errors import InvalidInput

_TYPE_ALIASES = {"integer": "Integer", "value": "Integer", "boolean": "Boolean", "bool": "Boolean",
                 "enum": "Enum", "string": "String", "json": "Json", "raw": "Raw", "bitmap": "Bitmap"}


@dataclass(frozen=True)
class DpSpec:
    """One data point as the Tuya specification describes it. min/max/step are raw integers."""

    code: str
    type: str
    scale: int = 0
    step: int = 1
    min: int = 0
    max: int = 0
    unit: str = ""
    range: tuple[str, ...] = ()
    maxlen: int | None = None
    writable: bool = True  # listed under `functions` (commands accepted)
    readable: bool = True  # listed under `status` (reported)

    @property
    def quantum(self) -> Decimal:
        """The smallest human increment the DP can express (step × 10^-scale)."""
        return Decimal(self.step).scaleb(-self.scale)

    @classmethod
    def from_tuya(cls, entry: Mapping[str, Any], *, writable: bool = True, readable: bool = True) -> DpSpec:
        code = str(entry.get("code") or "")
        if not code:
            raise InvalidInput("specification entry without a code")
        dp_type = _TYPE_ALIASES.get(str(entry.get("type", "")).lower(), str(entry.get("type", "")))
        values = _parse_values(code, entry.get("values"))
        try:
            return cls(code=code, type=dp_type, scale=int(values.get("scale", 0)),
                       step=int(values.get("step", 1)) or 1, min=int(values.get("min", 0)),
                       max=int(values.get("max", 0)), unit=str(values.get("unit", "")),
                       range=tuple(str(v) for v in values.get("range", ())),
                       maxlen=int(values["maxlen"]) if "maxlen" in values else None,
                       writable=writable, readable=readable)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"DP {code}: malformed values {values!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, for storing with the meter (DESIGN §5)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DpSpec:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["range"] = tuple(kwargs.get("range", ()))
        return cls(**kwargs)


def _parse_values(code: str, values: Any) -> dict[str, Any]:
    # Tuya sends `values` as a JSON *string*; accept an already-decoded dict too.
    if values in (None, ""):
        return {}
    if isinstance(values, Mapping):
        return dict(values)
    try:
        parsed = json.loads(values)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"DP {code}: values is not JSON: {values!r}") from exc
    return parsed if isinstance(parsed, dict) else {}


def parse_specifications(result: Mapping[str, Any]) -> dict[str, DpSpec]:
    """`result` of GET /v1.0/devices/{id}/specifications → specs by code (functions ∪ status)."""
    functions = {e.get("code"): e for e in result.get("functions") or []}
    status = {e.get("code"): e for e in result.get("status") or []}
    specs: dict[str, DpSpec] = {}
    for code in [*functions, *(c for c in status if c not in functions)]:
        entry = functions.get(code) or status[code]
        specs[code] = DpSpec.from_tuya(entry, writable=code in functions, readable=code in status)
    return specs


def as_spec_map(specs: Mapping[str, DpSpec] | Iterable[DpSpec]) -> dict[str, DpSpec]:
    return dict(specs) if isinstance(specs, Mapping) else {s.code: s for s in specs}


# --- exact scaling ------------------------------------------------------------------------------

def to_decimal(value: Any, what: str = "value") -> Decimal:
    """Decimal from Decimal/int/str. Floats are refused: they cannot hold 19.99 exactly."""
    if isinstance(value, (bool, float)):
        raise TypeError(f"{what} must be Decimal, int or str, not {type(value).__name__}")
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidInput(f"{what} {value!r} is not a number") from exc
    if not result.is_finite():
        raise InvalidInput(f"{what} {value!r} is not a finite number")
    return result


def _require_integer(spec: DpSpec) -> None:
    if spec.type != "Integer":
        raise InvalidInput(f"DP {spec.code} is {spec.type}, not Integer")


def to_raw(human: Decimal | int | str, spec: DpSpec) -> int:
    """Human value → raw DP integer: exact, within min..max and on the step, else InvalidInput."""
    _require_integer(spec)
    value = to_decimal(human, spec.code)
    scaled = value.scaleb(spec.scale)  # exact: only moves the exponent
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"{value}{_unit(spec)} has more than {spec.scale} decimal places for {spec.code}")
    raw = int(scaled)
    if not spec.min <= raw <= spec.max:
        low, high = from_raw(spec.min, spec), from_raw(spec.max, spec)
        raise InvalidInput(f"{value} is outside {low}..{high}{_unit(spec)} for {spec.code}")
    if (raw - spec.min) % spec.step:
        raise InvalidInput(f"{value} is not a multiple of {spec.quantum}{_unit(spec)} for {spec.code}")
    return raw


def _unit(spec: DpSpec) -> str:
    return f" {spec.unit}" if spec.unit else ""


def from_raw(raw: Any, spec: DpSpec) -> Decimal:
    """Raw DP integer → exact human Decimal."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise InvalidInput(f"DP {spec.code} reported {raw!r}, not an integer")
    try:
        return Decimal(int(raw)).scaleb(-spec.scale)
    except ValueError as exc:
        raise InvalidInput(f"DP {spec.code} reported {raw!r}, not an integer") from exc


def energy_for_money(amount: Decimal | int | str, price_per_kwh: Decimal | int | str,
                     spec: DpSpec) -> tuple[Decimal, int, Decimal]:
    """kWh that `amount` KES buys, rounded DOWN to the DP step: (kwh, raw, remainder_kes).

    The remainder is what the rounding did not convert; it is reported so it can be recorded,
    never silently lost. Fraction keeps the division exact (no 28-digit context rounding).
    """
    _require_integer(spec)
    money, price = to_decimal(amount, "amount"), to_decimal(price_per_kwh, "price")
    if price <= 0:
        raise InvalidInput(f"price per kWh must be greater than 0, got {price}")
    if money <= 0:
        raise InvalidInput(f"amount must be greater than 0, got {money}")
    steps = Fraction(money) * 10 ** spec.scale / (Fraction(price) * spec.step)
    raw = (steps.numerator // steps.denominator) * spec.step  # floor: never credit unpaid energy
    if raw > spec.max:
        raise InvalidInput(f"KES {money} buys more than {from_raw(spec.max, spec)}{_unit(spec)} allowed by {spec.code}")
    if raw <= 0 or raw < spec.min:
        raise InvalidInput(f"KES {money} at {price}/kWh buys less than {spec.quantum}{_unit(spec)} ({spec.code})")
    kwh = from_raw(raw, spec)
    return kwh, raw, money - kwh * price


# --- profiles -------------------------------------------------------------------------------------

WRITE_OPS = ("add_money", "add_energy", "set_price", "prepayment_switch", "clear")
READ_OPS = ("read_money_balance", "read_energy_balance", "read_purchase_total", "read_consumption_total")
_EXPECTED_TYPE = {"add_money": "Integer", "add_energy": "Integer", "set_price": "Integer",
                  "prepayment_switch": "Boolean", "clear": "Boolean", "read_money_balance": "Integer",
                  "read_energy_balance": "Integer", "read_purchase_total": "Integer",
                  "read_consumption_total": "Integer"}


@dataclass(frozen=True)
class MeterProfile:
    """Our operations → the DP codes of one meter model. Any operation may be None (unsupported).

    `purchase_total_unit` says what `read_purchase_total` counts: "kwh" (energy bought) or "money".
    A profile must be able to charge (add_money or add_energy) and to verify a charge
    (read_purchase_total, or read_energy_balance + read_consumption_total): without a way to
    verify, an unknown outcome could only be resent blindly, which DESIGN §5 forbids.
    """

    name: str
    add_money: str | None = None
    add_energy: str | None = None
    read_money_balance: str | None = None
    read_energy_balance: str | None = None
    read_purchase_total: str | None = None
    read_consumption_total: str | None = None
    set_price: str | None = None
    prepayment_switch: str | None = None
    clear: str | None = None
    purchase_total_unit: str = "kwh"

    def __post_init__(self) -> None:
        if not (self.add_money or self.add_energy):
            raise InvalidInput(f"profile {self.name}: needs add_money or add_energy")
        if not (self.read_purchase_total or (self.read_energy_balance and self.read_consumption_total)):
            raise InvalidInput(f"profile {self.name}: needs read_purchase_total, or read_energy_balance "
                               "and read_consumption_total, to verify a charge exactly once")
        if self.purchase_total_unit not in ("kwh", "money"):
            raise InvalidInput(f"profile {self.name}: purchase_total_unit must be 'kwh' or 'money'")

    def operations(self) -> dict[str, str]:
        """op name → DP code, for the operations this profile supports."""
        return {op: code for op in (*WRITE_OPS, *READ_OPS) if (code := getattr(self, op))}


BUILTIN_PROFILES: dict[str, MeterProfile] = {
    # The seed's meter charges money; the meter converts at its own goods_price and counts the
    # energy bought in electric_total. charge_token carries a vendor (STS-style) token string, not
    # an amount, so it is no add_energy: LipaMeter cannot mint tokens.
    "seed": MeterProfile(
        name="seed", add_money="charge_money", read_money_balance="balance",
        read_energy_balance="balance_energy", read_purchase_total="electric_total",
        read_consumption_total="forward_energy_total", set_price="goods_price",
        prepayment_switch="prepayment_switch", clear="clear_energy"),
    # Tuya's standard zndb instruction set: energy only, no purchase counter (see module doc).
    "tuya-standard": MeterProfile(
        name="tuya-standard", add_energy="charge_energy", read_energy_balance="balance_energy",
        read_consumption_total="forward_energy_total", prepayment_switch="switch_prepayment",
        clear="clear_energy"),
}


def load_profiles(path: str | Path, base: Mapping[str, MeterProfile] | None = None) -> dict[str, MeterProfile]:
    """Profiles from a TOML or JSON file, merged over `base` (default: the built-ins).

    Layout: `[profiles.<name>]` tables (or top-level tables) with operation = "dp_code" entries;
    `extends = "<profile>"` starts from another profile; "" unsets an inherited operation.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read meter profiles from {path}: {exc}") from exc
    entries = data.get("profiles", data) if isinstance(data, Mapping) else None
    if not isinstance(entries, Mapping):
        raise InvalidInput(f"{path}: expected a table of profiles")
    profiles = dict(BUILTIN_PROFILES if base is None else base)
    for name, entry in entries.items():
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"profile {name}: expected a table of operation = code")
        profiles[name] = _profile_from_entry(name, entry, profiles)
    return profiles


def _profile_from_entry(name: str, entry: Mapping[str, Any], known: Mapping[str, MeterProfile]) -> MeterProfile:
    allowed = {f.name for f in fields(MeterProfile)} - {"name"}
    unknown = set(entry) - allowed - {"extends"}
    if unknown:
        raise InvalidInput(f"profile {name}: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {k: None if v in (None, "") else str(v) for k, v in entry.items() if k != "extends"}
    parent_name = entry.get("extends")
    if parent_name is not None and parent_name not in known:
        raise InvalidInput(f"profile {name}: extends unknown profile {parent_name!r}")
    if parent_name is not None:
        return replace(known[parent_name], name=name, **values)
    return MeterProfile(name=name, **values)


def missing_codes(profile: MeterProfile, specs: Mapping[str, DpSpec] | Iterable[DpSpec]) -> list[str]:
    """DP codes the profile needs that the device lacks (or cannot write, for write operations)."""
    spec_map = as_spec_map(specs)
    missing: list[str] = []
    for op, code in profile.operations().items():
        spec = spec_map.get(code)
        if (spec is None or (op in WRITE_OPS and not spec.writable)) and code not in missing:
            missing.append(code)
    return missing


def profile_problems(profile: MeterProfile, specs: Mapping[str, DpSpec] | Iterable[DpSpec]) -> list[str]:
    """Readable reasons to refuse a device for this profile (missing codes, wrong DP types)."""
    spec_map = as_spec_map(specs)
    problems = [f"missing DP {code}" for code in missing_codes(profile, spec_map)]
    for op, code in profile.operations().items():
        spec = spec_map.get(code)
        if spec is not None and spec.type != _EXPECTED_TYPE[op]:
            problems.append(f"DP {code} ({op}) is {spec.type}, expected {_EXPECTED_TYPE[op]}")
    return problems
