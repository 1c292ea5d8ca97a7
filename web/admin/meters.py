"""Meters: the list with live balances, one meter's page, and what an admin does to a meter — add it,
credit it by hand, set its price, switch prepayment, clear its energy, set its low-balance alert threshold. Every action goes through
core's services, which audit it with the logged-in user's name."""

from __future__ import annotations

import uuid

from starlette.responses import Response

from core.admin.operator import manual_topup, meter_command
from core.admin.registry import AddMeter, register_meter
from core.shared.errors import DomainError
from core.shared.money import parse_price
from core.usage.service import set_meter_threshold, summarise, unit_of
from storage.dashboard import meter_detail, meters_with_last_topup
from web.admin.chart_views import meter_charts
from web.admin.forms import FormError, text
from web.admin.live import read_live
from web.admin.reports import recent_months
from web.admin.site import Ctx, not_found
from web.http import domain_status

ADD_FIELDS = ("number", "name", "device_id", "profile", "price")


async def meters_page(ctx: Ctx, *, status: int = 200, error: str | None = None, values: dict | None = None) -> Response:
    meters = await meters_with_last_topup(ctx.container.engine)
    readings = await read_live(ctx.container, meters)
    return ctx.render("admin/meters.html", status, title="Meters", meters=meters, readings=readings, error=error,
                      values=values or {"profile": "seed"}, profiles=sorted(ctx.container.profiles))


async def add_meter(ctx: Ctx) -> Response:
    values = {name: text(ctx.form, name, limit=64) for name in ADD_FIELDS}
    if ctx.container.meter_gateway is None:
        return await meters_page(ctx, status=503, values=values,
                                 error="Tuya is not configured here, so the meter's specifications cannot be checked.")
    command = AddMeter(number=values["number"], name=values["name"], device_id=values["device_id"],
                       profile=values["profile"] or "seed", price_per_kwh=values["price"] or None)
    try:
        meter = await register_meter(command, uow=ctx.container.uow(), meters=ctx.container.meter_gateway,
                                     profiles=ctx.container.profiles, clock=ctx.container.clock,
                                     actor=ctx.user.username)
    except DomainError as error:
        return await meters_page(ctx, status=domain_status(error), error=error.message, values=values)
    return ctx.redirect(f"/admin/meters/{meter.number}", f"Meter {meter.number} added; its specifications fit "
                                                          f"profile {meter.profile}.")


async def _meter_or_404(ctx: Ctx) -> dict:
    meter = await meter_detail(ctx.container.engine, ctx.request.path_params["number"])
    if meter is None:
        raise not_found("meter with that number")
    return meter


async def meter_page(ctx: Ctx, *, status: int = 200, error: str | None = None, values: dict | None = None) -> Response:
    meter = await _meter_or_404(ctx)
    reading = (await read_live(ctx.container, [meter]))[meter["number"]]
    charts = await meter_charts(ctx.container, meter["number"])
    return ctx.render("admin/meter.html", status, title=f"Meter {meter['number']}", meter=meter, reading=reading,
                      error=error, values=values or {}, request_key=uuid.uuid4().hex, charts=charts,
                      months=recent_months(ctx), alerts=await _alert_level(ctx, meter["number"]))


async def _alert_level(ctx: Ctx, number: str) -> dict:
    """The meter's low-balance threshold: the landlord's fixed one or the automatic one (about two days of
    its use, unknown under 3 days of readings), in the meter's unit, and its days left."""
    container = ctx.container
    async with container.uow() as uow:
        meter = await uow.meters.get_by_number(number)
        profile = container.profiles.get(meter.profile)
        fixed = (await uow.usage.meter(meter.id)).threshold
        summary = await summarise(uow, meter, profile, now=container.clock.now())
    return {"fixed": fixed, "threshold": summary.threshold, "unit": unit_of(profile), "days_left": summary.days_left}


async def _act(ctx: Ctx, action, done: str, values: dict | None = None) -> Response:
    """Run one meter action; on a refusal show the meter page again with the reason, nothing changed."""
    await _meter_or_404(ctx)
    try:
        await action()
    except FormError as error:
        return await meter_page(ctx, status=error.status, error=error.message, values=values)
    except DomainError as error:
        return await meter_page(ctx, status=domain_status(error), error=error.message, values=values)
    return ctx.redirect(f"/admin/meters/{ctx.request.path_params['number']}", done)


async def topup(ctx: Ctx) -> Response:
    number, container = ctx.request.path_params["number"], ctx.container
    values = {"amount": text(ctx.form, "amount", limit=20), "reason": text(ctx.form, "reason", limit=500),
              "request_key": text(ctx.form, "request_key", limit=64)}

    async def action():
        if not values["amount"]:
            raise FormError("enter the amount in KES")
        await manual_topup(number, values["amount"], values["reason"], actor=ctx.actor, uow=container.uow(),
                           profiles=container.profiles, clock=container.clock,
                           request_key=values["request_key"] or None)

    return await _act(ctx, action, f"Manual top-up of KES {values['amount']} queued for meter {number}; "
                                   "it shows as applied once the meter confirms it.", values)


def _command(ctx: Ctx, operation: str, value: object):
    container = ctx.container

    async def action():
        if container.meter_gateway is None:
            raise FormError("Tuya is not configured here: meter commands cannot be sent", status=503)
        await meter_command(ctx.request.path_params["number"], operation, value, actor=ctx.actor,
                            reason=text(ctx.form, "reason", limit=500) or None, uow=container.uow(),
                            meters=container.meter_gateway, profiles=container.profiles, clock=container.clock)

    return action


async def set_price(ctx: Ctx) -> Response:
    price = text(ctx.form, "price", limit=20)

    async def action():
        if parse_price(price) is None:
            raise FormError("enter the price in KES per kWh")
        await _command(ctx, "set_price", price)()

    return await _act(ctx, action, f"Price set to KES {price} per kWh.", {"price": price})


async def prepayment(ctx: Ctx) -> Response:
    state = text(ctx.form, "state")

    async def action():
        if state not in ("on", "off"):
            raise FormError("prepayment is switched on or off")
        await _command(ctx, "prepayment_switch", state == "on")()

    return await _act(ctx, action, f"Prepayment switched {state}.")


async def clear_confirm(ctx: Ctx) -> Response:
    meter = await _meter_or_404(ctx)
    return ctx.render("admin/meter_clear.html", title=f"Clear meter {meter['number']}", meter=meter)


async def clear(ctx: Ctx) -> Response:
    if ctx.form.get("confirm") != "yes":
        meter = await _meter_or_404(ctx)
        return ctx.render("admin/meter_clear.html", 422, title=f"Clear meter {meter['number']}", meter=meter,
                          error="Tick the box to confirm that the energy balance should be erased.")
    return await _act(ctx, _command(ctx, "clear", True), "Energy balance cleared.")


async def set_threshold(ctx: Ctx) -> Response:
    """The landlord's fixed low-balance threshold, or back to automatic; audited like
    `lipameter meter threshold`."""
    number, container = ctx.request.path_params["number"], ctx.container
    value = "auto" if ctx.form.get("mode") == "auto" else text(ctx.form, "threshold", limit=20)
    values = {"threshold": "" if value == "auto" else value}
    await _meter_or_404(ctx)
    try:
        if not value:
            raise FormError("enter the threshold, or choose automatic")
        _, level = await set_meter_threshold(number, value, actor=ctx.user.username, uow=container.uow(),
                                             clock=container.clock)
    except FormError as error:
        return await meter_page(ctx, status=error.status, error=error.message, values=values)
    except DomainError as error:
        return await meter_page(ctx, status=domain_status(error), error=error.message, values=values)
    said = f"{level:f}" if level is not None else "automatic (about two days of the meter's own use)"
    return ctx.redirect(f"/admin/meters/{number}", f"Low-balance threshold set to {said}.")
