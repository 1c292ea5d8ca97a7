"""A month of simulated readings for `lipameter demo`, so that days left, alerts and the charts have a
history from the first minute. The meters' past is simulated with the Tuya sandbox's own load shape
(sandbox.tuya_meters.DAY_SHAPE) backwards from each sandbox meter's balance now: every hour the balance was
higher by what the hour used; where that would pass a tenant's usual top-up size, credit was added there.
No payment stands behind that simulated credit, so it is not a top-up reading: the usage derivation records
it as credit added at the meter itself (a manual credit), and the books stay true. The readings are stored
through storage like the sampler's, then rolled up into daily rows by core's roll-up, as a month of real sampling would have left them."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

from core.usage import service as usage
from core.usage.model import Reading, ReadingSource
from sandbox.tuya_meters import shaped_kwh
from web.bootstrap import Container

BACKFILL_DAYS = 30
STEP = timedelta(hours=1)
CENT = Decimal("0.01")
# (top-up credited, the balance above which the simulated past has a top-up): KES for money meters, kWh else
TOPUP = {"KES": (Decimal(600), Decimal(800)), "kWh": (Decimal(25), Decimal(32))}


def simulated_past(meter_id: str, *, balance_now: Decimal, rate_kw: Decimal, price: Decimal | None, now: datetime,
                   days: int = BACKFILL_DAYS, seed: int = 0) -> list[Reading]:
    """Hourly readings ending at `now` with `balance_now`, oldest first. `price` None: the balance is kWh."""
    unit = "kWh" if price is None else "KES"
    credit, ceiling = TOPUP[unit]
    rng = random.Random(seed)
    factor = {}  # one day busier than another: +-25%, the same all day long
    readings, at, balance = [], now, balance_now
    for _ in range(days * 24):
        start = at - STEP
        factor.setdefault(start.date(), Decimal(rng.randint(75, 125)) / 100)
        kwh = shaped_kwh(rate_kw, start.timestamp(), at.timestamp()) * factor[start.date()]
        earlier = balance + (kwh if price is None else kwh * price)
        if earlier > ceiling:  # going back past a credit: before it, the balance was lower by as much
            earlier -= credit
        readings.append(Reading(meter_id, at, balance.quantize(CENT), ReadingSource.SAMPLE))
        at, balance = start, earlier
    readings.append(Reading(meter_id, at, balance.quantize(CENT), ReadingSource.SAMPLE))
    return list(reversed(readings))


async def backfill(container: Container, meters: dict[str, tuple[Decimal, Decimal, Decimal | None]]) -> int:
    """`meters`: number -> (balance now, mean load in kW, price per kWh or None for a kWh balance). Meters that
    already have readings (an earlier demo run) are left alone. Answers how many meters got a history."""
    now, filled = container.clock.now(), 0
    for seed, (number, (balance, rate_kw, price)) in enumerate(sorted(meters.items())):
        async with container.uow() as uow:
            meter = await uow.meters.get_by_number(number)
            if meter is None or await uow.usage.readings(meter.id) or await uow.usage.daily(meter.id):
                continue
            for reading in simulated_past(meter.id, balance_now=balance, rate_kw=rate_kw, price=price, now=now,
                                          seed=seed):
                await uow.usage.add_reading(reading)
            await uow.commit()
        filled += 1
    if filled:  # what a month of the worker's roll-ups would have left: daily rows, two days of readings
        await usage.roll_up(container.uow, container.profiles, now=now)
    return filled
