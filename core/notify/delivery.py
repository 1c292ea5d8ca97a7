"""Africa's Talking SMS delivery reports: what became of each receipt after AT accepted it.

AT posts one form per message to the delivery report URL registered in its dashboard: `id` (the
messageId we stored when sending), `status`, `phoneNumber`, `networkCode`, `retryCount` and, only
with Rejected or Failed, `failureReason`. Interim statuses (Sent, Submitted, Buffered) may arrive
after the final one, so a final status is never overwritten by an interim one.

A receipt the recipient opted out of (`UserInBlackList`, the network's do-not-disturb list) is not
lost: when the tenant has a linked Telegram chat (or a WhatsApp chat inside Meta's 24-hour window)
a notify job resends the same text there. Sending happens in the worker, never in AT's request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from core.jobs.kinds import Notify, NotifyEvent, enqueue
from core.ports import Clock, UnitOfWork, WhatsAppChatStore
from core.shared.errors import InvalidInput
from core.shared.phone import mask_phone
from core.tenants.model import Tenant

log = logging.getLogger("lipameter.notify")

FINAL = frozenset({"Success", "Failed", "Rejected"})
INTERIM = frozenset({"Sent", "Submitted", "Buffered"})
STATUSES = FINAL | INTERIM
# AT's `failureReason` for a recipient on the blacklist ("UserInBlackList"; the send API says
# "UserInBlacklist"), and the do-not-disturb wording networks use. Compared without case or separators.
_OPTED_OUT = re.compile(r"userinblacklist|blacklist|donotdisturb|dnd", re.I)
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_RECEIPTS = {event.value for event in NotifyEvent}  # not the landlord's or low-balance alerts
WHATSAPP_WINDOW = timedelta(hours=24) - timedelta(minutes=5)  # as core/notify/service.py's window


class FallbackChannel:
    TELEGRAM = "telegram"
    WHATSAPP = "whatsapp"


@dataclass(frozen=True)
class DeliveryReport:
    message_id: str
    status: str
    phone: str  # as AT sent it (+2547…); only ever logged masked
    network_code: str = ""
    failure_reason: str = ""


def parse_report(form: Mapping[str, str]) -> DeliveryReport:
    """AT's form, checked. InvalidInput (a 400) for a missing or unreadable id or status."""
    message_id = (form.get("id") or "").strip()
    status = (form.get("status") or "").strip()
    if not _ID.match(message_id):
        raise InvalidInput("a delivery report needs the message `id`", code="invalid_report")
    if status not in STATUSES:
        raise InvalidInput(f"unknown delivery status {status[:20]!r}", code="invalid_report")
    reason = (form.get("failureReason") or "").strip()[:64] if status in ("Failed", "Rejected") else ""
    return DeliveryReport(message_id, status, (form.get("phoneNumber") or "").strip()[:20],
                          (form.get("networkCode") or "").strip()[:10], reason)


def opted_out(reason: str) -> bool:
    return bool(reason) and bool(_OPTED_OUT.search(re.sub(r"[\s_-]", "", reason)))


def fallback_channel(report: DeliveryReport, tenant: Tenant | None, *, whatsapp_open: bool) -> str | None:
    """Where an SMS the recipient opted out of goes instead: their Telegram chat, else WhatsApp inside
    the window, else nowhere (the rejection stays on the payment page for a person to see)."""
    if report.status not in ("Failed", "Rejected") or not opted_out(report.failure_reason) or tenant is None:
        return None
    if tenant.telegram_chat_id is not None:
        return FallbackChannel.TELEGRAM
    return FallbackChannel.WHATSAPP if whatsapp_open else None


def _phone(report: DeliveryReport) -> str:
    return re.sub(r"\D", "", report.phone)  # +254712345678 -> 254712345678, our stored form


async def record_delivery(report: DeliveryReport, *, uow: UnitOfWork, clock: Clock,
                          whatsapp_chats: WhatsAppChatStore | None = None) -> str:
    """Records the report on its notification. Answers the outcome: `unknown` (no SMS with this id),
    `stale` (an interim status after a final one), `recorded`, or `fallback_<channel>`."""
    now = clock.now()
    whatsapp_open = False
    if whatsapp_chats is not None and opted_out(report.failure_reason) and report.phone:
        chat = await whatsapp_chats.get(_phone(report))
        opened = chat.last_inbound_at if chat else None
        whatsapp_open = opened is not None and now - opened < WHATSAPP_WINDOW
    async with uow:
        notice = await uow.notifications.by_provider_id(report.message_id)
        if notice is None:
            log.info("delivery report for an SMS we did not send (id=%s, %s, to %s)",
                     report.message_id, report.status, mask_phone(report.phone))
            return "unknown"
        if notice.delivery_status in FINAL and (report.status in INTERIM or report.status == notice.delivery_status):
            return "stale"  # a late interim report, or AT repeating itself: the fallback went already
        await uow.notifications.set_delivery(notice.id, status=report.status, error=report.failure_reason or None,
                                             delivered_at=now if report.status == "Success" else None)
        outcome = "recorded"
        tenant = await uow.tenants.get_by_phone(_phone(report)) if report.phone else None
        channel = fallback_channel(report, tenant, whatsapp_open=whatsapp_open)
        if channel is not None and tenant is not None and notice.event in _RECEIPTS:
            await enqueue(uow.jobs, Notify(NotifyEvent(notice.event), notice.payment_id, notice.topup_id,
                                           resend_of=notice.id, via=channel, tenant_id=tenant.id))
            outcome = f"fallback_{channel}"
        await uow.commit()
    log.info("SMS %s to %s: %s%s (%s)", report.message_id, notice.recipient, report.status,
             f" ({report.failure_reason})" if report.failure_reason else "", outcome)
    return outcome
