"""Tell the payer what happened: a receipt when the meter is credited, an honest message otherwise.

Every message is recorded (`notifications`) whatever the channel, so an operator can see what a
tenant was told. With no SMS gateway configured the message is recorded as `skipped` and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from core.errors import UpstreamError
from core.money import format_kes
from core.phone import mask_phone
from core.ports import Clock, SmsSender, UnitOfWork

log = logging.getLogger("lipameter.notify")

FAILURE_REASONS = {
    "1032": "you cancelled the M-Pesa prompt",
    "1037": "your phone could not be reached",
    "2001": "the M-Pesa PIN was wrong",
    "1": "your M-Pesa balance was not enough",
    "1019": "the prompt expired",
    "1036": "the prompt timed out",
}


@dataclass(frozen=True)
class Message:
    phone: str
    text: str
    payment_id: str | None
    topup_id: str | None


def _balance_text(balance: Decimal | None, profile_money: bool) -> str:
    if balance is None:
        return ""
    return f" New balance {format_kes(balance)}." if profile_money else f" New balance {balance.normalize():f} kWh."


def _units_text(units: Decimal | None, money: bool) -> str:
    if units is None:
        return ""
    return "" if money else f" ({units.normalize():f} kWh)"


async def compose(event: dict, *, uow: UnitOfWork) -> Message | None:
    """The message for an event, or None when nobody is to be told (a manual credit, say)."""
    async with uow:
        topup = await uow.topups.get(event["topup_id"]) if event.get("topup_id") else None
        payment_id = event.get("payment_id") or (topup.payment_id if topup else None)
        payment = await uow.payments.get(payment_id) if payment_id else None
        if payment is None:
            return None
        meter = await uow.meters.get(payment.meter_id)
    meter_label = f"meter {meter.number}"
    receipt = f" (M-Pesa {payment.mpesa_receipt})" if payment.mpesa_receipt else ""
    paid = format_kes(payment.amount)
    kind = event["event"]
    if kind == "payment_failed":
        why = FAILURE_REASONS.get(payment.result_code or "", (payment.result_desc or "M-Pesa declined it").rstrip("."))
        text = f"LipaMeter: your payment of {paid} for {meter_label} did not go through: {why}. No money was taken. Please try again."
    elif kind == "topup_applied":
        # A money meter is credited the KES paid; an energy meter is credited kWh.
        money = topup.units_added == topup.amount
        text = (f"LipaMeter: {paid}{receipt} received. Meter {meter.number} credited"
                f"{_units_text(topup.units_added, money)}.{_balance_text(topup.balance_after, money)}")
    elif kind == "topup_delayed":
        text = (f"LipaMeter: {paid}{receipt} received. Meter {meter.number} is not responding, so the credit is delayed. "
                "We keep trying and will SMS you when it is done.")
    elif kind in ("topup_failed", "topup_review"):
        text = (f"LipaMeter: {paid}{receipt} received, but we could not credit {meter_label} yet. "
                "Your landlord has been alerted and will credit it. Keep this SMS as proof.")
    else:
        return None
    return Message(payment.phone, text, payment.id, topup.id if topup else None)


async def notify(event: dict, *, uow: UnitOfWork, sms: SmsSender | None, clock: Clock) -> str:
    message = await compose(event, uow=uow)
    if message is None:
        return "nobody"
    status, error, channel = "sent", None, "sms"
    if sms is None:
        status, channel = "skipped", "log"
        log.info("SMS off; would tell %s: %s", mask_phone(message.phone), message.text)
    else:
        try:
            await sms.send(message.phone, message.text)
        except UpstreamError as failure:
            if failure.transient:
                raise  # the job retries with backoff
            status, error = "failed", failure.message
            log.warning("SMS to %s refused: %s", mask_phone(message.phone), failure.message)
    async with uow:
        await uow.notifications.add(at=clock.now(), channel=channel, event=event["event"],
                                    recipient=mask_phone(message.phone), payment_id=message.payment_id,
                                    topup_id=message.topup_id, message=message.text, status=status, error=error)
        await uow.commit()
    return status
