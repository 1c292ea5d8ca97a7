"""Finding a meter by what a person gives: its id (the API, the dashboard) or its printed number."""

from __future__ import annotations

from core.meters.model import Meter
from core.ports import UnitOfWork
from core.shared.errors import InvalidInput, NotFound


async def find_meter(uow: UnitOfWork, ref: object) -> Meter:
    """Inside an open unit of work. An id is tried first (ids are 36-character uuids), then the number."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput("give the meter's id or its number", code="invalid_meter")
    ref = ref.strip()
    meter = await uow.meters.get(ref) if len(ref) == 36 else None
    meter = meter or await uow.meters.get_by_number(ref)
    if meter is None:
        raise NotFound(f"no meter with id or number {ref[:40]!r}", code="meter_not_found")
    return meter
