"""Payments and top-ups: filtered lists, a payment's whole story (raw callbacks, the commands sent to
the meter and their answers), and the two fixes — retry a failed top-up, resolve a review."""

from __future__ import annotations

from starlette.responses import Response

from core.admin.operator import RESOLUTIONS, resolve_review, retry_topup
from core.payments.model import Channel
from core.shared.clock import NAIROBI
from core.shared.errors import DomainError, InvalidInput
from core.shared.phone import normalize_kenyan_mobile
from storage.dashboard import (
    PAYMENT_FILTERS,
    TOPUP_FILTERS,
    PaymentFilter,
    list_payments,
    list_topups,
    payment_detail,
    topup_detail,
)
from web.admin.csv_export import csv_response
from web.admin.forms import FormError, day_range, text
from web.admin.site import Ctx, not_found
from web.http import domain_status

IN_FLIGHT = ("queued", "sending")
# What Africa's Talking's delivery reports (core/notify/delivery.py) say, in words for the landlord.
DELIVERY_WORDS = {"Success": "Delivered", "Failed": "Not delivered", "Rejected": "Refused by the network",
                  "Sent": "With the network", "Submitted": "With the network", "Buffered": "Phone off or away"}


def delivery(notification: dict) -> str:
    """One message's delivery, as its SMS delivery report said ("" for other channels)."""
    if notification["channel"] != "sms" or notification["status"] != "sent":
        return ""
    status = notification.get("delivery_status")
    if not status:
        return "No report yet" if notification.get("provider_id") else ""
    words = DELIVERY_WORDS.get(status, status)
    if status == "Success" and notification.get("delivered_at"):
        return f"{words} {notification['delivered_at'].astimezone(NAIROBI):%H:%M:%S}"
    reason = notification.get("delivery_error")
    return f"{words} ({reason})" if reason else words
CHANNELS = tuple(channel.value for channel in Channel)


def units_of(profiles, name: str | None) -> dict[str, str]:
    """What a top-up's numbers count on this meter: money meters keep KES, energy meters kWh."""
    profile = profiles.get(name or "")
    if profile is None:
        return {"balance": "", "added": "", "counter": ""}
    counts_money = profile.read_purchase_total and profile.purchase_total_unit == "money"
    return {"balance": "KES" if profile.read_money_balance else "kWh", "added": "KES" if profile.add_money else "kWh",
            "counter": "KES" if counts_money else "kWh"}


def payment_filter(query: dict[str, str]) -> tuple[PaymentFilter, dict]:
    status, topup, channel = query.get("status", ""), query.get("topup", ""), query.get("channel", "")
    if channel and channel not in CHANNELS:
        raise FormError(f"unknown channel {channel[:20]!r}", status=400)
    if status and status not in PAYMENT_FILTERS:
        raise FormError(f"unknown payment status {status[:20]!r}", status=400)
    if topup and topup not in TOPUP_FILTERS and topup != "none":
        raise FormError(f"unknown top-up status {topup[:20]!r}", status=400)
    first, last, start, end = day_range(query)
    phone = "".join(ch for ch in query.get("phone", "") if ch.isdigit())[:15]
    try:
        phone = normalize_kenyan_mobile(phone) if len(phone) >= 10 else phone
    except InvalidInput:
        pass  # a fragment of a number is a fine filter too
    shown = {"status": status, "topup": topup, "channel": channel, "meter": query.get("meter", "")[:12],
             "phone": query.get("phone", "")[:20],
             "from": first.isoformat() if first else "", "to": last.isoformat() if last else ""}
    return PaymentFilter(status=status, topup=topup, meter=shown["meter"], phone=phone, channel=channel,
                         start=start, end=end), shown


async def payments_page(ctx: Ctx) -> Response:
    try:
        chosen, shown = payment_filter(ctx.query)
    except FormError as error:
        return ctx.render("admin/payments.html", error.status, title="Payments", payments=[], error=error.message,
                          filters=ctx.query, statuses=PAYMENT_FILTERS, topup_statuses=TOPUP_FILTERS, csv_query="",
                          channels=CHANNELS)
    rows = await list_payments(ctx.container.engine, chosen)
    return ctx.render("admin/payments.html", title="Payments", payments=rows, filters=shown, statuses=PAYMENT_FILTERS,
                      topup_statuses=TOPUP_FILTERS, csv_query=ctx.request.url.query, channels=CHANNELS)


PAYMENT_CSV = ("created_at", "id", "status", "amount", "phone", "meter_number", "channel", "mpesa_receipt",
               "transaction_date", "result_code", "result_desc", "topup_status", "checkout_request_id", "description",
               "paid_amount", "payer_name", "payer_msisdn")


async def payments_csv(ctx: Ctx) -> Response:
    chosen, shown = payment_filter(ctx.query)
    rows = await list_payments(ctx.container.engine, chosen, limit=None)
    span = f"{shown['from'] or 'start'}_{shown['to'] or 'now'}"
    return csv_response(f"lipameter-payments_{span}.csv", PAYMENT_CSV, rows)


async def payment_page(ctx: Ctx, *, payment_id: str | None = None, status: int = 200, error: str | None = None,
                       values: dict | None = None) -> Response:
    payment = await payment_detail(ctx.container.engine, payment_id or ctx.request.path_params["payment_id"])
    if payment is None:
        raise not_found("payment with that id")
    topup = payment["topup"]
    return ctx.render("admin/payment.html", status, title=f"Payment KES {payment['amount']:,}", payment=payment,
                      topup=topup, error=error, values=values or {}, resolutions=RESOLUTIONS,
                      units=units_of(ctx.container.profiles, payment["meter_profile"]),
                      refresh=5 if topup and topup["status"] in IN_FLIGHT and not error else None,
                      delivery=delivery)


async def topups_page(ctx: Ctx) -> Response:
    status, meter = ctx.query.get("status", ""), ctx.query.get("meter", "")[:12]
    if status and status not in TOPUP_FILTERS:
        raise FormError(f"unknown top-up status {status[:20]!r}", status=400)
    rows = await list_topups(ctx.container.engine, status=status, meter=meter)
    return ctx.render("admin/topups.html", title="Top-ups", topups=rows, filters={"status": status, "meter": meter},
                      topup_statuses=TOPUP_FILTERS)


async def topup_page(ctx: Ctx, *, status: int = 200, error: str | None = None, values: dict | None = None,
                     topup: dict | None = None) -> Response:
    topup = topup or await topup_detail(ctx.container.engine, ctx.request.path_params["topup_id"])
    if topup is None:
        raise not_found("top-up with that id")
    if topup["payment_id"] and not error:
        return ctx.redirect(f"/admin/payments/{topup['payment_id']}")  # one page per payment, with its actions
    return ctx.render("admin/topup.html", status, title="Manual top-up" if not topup["payment_id"] else "Top-up",
                      topup=topup, error=error, values=values or {}, resolutions=RESOLUTIONS,
                      units=units_of(ctx.container.profiles, topup["meter_profile"]),
                      refresh=5 if topup["status"] in IN_FLIGHT and not error else None)


async def _back(ctx: Ctx, payment_id: str | None, topup: dict | None, **shown) -> Response:
    """The page the form came from, showing an error or the outcome."""
    if payment_id:
        return await payment_page(ctx, payment_id=payment_id, **shown)
    return await topup_page(ctx, topup=topup, **shown)


async def retry(ctx: Ctx) -> Response:
    topup = await topup_detail(ctx.container.engine, ctx.request.path_params["topup_id"])
    if topup is None:
        raise not_found("top-up with that id")
    reason = text(ctx.form, "reason", limit=500)
    try:
        await retry_topup(topup["id"], reason, actor=ctx.actor, uow=ctx.container.uow(), clock=ctx.container.clock)
    except DomainError as error:
        return await _back(ctx, topup["payment_id"], topup, status=domain_status(error), error=error.message,
                           values={"retry_reason": reason})
    target = f"/admin/payments/{topup['payment_id']}" if topup["payment_id"] else f"/admin/topups/{topup['id']}"
    return ctx.redirect(target, "Top-up queued again; this page refreshes until the meter confirms it.")


async def resolve_c2b(ctx: Ctx, ref: str, action: str) -> Response:
    """A payment to an unknown account (listed on the overview): assign it to a meter, or record a refund."""
    reason, meter = text(ctx.form, "reason", limit=500), text(ctx.form, "meter", limit=40)
    try:
        await resolve_review(ref, reason, action=action, actor=ctx.actor, uow=ctx.container.uow(),
                             clock=ctx.container.clock, meter=meter or None)
    except DomainError as error:
        return ctx.redirect("/admin", f"Payment #{ref} not resolved: {error.message}")
    done = f"credited to meter {meter}" if action == "assign" else "recorded as refunded"
    return ctx.redirect("/admin", f"Payment #{ref} to an unknown account {done}.")


async def resolve(ctx: Ctx) -> Response:
    ref = ctx.request.path_params["ref"]
    action = text(ctx.form, "action", limit=20)
    if ref.isascii() and ref.isdigit() and action in RESOLUTIONS["c2b"]:
        return await resolve_c2b(ctx, ref, action)
    payment = await payment_detail(ctx.container.engine, ref)
    topup = None if payment else await topup_detail(ctx.container.engine, ref)
    if payment is None and topup is None:
        raise not_found("payment or top-up with that id")
    reason, action = text(ctx.form, "reason", limit=500), text(ctx.form, "action", limit=20)
    try:
        await resolve_review(ref, reason, action=action, actor=ctx.actor, uow=ctx.container.uow(),
                             clock=ctx.container.clock)
    except DomainError as error:
        payment_id = payment["id"] if payment else topup["payment_id"]
        return await _back(ctx, payment_id, topup, status=domain_status(error), error=error.message,
                           values={"resolve_reason": reason, "action": action})
    payment_id = payment["id"] if payment else topup["payment_id"]
    target = f"/admin/payments/{payment_id}" if payment_id else f"/admin/topups/{ref}"
    return ctx.redirect(target, f"Review resolved: {action}.")
