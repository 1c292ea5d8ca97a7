"""Meter profiles, exact scaling and charge plans (pure, no I/O but one temp config file)."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from core.meters.profiles import (
    BUILTIN_PROFILES,
    DpSpec,
    MeterProfile,
    energy_for_money,
    from_raw,
    load_profiles,
    missing_codes,
    parse_specifications,
    profile_problems,
    to_raw,
)
from core.shared.errors import InvalidInput
from core.topups.decision import Verdict, plan_charge, read_meter


def integer(code: str, scale: int = 2, lo: int = 0, hi: int = 99999999, step: int = 1, unit: str = "kWh",
            **flags: bool) -> DpSpec:
    values = json.dumps({"unit": unit, "min": lo, "max": hi, "scale": scale, "step": step})
    return DpSpec.from_tuya({"code": code, "type": "Integer", "values": values}, **flags)


def boolean(code: str) -> DpSpec:
    return DpSpec.from_tuya({"code": code, "type": "Boolean", "values": "{}"})


SEED_SPECS = {s.code: s for s in [
    integer("charge_money", lo=1, hi=9999999, unit="KES", readable=False), integer("balance", unit="KES"),
    integer("balance_energy"), integer("forward_energy_total"), integer("electric_total"),
    integer("goods_price", lo=1, hi=100000, unit="KES"), boolean("clear_energy"), boolean("prepayment_switch")]}
STANDARD_SPECS = {s.code: s for s in [
    integer("charge_energy", scale=0, hi=5000), integer("balance_energy", scale=0, hi=5000),
    integer("forward_energy_total"), boolean("clear_energy"), boolean("switch_prepayment")]}
KES = SEED_SPECS["charge_money"]


# --- specs and scaling ------------------------------------------------------------------------------

def test_spec_parsed_from_tuya_json_string_values():
    spec = DpSpec.from_tuya({"code": "balance", "type": "Integer",
                             "values": '{"unit":"KES","min":0,"max":99999999,"scale":2,"step":1}'})
    assert (spec.type, spec.scale, spec.step, spec.min, spec.max, spec.unit) == ("Integer", 2, 1, 0, 99999999, "KES")
    assert spec.quantum == D("0.01")
    assert DpSpec.from_dict(spec.to_dict()) == spec
    enum = DpSpec.from_tuya({"code": "mode", "type": "Enum", "values": '{"range":["a","b"]}'})
    assert enum.range == ("a", "b")
    with pytest.raises(InvalidInput, match="not JSON"):
        DpSpec.from_tuya({"code": "x", "type": "Integer", "values": "{nope"})


def test_parse_specifications_merges_functions_and_status():
    result = {"functions": [{"code": "charge_money", "type": "Integer", "values": '{"scale":2,"max":100}'}],
              "status": [{"code": "balance", "type": "Integer", "values": '{"scale":2,"max":100}'}]}
    specs = parse_specifications(result)
    assert specs["charge_money"].writable and not specs["charge_money"].readable
    assert specs["balance"].readable and not specs["balance"].writable


def test_19_99_is_1999_never_1998():
    assert int(19.99 * 100) == 1998  # the classic bug this module exists to avoid
    assert to_raw(D("19.99"), KES) == 1999
    assert to_raw("19.99", KES) == 1999
    assert from_raw(1999, KES) == D("19.99")
    for cents in range(1, 5001):
        assert to_raw(from_raw(cents, KES), KES) == cents


def test_to_raw_refuses_what_the_dp_cannot_hold():
    with pytest.raises(InvalidInput, match="more than 2 decimal places"):
        to_raw(D("19.999"), KES)
    with pytest.raises(InvalidInput, match="outside"):
        to_raw(D("100000.00"), KES)
    with pytest.raises(InvalidInput, match="outside"):
        to_raw(D("0"), KES)
    with pytest.raises(InvalidInput, match=r"multiple of 0\.05"):
        to_raw(D("1.02"), integer("x", step=5))
    assert to_raw(D("1.05"), integer("x", step=5)) == 105
    with pytest.raises(TypeError):
        to_raw(19.99, KES)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        to_raw(D("NaN"), KES)


def test_energy_for_money_rounds_down_and_reports_the_remainder():
    kwh, raw, rest = energy_for_money(D("500"), D("23"), integer("e"))
    assert (kwh, raw, rest) == (D("21.73"), 2173, D("0.21"))
    assert kwh * D("23") + rest == D("500")
    kwh, raw, rest = energy_for_money(D("510"), D("25"), STANDARD_SPECS["charge_energy"])
    assert (kwh, raw, rest) == (D("20"), 20, D("10"))
    kwh, raw, rest = energy_for_money(D("100"), D("3"), integer("e", step=5))  # 33.333… → 33.30
    assert (kwh, raw, rest) == (D("33.30"), 3330, D("0.10"))


@pytest.mark.parametrize("price", [D("0"), D("-5")])
def test_energy_for_money_needs_a_positive_price(price):
    with pytest.raises(InvalidInput, match="greater than 0"):
        energy_for_money(D("100"), price, integer("e"))


def test_energy_for_money_limits():
    with pytest.raises(InvalidInput, match="more than 5000"):
        energy_for_money(D("200000"), D("25"), STANDARD_SPECS["charge_energy"])
    with pytest.raises(InvalidInput, match="less than"):
        energy_for_money(D("10"), D("25"), STANDARD_SPECS["charge_energy"])


# --- profiles -----------------------------------------------------------------------------------------

def test_builtin_profiles():
    seed, std = BUILTIN_PROFILES["seed"], BUILTIN_PROFILES["tuya-standard"]
    assert (seed.add_money, seed.read_purchase_total, seed.set_price) == \
        ("charge_money", "electric_total", "goods_price")
    assert seed.add_energy is None
    assert (std.add_energy, std.read_energy_balance, std.prepayment_switch, std.clear) == \
        ("charge_energy", "balance_energy", "switch_prepayment", "clear_energy")
    assert std.read_purchase_total is None and std.read_consumption_total == "forward_energy_total"
    assert missing_codes(seed, SEED_SPECS) == [] and missing_codes(std, STANDARD_SPECS) == []


def test_missing_codes_are_named():
    assert missing_codes(BUILTIN_PROFILES["tuya-standard"], SEED_SPECS) == ["charge_energy", "switch_prepayment"]
    assert "charge_money" in missing_codes(BUILTIN_PROFILES["seed"], STANDARD_SPECS.values())
    read_only = dict(SEED_SPECS, charge_money=integer("charge_money", unit="KES", writable=False))
    assert missing_codes(BUILTIN_PROFILES["seed"], read_only) == ["charge_money"]
    wrong_type = dict(SEED_SPECS, prepayment_switch=integer("prepayment_switch"))
    assert profile_problems(BUILTIN_PROFILES["seed"], wrong_type) == \
        ["DP prepayment_switch (prepayment_switch) is Integer, expected Boolean"]


def test_a_profile_must_charge_and_verify():
    with pytest.raises(InvalidInput, match="add_money or add_energy"):
        MeterProfile(name="x", read_purchase_total="t")
    with pytest.raises(InvalidInput, match="exactly once"):
        MeterProfile(name="x", add_energy="charge_energy", read_energy_balance="balance_energy")


def test_profiles_from_toml_merge_over_builtins(tmp_path):
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.acme]\nextends = "seed"\nadd_money = "recharge"\nset_price = ""\n\n'
                    '[profiles.kwh-only]\nadd_energy = "topup_kwh"\nread_purchase_total = "bought_kwh"\n')
    profiles = load_profiles(path)
    assert set(profiles) >= {"seed", "tuya-standard", "acme", "kwh-only"}
    assert profiles["acme"].add_money == "recharge" and profiles["acme"].set_price is None
    assert profiles["acme"].read_purchase_total == "electric_total"
    assert profiles["kwh-only"].add_energy == "topup_kwh"


def test_profiles_from_json_and_bad_files(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"seed": {"extends": "seed", "clear": ""}}))
    assert load_profiles(path)["seed"].clear is None
    path.write_text(json.dumps({"x": {"add_money": "m", "read_purchase_total": "t", "colour": "red"}}))
    with pytest.raises(InvalidInput, match="unknown keys"):
        load_profiles(path)
    with pytest.raises(InvalidInput, match="cannot read"):
        load_profiles(tmp_path / "missing.toml")


# --- reading and charge plans ------------------------------------------------------------------------

def test_read_meter_in_human_units():
    status = {"balance": 10050, "balance_energy": 402, "electric_total": 1000, "forward_energy_total": 598,
              "goods_price": 2500, "prepayment_switch": True}
    reading = read_meter(BUILTIN_PROFILES["seed"], SEED_SPECS, status)
    assert reading.money_balance == D("100.50") and reading.price == D("25.00") and reading.prepayment is True
    assert reading.purchase_total == D("10.00") and reading.consumption_total == D("5.98")


def test_seed_plan_charges_money_and_checks_electric_total():
    plan = plan_charge(BUILTIN_PROFILES["seed"], SEED_SPECS, D("500"), D("23"))
    assert plan.command == {"code": "charge_money", "value": 50000}
    assert (plan.kind, plan.money_added, plan.kwh_added, plan.remainder) == ("money", D("500"), D("21.73"), D("0"))
    check = plan.check
    assert check.codes == ("electric_total",) and check.expected_rise_raw == 2173 and check.decisive
    before = check.value({"electric_total": 1000})
    assert check.verdict(before, check.value({"electric_total": 1000})) == Verdict.NOT_APPLIED
    assert check.verdict(before, check.value({"electric_total": 3173})) == Verdict.APPLIED
    assert check.verdict(before, check.value({"electric_total": 3174})) == Verdict.APPLIED  # meter rounded up
    assert check.verdict(before, check.value({"electric_total": 5346})) == Verdict.AMBIGUOUS  # applied twice
    with pytest.raises(InvalidInput, match="price"):
        plan_charge(BUILTIN_PROFILES["seed"], SEED_SPECS, D("500"))
    assert plan_charge(BUILTIN_PROFILES["seed"], SEED_SPECS, D("19.99"), D("25")).raw == 1999


def test_standard_plan_converts_and_checks_balance_plus_consumption():
    plan = plan_charge(BUILTIN_PROFILES["tuya-standard"], STANDARD_SPECS, D("510"), D("25"))
    assert plan.command == {"code": "charge_energy", "value": 20}
    assert (plan.kind, plan.kwh_added, plan.remainder) == ("energy", D("20"), D("10"))
    check = plan.check
    assert check.codes == ("balance_energy", "forward_energy_total") and check.expected_rise_raw is None
    assert check.noise == D("1.00") and check.tolerance == D("1.00")  # display rounding of both DPs
    before = check.value({"balance_energy": 10, "forward_energy_total": 0})  # true balance 10.00
    consumed = check.value({"balance_energy": 9, "forward_energy_total": 30})  # used 0.30, shows 9
    charged = check.value({"balance_energy": 29, "forward_energy_total": 30})
    assert check.verdict(before, consumed) == Verdict.NOT_APPLIED
    assert check.verdict(before, charged) == Verdict.APPLIED
    assert check.verdict(before, check.value({"balance_energy": 49, "forward_energy_total": 30})) == Verdict.AMBIGUOUS
    tiny = plan_charge(BUILTIN_PROFILES["tuya-standard"], STANDARD_SPECS, D("25"), D("25"))
    assert not tiny.check.decisive  # 1 kWh credit vs a balance shown in whole kWh


def test_plan_refuses_bad_input():
    std = BUILTIN_PROFILES["tuya-standard"]
    with pytest.raises(InvalidInput, match="price"):
        plan_charge(std, STANDARD_SPECS, D("100"))
    with pytest.raises(InvalidInput, match="greater than 0"):
        plan_charge(std, STANDARD_SPECS, D("100"), D("0"))
    with pytest.raises(InvalidInput, match="greater than 0"):
        plan_charge(std, STANDARD_SPECS, D("-1"), D("25"))
    with pytest.raises(InvalidInput, match="no DP charge_money"):
        plan_charge(BUILTIN_PROFILES["seed"], STANDARD_SPECS, D("100"), D("25"))
