"""Tell the payer what happened: a receipt when the meter is credited, an honest message otherwise.

Every message is recorded (`notifications`) whatever the channel, so an operator can see what a
tenant was told. With no SMS gateway configured the message is recorded as `skipped` and logged.
Payments started in Telegram are answered in the tenant's linked chat; when Telegram cannot deliver
(the user blocked the bot, the chat is gone) the same message goes by SMS, and both attempts are recorded.
Payments started in WhatsApp are answered there: inside Meta's 24-hour customer-service window (the
tenant wrote to us less than a day ago) as a normal message, outside it through the approved receipt
template; when neither is possible, or WhatsApp refuses, by SMS.
A C2B payment (Paybill, Till) tells the tenants linked to the meter and the payer when M-Pesa shows the number.
A payment made from another M-Pesa number (a relative paying) is told to both: the tenant who asked, as
above, and the number that paid, by SMS.
An SMS keeps Africa's Talking's message id (`provider_id`) for its delivery report; one the recipient opted
out of is resent by Telegram or WhatsApp (`resend`, queued by core/notify/delivery.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from core.jobs.kinds import Notify, NotifyEvent
from core.notify.texts import text
from core.payments.model import Channel
from core.ports import (
    Blocked,
    Clock,
    OutsideWindow,
    SmsSender,
    TelegramSender,
    UnitOfWork,
    WhatsAppChatStore,
    WhatsAppSender,
)
from core.shared.errors import UpstreamError
from core.shared.money import format_kes
from core.shared.phone import mask_phone
from core.usage.derive import days_left
from core.usage.service import summarise
from core.usage.texts import days_left_text

log = logging.getLogger("lipameter.notify")

# Meta counts the window from the customer's last message; a receipt sent in its last minutes may
# arrive after it closed, so those go by template.
WINDOW = timedelta(hours=24)
WINDOW_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class WhatsAppReceipts:
    """What a WhatsApp receipt needs: the sender, the chats (for the window) and the approved template."""

    sender: WhatsAppSender
    chats: WhatsAppChatStore
    template: str = ""  # an approved template with one body parameter ({{1}}: the receipt); "" none
    template_language: str = "en"


@dataclass(frozen=True)
class Message:
    phone: str
    text: str
    payment_id: str | None
    topup_id: str | None
    chat_id: int | None = None  # the tenant's linked Telegram chat, for payments started in Telegram
    payer: str | None = None  # the other M-Pesa number that paid, when it is not the tenant's own
    whatsapp: bool = False  # the payment was started in WhatsApp: answer there (wa_id = phone)


def _balance_text(language: str, balance: Decimal | None, money: bool) -> str:
    if balance is None:
        return ""
    if money:
        return text(language, "balance_money").format(value=format_kes(balance))
    return text(language, "balance_energy").format(value=f"{balance.normalize():f}")


def _units_text(language: str, units: Decimal | None, money: bool) -> str:
    if units is None or money:
        return ""
    return text(language, "units_energy").format(value=f"{units.normalize():f}")


async def _composed(event: Notify, uow: UnitOfWork) -> list[Message]:
    """Who is told, and what, read in the caller's unit of work. A payment we started tells the tenant who
    asked (and the other number that paid, when it was not theirs). A C2B payment (Paybill, Till) tells the
    tenants linked to the meter, each in their language and channel, and the payer's phone when M-Pesa
    gave it in clear."""
    topup = await uow.topups.get(event.topup_id) if event.topup_id else None
    payment_id = event.payment_id or (topup.payment_id if topup else None)
    payment = await uow.payments.get(payment_id) if payment_id else None
    if payment is None:
        return []
    meter = await uow.meters.get(payment.meter_id)
    # The tenant who started it (paid from their own phone or from another number), else the payer.
    tenant = (await uow.tenants.get(payment.tenant_id) if payment.tenant_id else None) \
        or (await uow.tenants.get_by_phone(payment.phone) if payment.phone else None)
    linked = await uow.tenants.linked_to(meter.id) if payment.channel == Channel.C2B else []
    days = await _days_left_after(uow, meter, topup) if event.event is NotifyEvent.TOPUP_APPLIED else None
    kind = "topup_failed" if event.event is NotifyEvent.TOPUP_REVIEW else event.event.value
    if kind not in ("payment_failed", "topup_applied", "topup_delayed", "topup_failed"):
        return []
    topup_id = topup.id if topup else None
    if payment.channel == Channel.C2B:
        return _c2b_messages(kind, payment, meter, topup, tenant, linked, days)
    lang = (tenant.language if tenant else None) or "en"
    chat_id = tenant.telegram_chat_id if tenant is not None and payment.channel == Channel.TELEGRAM else None
    payer = payment.phone if tenant is not None and tenant.phone != payment.phone else None
    return [Message(tenant.phone if payer else payment.phone, _body(lang, kind, payment, meter, topup, days), payment.id,
                    topup_id, chat_id, payer, whatsapp=payment.channel == Channel.WHATSAPP)]


async def _days_left_after(uow: UnitOfWork, meter, topup) -> int | None:
    """How long the new balance lasts at the meter's usual use (None under 3 days of readings)."""
    if topup is None or topup.balance_after is None:
        return None
    # The meter's own unit: balance drops are consumption whatever it is (no profile needed for that).
    summary = await summarise(uow, meter, None, now=topup.applied_at or topup.updated_at)
    return days_left(topup.balance_after, summary.average)


def _c2b_messages(kind: str, payment, meter, topup, tenant, linked, days: int | None = None) -> list[Message]:
    topup_id = topup.id if topup else None
    messages = [Message(t.phone, _body(t.language or "en", kind, payment, meter, topup, days), payment.id, topup_id,
                        t.telegram_chat_id) for t in linked]
    if payment.phone and payment.phone not in {t.phone for t in linked}:
        lang = (tenant.language if tenant else None) or "en"
        messages.append(Message(payment.phone, _body(lang, kind, payment, meter, topup, days), payment.id, topup_id))
    return messages


def _body(lang: str, kind: str, payment, meter, topup, days: int | None = None) -> str:
    paid = payment.paid_amount if payment.channel == Channel.C2B and payment.paid_amount else payment.amount
    fields = dict(paid=format_kes(paid), meter=meter.number,
                  receipt=f" (M-Pesa {payment.mpesa_receipt})" if payment.mpesa_receipt else "")
    if kind == "payment_failed":
        reasons = text(lang, "why")
        fields["why"] = reasons.get(payment.result_code or "", reasons[""])
    if kind == "topup_applied":
        # A money meter is credited the KES paid; an energy meter is credited kWh.
        money = topup.units_added == topup.amount
        fields.update(units=_units_text(lang, topup.units_added, money),
                      balance=_balance_text(lang, topup.balance_after, money))
        if fields["balance"] and days is not None:
            fields["balance"] += text(lang, "days_left").format(days=days_left_text(lang, days))
    return text(lang, kind).format(**fields)


async def notify(event: Notify, *, uow: UnitOfWork, sms: SmsSender | None, clock: Clock,
                 telegram: TelegramSender | None = None, whatsapp: WhatsAppReceipts | None = None) -> str:
    if event.resend_of is not None:
        return await resend(event, uow=uow, clock=clock, telegram=telegram, whatsapp=whatsapp)
    # A C2B receipt goes to every tenant linked to the meter: when one SMS fails for now, the job runs
    # again, and those already told must not get it twice (read with the messages, in one unit of work).
    # Rows keep the phone masked, so two phones can share a key: counted, each told row stands for one.
    async with uow:
        messages = await _composed(event, uow)
        payment_id = messages[0].payment_id if messages else None
        told = Counter(await uow.notifications.told(payment_id, event.event.value) if payment_id else ())
    if not messages:
        return "nobody"
    statuses = []
    for message in messages:
        if _already_told(told, message.phone, message.text):
            statuses.append("sent")
        else:
            statuses.append(await _tell(event, message, uow=uow, sms=sms, clock=clock, telegram=telegram,
                                        whatsapp=whatsapp))
        if message.payer is not None and not _already_told(told, message.payer, message.text):
            await _tell_payer(event, message, uow=uow, sms=sms, clock=clock)
    return "sent" if "sent" in statuses else statuses[0]


def _already_told(told: Counter, phone: str, text: str) -> bool:
    key = (mask_phone(phone), text)
    if told[key] <= 0:
        return False
    told[key] -= 1
    return True


async def _tell_payer(event: Notify, message: Message, *, uow: UnitOfWork, sms: SmsSender | None,
                      clock: Clock) -> None:
    """The other number that paid gets the same message by SMS. Once: a transient failure is recorded,
    not retried, so the tenant's own message is never sent twice by a job retry."""
    to_payer = Message(message.payer, message.text, message.payment_id, message.topup_id)
    try:
        await _tell(event, to_payer, uow=uow, sms=sms, clock=clock, telegram=None)
    except UpstreamError as failure:
        log.warning("SMS to the payer %s not sent: %s", mask_phone(message.payer), failure.message)
        await _record(event, to_payer, channel="sms", status="failed", error=failure.message[:255], uow=uow,
                      clock=clock)


async def _tell(event: Notify, message: Message, *, uow: UnitOfWork, sms: SmsSender | None, clock: Clock,
                telegram: TelegramSender | None, whatsapp: WhatsAppReceipts | None = None) -> str:
    if message.whatsapp and whatsapp is not None and await _by_whatsapp(
            event, message, uow=uow, whatsapp=whatsapp, clock=clock):
        return "sent"
    if message.chat_id is not None and telegram is not None and await _by_telegram(
            event, message, uow=uow, telegram=telegram, clock=clock):
        return "sent"
    status, error, channel, provider_id = "sent", None, "sms", None
    if sms is None:
        status, channel = "skipped", "log"
        log.info("SMS off; would tell %s: %s", mask_phone(message.phone), message.text)
    else:
        try:
            accepted = await sms.send(message.phone, message.text)
        except UpstreamError as failure:
            if failure.transient:
                raise  # the job retries with backoff
            status, error = "failed", failure.message
            log.warning("SMS to %s refused: %s", mask_phone(message.phone), failure.message)
        else:
            # Kept so that the delivery report (core/notify/delivery.py) finds this row.
            provider_id = accepted.message_id if accepted is not None else None
    await _record(event, message, channel=channel, status=status, error=error, uow=uow, clock=clock,
                  provider_id=provider_id)
    return status


async def _by_telegram(event: Notify, message: Message, *, uow: UnitOfWork, telegram: TelegramSender,
                       clock: Clock) -> bool:
    """True when Telegram took the message. False when it refused for good (the user blocked the bot,
    the chat is gone): the caller sends an SMS instead. A transient failure raises, so the job retries."""
    try:
        await telegram.send(message.chat_id, message.text)
    except UpstreamError as failure:
        if failure.transient:
            raise
        log.info("Telegram %s the message to %s (%s); sending it by SMS",
                 "blocked" if isinstance(failure, Blocked) else "refused", mask_phone(message.phone), failure.message)
        await _record(event, message, channel="telegram", status="failed", error=failure.message[:255], uow=uow,
                      clock=clock)
        return False
    await _record(event, message, channel="telegram", status="sent", error=None, uow=uow, clock=clock)
    return True


async def _by_whatsapp(event: Notify, message: Message, *, uow: UnitOfWork, whatsapp: WhatsAppReceipts,
                       clock: Clock) -> bool:
    """True when WhatsApp took the receipt (as text inside the window, else as the template). False when
    neither is possible or WhatsApp refused for good: the caller sends an SMS. Transient failures raise."""
    chat = await whatsapp.chats.get(message.phone)
    opened = chat.last_inbound_at if chat else None
    if opened is not None and clock.now() - opened < WINDOW - WINDOW_MARGIN:
        try:
            await whatsapp.sender.send_text(message.phone, message.text)
        except OutsideWindow:
            pass  # Meta's clock says the window closed: the template may still go
        except UpstreamError as failure:
            if failure.transient:
                raise
            return await _whatsapp_failed(event, message, failure.message, uow=uow, clock=clock)
        else:
            await _record(event, message, channel="whatsapp", status="sent", error=None, uow=uow, clock=clock)
            return True
    if not whatsapp.template:
        return await _whatsapp_failed(event, message, "outside the 24-hour window and no receipt template",
                                      uow=uow, clock=clock)
    try:
        await whatsapp.sender.send_template(message.phone, whatsapp.template, whatsapp.template_language,
                                            [message.text])
    except UpstreamError as failure:
        if failure.transient:
            raise
        return await _whatsapp_failed(event, message, failure.message, uow=uow, clock=clock)
    # Recorded apart from free-form messages: templates are what Meta charges for.
    await _record(event, message, channel="whatsapp_tmpl", status="sent", error=None, uow=uow, clock=clock)
    return True


async def _whatsapp_failed(event: Notify, message: Message, why: str, *, uow: UnitOfWork, clock: Clock) -> bool:
    log.info("WhatsApp did not take the message to %s (%s); sending it by SMS", mask_phone(message.phone), why)
    await _record(event, message, channel="whatsapp", status="failed", error=why[:255], uow=uow, clock=clock)
    return False


async def _record(event: Notify, message: Message, *, channel: str, status: str, error: str | None, uow: UnitOfWork,
                  clock: Clock, provider_id: str | None = None) -> None:
    async with uow:
        await uow.notifications.add(at=clock.now(), channel=channel, event=event.event.value,
                                    recipient=mask_phone(message.phone), payment_id=message.payment_id,
                                    topup_id=message.topup_id, message=message.text, status=status, error=error,
                                    provider_id=provider_id)
        await uow.commit()


async def resend(event: Notify, *, uow: UnitOfWork, clock: Clock, telegram: TelegramSender | None,
                 whatsapp: WhatsAppReceipts | None) -> str:
    """The text of an SMS the recipient opted out of, sent to the tenant by `event.via` only. Never by SMS
    again; when that channel is gone too, the failure is recorded and the payment page shows both."""
    async with uow:
        notice = await uow.notifications.get(event.resend_of) if event.resend_of is not None else None
        tenant = await uow.tenants.get(event.tenant_id) if event.tenant_id else None
    if notice is None or tenant is None:
        log.warning("resend of notification %s to tenant %s: nothing to resend", event.resend_of, event.tenant_id)
        return "nobody"
    message = Message(tenant.phone, notice.message, notice.payment_id, notice.topup_id, tenant.telegram_chat_id,
                      whatsapp=True)
    if event.via == "telegram" and telegram is not None and message.chat_id is not None:
        sent = await _by_telegram(event, message, uow=uow, telegram=telegram, clock=clock)
    elif event.via == "whatsapp" and whatsapp is not None:
        sent = await _by_whatsapp(event, message, uow=uow, whatsapp=whatsapp, clock=clock)
    else:
        await _record(event, message, channel=event.via or "log", status="failed", uow=uow, clock=clock,
                      error=f"the SMS was refused (opted out) and {event.via or 'no other channel'} is not available")
        return "failed"
    return "sent" if sent else "failed"
