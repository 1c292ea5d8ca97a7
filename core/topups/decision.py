"""Reading a meter and planning one charge so that it can be verified exactly once.

Exactly-once verification (DESIGN §5) is carried by `ChargePlan.check` (a `CounterCheck`): a
purchase counter that only a charge moves (`seed`: `electric_total`), or, for profiles without one
(`tuya-standard`), the sum balance_energy + forward_energy_total, which a charge raises by the
credited kWh and consumption leaves unchanged (up to the DPs' display rounding). See `plan_charge`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from core.meters.profiles import DpSpec, MeterProfile, as_spec_map, energy_for_money, from_raw, to_decimal, to_raw
from core.shared.errors import InvalidInput

# --- reading a meter and planning a charge ----------------------------------------------------------

@dataclass(frozen=True)
class MeterReading:
    """One status read in human units; None where the profile or the status lacks the DP."""

    money_balance: Decimal | None
    energy_balance: Decimal | None
    purchase_total: Decimal | None
    consumption_total: Decimal | None
    price: Decimal | None
    prepayment: bool | None


def read_meter(profile: MeterProfile, specs: Mapping[str, DpSpec] | Iterable[DpSpec],
               status: Mapping[str, Any]) -> MeterReading:
    spec_map = as_spec_map(specs)

    def number(code: str | None) -> Decimal | None:
        if not code or code not in status or code not in spec_map:
            return None
        return from_raw(status[code], spec_map[code])

    switch = status.get(profile.prepayment_switch) if profile.prepayment_switch else None
    return MeterReading(
        money_balance=number(profile.read_money_balance), energy_balance=number(profile.read_energy_balance),
        purchase_total=number(profile.read_purchase_total),
        consumption_total=number(profile.read_consumption_total), price=number(profile.set_price),
        prepayment=switch if isinstance(switch, bool) else None)


class Verdict:
    APPLIED = "applied"  # the counter rose by the expected amount: the charge landed
    NOT_APPLIED = "not_applied"  # the counter did not move: safe to send (again)
    AMBIGUOUS = "ambiguous"  # anything else: a person must look (needs_review)


@dataclass(frozen=True)
class CounterCheck:
    """How two status reads tell whether a charge landed.

    The counter is the sum of `specs` in human units. `noise`: how far it may move with no charge
    (0 for a true purchase counter; display rounding for balance + consumption). `tolerance`: how
    far an applied charge may land from `expected_rise` (noise, plus one step when the meter does
    its own money→kWh conversion, whose rounding we cannot know).
    """

    specs: tuple[DpSpec, ...]
    unit: str  # "kwh" or "money"
    expected_rise: Decimal
    tolerance: Decimal
    noise: Decimal

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(s.code for s in self.specs)

    @property
    def expected_rise_raw(self) -> int | None:
        """Expected rise in raw units when the counter is a single DP (None for a sum of DPs)."""
        return int(self.expected_rise.scaleb(self.specs[0].scale)) if len(self.specs) == 1 else None

    @property
    def decisive(self) -> bool:
        """False when an applied and an unapplied charge could read alike (tiny credit, coarse DPs)."""
        return self.expected_rise - self.tolerance > self.noise

    def value(self, status: Mapping[str, Any]) -> Decimal:
        missing = [c for c in self.codes if c not in status]
        if missing:
            raise InvalidInput(f"status lacks {', '.join(missing)} needed to verify the charge")
        return sum((from_raw(status[s.code], s) for s in self.specs), Decimal(0))

    def verdict(self, before: Decimal, after: Decimal) -> str:
        rise = after - before
        applied = abs(rise - self.expected_rise) <= self.tolerance
        unchanged = abs(rise) <= self.noise
        if applied != unchanged:
            return Verdict.APPLIED if applied else Verdict.NOT_APPLIED
        return Verdict.AMBIGUOUS


def reported_before(reports: Mapping[str, Any], moment: datetime) -> list[str]:
    """The DP codes whose last report (core.ports.DpReport) is not later than `moment`.

    The cloud's status is a cache: a counter the meter last reported before a charge could reach it
    reads "unchanged" whether or not the charge landed. Only when this list is empty may
    Verdict.NOT_APPLIED be taken as proof that sending again is safe.
    """
    return sorted(code for code, report in reports.items() if report.reported_at <= moment)


@dataclass(frozen=True)
class ChargePlan:
    """What to send for one top-up and how to recognise it afterwards."""

    code: str  # DP to send
    raw: int  # raw value to send
    kind: str  # "money" (meter converts) or "energy" (we convert at price_per_kwh)
    amount: Decimal  # KES paid
    money_added: Decimal | None  # KES added to the meter's money balance (money plans)
    kwh_added: Decimal | None  # kWh credited (energy) or expected at the meter's price (money; None if no price)
    remainder: Decimal  # KES not converted because of step rounding (energy plans), recorded
    check: CounterCheck

    @property
    def command(self) -> dict[str, Any]:
        return {"code": self.code, "value": self.raw}


def _spec_for(spec_map: Mapping[str, DpSpec], code: str) -> DpSpec:
    if code not in spec_map:
        raise InvalidInput(f"device has no DP {code}")
    return spec_map[code]


def _floor_to(value: Fraction, quantum: Decimal) -> Decimal:
    steps = value / Fraction(quantum)
    return (steps.numerator // steps.denominator) * quantum


def _counter_check(profile: MeterProfile, spec_map: Mapping[str, DpSpec], *, kwh: Decimal | None,
                   money: Decimal, exact: bool) -> CounterCheck:
    specs: tuple[DpSpec, ...]
    if profile.read_purchase_total:
        specs = (_spec_for(spec_map, profile.read_purchase_total),)
        unit = profile.purchase_total_unit
    else:
        specs = (_spec_for(spec_map, profile.read_energy_balance or ""),
                 _spec_for(spec_map, profile.read_consumption_total or ""))
        unit = "kwh"
    expected = money if unit == "money" else kwh
    if expected is None:
        raise InvalidInput("a price per kWh is needed to predict the meter's energy counter")
    quanta = [s.quantum for s in specs]
    finest = min(quanta)
    noise = sum(quanta, Decimal(0)) - finest  # display rounding of each DP in the sum
    on_grid = (exact or unit == "money") and expected % finest == 0  # money is added as sent
    return CounterCheck(specs=specs, unit=unit, expected_rise=expected,
                        tolerance=noise + (Decimal(0) if on_grid else finest), noise=noise)


def plan_charge(profile: MeterProfile, specs: Mapping[str, DpSpec] | Iterable[DpSpec],
                amount: Decimal | int | str, price_per_kwh: Decimal | int | str | None = None) -> ChargePlan:
    """Plan a top-up of `amount` KES.

    Money profiles (add_money) send the amount itself; the meter converts at its own price, so pass
    the meter's price (MeterReading.price) to predict its kWh counter. Energy profiles (add_energy)
    get amount / price kWh rounded down to the DP step, the remainder reported. The plan's `check`
    verifies exactly once: store `check.value(status)` before sending; after an unknown outcome,
    `check.verdict(before, check.value(new_status))` → applied | not_applied | ambiguous.
    """
    spec_map = as_spec_map(specs)
    money = to_decimal(amount, "amount")
    if money <= 0:
        raise InvalidInput(f"amount must be greater than 0, got {money}")
    price = None if price_per_kwh is None else to_decimal(price_per_kwh, "price")
    if price is not None and price <= 0:
        raise InvalidInput(f"price per kWh must be greater than 0, got {price}")
    if profile.add_money:
        spec = _spec_for(spec_map, profile.add_money)
        raw = to_raw(money, spec)
        kwh = None if price is None else _floor_to(Fraction(money) / Fraction(price), _kwh_quantum(profile, spec_map))
        check = _counter_check(profile, spec_map, kwh=kwh, money=money, exact=False)
        return ChargePlan(code=spec.code, raw=raw, kind="money", amount=money, money_added=money,
                          kwh_added=kwh, remainder=Decimal(0), check=check)
    if price is None:
        raise InvalidInput(f"profile {profile.name} charges energy: a price per kWh is needed")
    spec = _spec_for(spec_map, profile.add_energy or "")
    kwh, raw, remainder = energy_for_money(money, price, spec)
    check = _counter_check(profile, spec_map, kwh=kwh, money=money - remainder, exact=True)
    return ChargePlan(code=spec.code, raw=raw, kind="energy", amount=money, money_added=None,
                      kwh_added=kwh, remainder=remainder, check=check)


def _kwh_quantum(profile: MeterProfile, spec_map: Mapping[str, DpSpec]) -> Decimal:
    # The meter rounds its own money→kWh conversion to what its energy counter can show.
    if profile.read_purchase_total and profile.purchase_total_unit == "kwh":
        codes = [profile.read_purchase_total]
    else:
        codes = [c for c in (profile.read_energy_balance, profile.read_consumption_total) if c]
    return min((_spec_for(spec_map, c).quantum for c in codes), default=Decimal("0.01"))
