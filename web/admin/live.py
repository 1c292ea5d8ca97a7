"""Live meter readings for the dashboard, bounded: what the Tuya cloud answers within ~1.5 s is shown
live, anything slower falls back to the last known value and its age (and is not waited for)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.admin.operator import read_balance
from storage.dashboard import set_meter_online
from web.bootstrap import Container

log = logging.getLogger("lipameter.admin.live")

LIVE_TIMEOUT_S = 1.5


@dataclass(frozen=True)
class Reading:
    money: Decimal | None
    energy: Decimal | None
    online: bool | None
    at: datetime | None
    live: bool
    prepayment: bool | None = None
    problem: str = ""


def last_known(meter: dict, problem: str = "") -> Reading:
    return Reading(meter.get("last_balance"), meter.get("last_energy"), meter.get("online"),
                   meter.get("last_balance_at"), live=False, problem=problem)


async def _read_one(container: Container, meter: dict) -> Reading:
    gateway = container.meter_gateway
    _, reading = await read_balance(meter["number"], uow=container.uow(), meters=gateway, profiles=container.profiles,
                                    clock=container.clock)
    # read_balance takes any status answer as "online", but Tuya answers status for offline devices
    # too (their last values): the device info's flag is the one to believe.
    online = bool((await gateway.device_info(meter["device_id"])).get("online"))
    await set_meter_online(container.engine, meter["id"], online)
    return Reading(reading.money_balance, reading.energy_balance, online, container.clock.now(), live=True,
                   prepayment=reading.prepayment)


async def read_live(container: Container, meters: list[dict], timeout_s: float = LIVE_TIMEOUT_S) -> dict[str, Reading]:
    """Number -> reading, for every meter given; inactive meters are not asked."""
    readings = {m["number"]: last_known(m) for m in meters}
    if container.meter_gateway is None:
        return {n: last_known(m, "Tuya is not configured") for n, m in zip(readings, meters, strict=False)}
    tasks = {asyncio.create_task(_read_one(container, m)): m for m in meters if m.get("active")}
    if not tasks:
        return readings
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
        readings[tasks[task]["number"]] = last_known(tasks[task], "the meter did not answer in time")
    for task in done:
        meter = tasks[task]
        try:
            readings[meter["number"]] = task.result()
        except Exception as error:  # a page must still render when one meter misbehaves
            log.info("live read of meter %s failed: %s", meter["number"], error)
            readings[meter["number"]] = last_known(meter, getattr(error, "message", str(error)))
    if pending:
        await asyncio.wait(pending)  # let the cancelled reads close their transactions
    return readings
