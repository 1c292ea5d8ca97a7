"""Operator use cases: register meters and tenants. (Top-ups and meter commands an operator gives: core/admin/operator.py.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from core.meters.model import MAX_METER_NUMBER_LEN, METER_NUMBER, Meter
from core.meters.profiles import MeterProfile, as_spec_map, profile_problems
from core.ports import MeterGateway, UnitOfWork
from core.shared.clock import SystemClock
from core.shared.errors import Conflict, InvalidInput, NotFound
from core.shared.ids import new_id
from core.shared.money import parse_price
from core.shared.phone import normalize_kenyan_mobile
from core.tenants.model import Tenant


@dataclass(frozen=True)
class AddMeter:
    number: str
    name: str
    device_id: str
    profile: str = "seed"
    price_per_kwh: object = None
    dp_specs: dict = field(default_factory=dict)


def validate_meter(cmd: AddMeter) -> None:
    if not METER_NUMBER.match(cmd.number or ""):
        raise InvalidInput(f"meter number must be 1-{MAX_METER_NUMBER_LEN} letters, digits or dashes "
                           "(it is M-Pesa's account reference)", code="invalid_meter_number")
    if not (cmd.name or "").strip():
        raise InvalidInput("meter name must not be empty", code="invalid_meter_name")
    if not (cmd.device_id or "").strip():
        raise InvalidInput("device id must not be empty", code="invalid_device_id")
    parse_price(cmd.price_per_kwh)


async def add_meter(cmd: AddMeter, *, uow: UnitOfWork, clock=None, actor: str = "system") -> Meter:
    validate_meter(cmd)
    meter = Meter(id=new_id(), number=cmd.number, name=cmd.name.strip(), device_id=cmd.device_id.strip(),
                  profile=cmd.profile, price_per_kwh=parse_price(cmd.price_per_kwh), dp_specs=cmd.dp_specs,
                  created_at=(clock or SystemClock()).now())
    async with uow:
        await _refuse_taken(uow, meter.number, meter.device_id)
        await uow.meters.add(meter)
        await uow.audit.record(at=meter.created_at, actor=actor, action="add_meter", target=meter.number,
                               reason=None, details={"device_id": meter.device_id, "profile": meter.profile})
        await uow.commit()
    return meter


async def _refuse_taken(uow: UnitOfWork, number: str, device_id: str) -> None:
    """A number in use, or a device that is already an active meter: a credit for a second meter on one
    device would land on the first's unit. Unique indexes back both up against a concurrent add."""
    if await uow.meters.get_by_number(number) is not None:
        raise Conflict(f"meter number {number} is taken", code="meter_exists")
    twin = next((m for m in await uow.meters.list() if m.active and m.device_id == device_id), None)
    if twin is not None:
        raise Conflict(f"device {device_id} is already meter {twin.number}; deactivate that meter first",
                       code="device_taken")


async def register_meter(cmd: AddMeter, *, uow: UnitOfWork, meters: MeterGateway,
                         profiles: Mapping[str, MeterProfile], clock=None, actor: str = "system") -> Meter:
    """Add a meter after reading its specifications from the cloud: a device that lacks the
    profile's DPs is refused with their names, and each DP's type, scale, step, min and max is kept."""
    validate_meter(cmd)
    profile = profiles.get(cmd.profile)
    if profile is None:
        raise InvalidInput(f"unknown meter profile {cmd.profile!r}; known: {', '.join(sorted(profiles))}",
                           code="unknown_profile")
    specs = as_spec_map(await meters.specifications(cmd.device_id.strip()))
    problems = profile_problems(profile, specs)
    if problems:
        raise InvalidInput(f"device {cmd.device_id} does not fit profile {profile.name}: " + "; ".join(problems),
                           code="profile_mismatch")
    info = await meters.device_info(cmd.device_id.strip())
    meter = await add_meter(replace(cmd, dp_specs={code: spec.to_dict() for code, spec in specs.items()}),
                            uow=uow, clock=clock, actor=actor)
    meter.online = bool(info.get("online"))
    async with uow:
        await uow.meters.save(meter)
        await uow.commit()
    return meter


async def list_meters(*, uow: UnitOfWork) -> list[Meter]:
    async with uow:
        return await uow.meters.list()


@dataclass(frozen=True)
class AddTenant:
    phone: str
    name: str = ""
    meter_numbers: list[str] = field(default_factory=list)
    language: str = "en"


async def add_tenant(cmd: AddTenant, *, uow: UnitOfWork, clock=None, actor: str = "system") -> Tenant:
    """Adds the tenant, or links more meters to an existing one (same phone)."""
    phone = normalize_kenyan_mobile(cmd.phone)
    async with uow:
        meters = []
        for number in cmd.meter_numbers:
            meter = await uow.meters.get_by_number(number)
            if meter is None:
                raise NotFound(f"no meter with number {number!r}", code="meter_not_found")
            meters.append(meter)
        tenant = await uow.tenants.get_by_phone(phone)
        if tenant is None:
            tenant = Tenant(id=new_id(), phone=phone, name=cmd.name.strip(), language=cmd.language,
                            created_at=(clock or SystemClock()).now())
            await uow.tenants.add(tenant)
        for meter in meters:
            await uow.tenants.link(tenant.id, meter.id)
        await uow.audit.record(at=(clock or SystemClock()).now(), actor=actor, action="add_tenant",
                               target=tenant.id, reason=None, details={"meters": [m.number for m in meters]})
        await uow.commit()
    return tenant
