"""Tell the landlord when the books need a person: a violation, or a review item that appeared since the
last message. At most one message an hour (`ALERT_GAP`), across every worker: the message is recorded in
`notifications` (event `landlord_alert`) under a lock before it is sent, so a second worker running the
same audit sees it and stays quiet. The text summarises (counts and the first few subjects) and never
carries a phone number. It goes by Telegram when the admin's phone is a tenant linked to the bot, else SMS.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from core.audit.checks import AuditReport
from core.audit.facts import ReviewItem
from core.ports import Clock, SmsSender, TelegramSender, UnitOfWork
from core.shared.errors import UpstreamError
from core.shared.phone import mask_phone

log = logging.getLogger("lipameter.audit")

ALERT_EVENT = "landlord_alert"
ALERT_GAP = timedelta(hours=1)
FIRST_FEW = 3
MAX_CHARS = 480  # notifications.message; an SMS of up to three parts


def _listed(subjects: list[str]) -> str:
    shown = "; ".join(subjects[:FIRST_FEW])
    return shown + (f"; +{len(subjects) - FIRST_FEW} more" if len(subjects) > FIRST_FEW else "")


def compose_alert(report: AuditReport, reviews: list[ReviewItem], *, last_told: datetime | None) -> str | None:
    """The summary, or None when there is nothing new to tell (no violation, no review since `last_told`)."""
    new = [item for item in reviews if last_told is None or item.since > last_told]
    violations = report.violations
    if not violations and not new:
        return None
    parts = []
    if violations:
        parts.append(f"{len(violations)} violation(s): " + _listed([f"{v.check} {v.subject}" for v in violations]))
    if new:
        parts.append(f"{len(new)} new review(s): " + _listed([item.subject for item in new]))
    open_reviews = len(reviews)
    tail = f" {open_reviews} review(s) open." if open_reviews != len(new) else ""
    text = "LipaMeter: " + ". ".join(parts) + "." + tail + " Details: lipameter audit."
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 1] + "…"


async def tell_landlord(report: AuditReport, reviews: list[ReviewItem], *, phone: str, uow: UnitOfWork,
                        sms: SmsSender | None, telegram: TelegramSender | None, clock: Clock) -> str:
    """Returns what happened: "nothing" (nothing new), "quiet" (told less than an hour ago), or the
    recorded status of the message ("sent", "failed", "skipped" when no channel is configured)."""
    now = clock.now()
    async with uow:
        await uow.notifications.lock_alerts()  # one worker at a time decides and records
        last = await uow.notifications.last_alert_at(ALERT_EVENT)
        text = compose_alert(report, reviews, last_told=last)
        if text is None:
            return "nothing"
        if last is not None and now - last < ALERT_GAP:
            return "quiet"
        tenant = await uow.tenants.get_by_phone(phone)
        chat_id = tenant.telegram_chat_id if tenant is not None else None
        alert_id = await uow.notifications.start_alert(at=now, event=ALERT_EVENT, recipient=mask_phone(phone),
                                                       message=text)
        await uow.commit()
    channel, status, error, provider_id = await _deliver(text, phone=phone, chat_id=chat_id, sms=sms, telegram=telegram)
    async with uow:
        await uow.notifications.finish_alert(alert_id, channel=channel, status=status, error=error,
                                             provider_id=provider_id)
        await uow.commit()
    log.warning("landlord alert (%s via %s to %s): %s", status, channel, mask_phone(phone), text)
    return status


async def _deliver(text: str, *, phone: str, chat_id: int | None, sms: SmsSender | None,
                   telegram: TelegramSender | None) -> tuple[str, str, str | None, str | None]:
    """(channel, status, error, the SMS gateway's message id: its delivery report's key). A failure is
    recorded, not raised: a failed message does not count toward the hour, so the next audit run tries again."""
    if chat_id is not None and telegram is not None:
        try:
            await telegram.send(chat_id, text)
            return "telegram", "sent", None, None
        except UpstreamError as failure:
            log.info("Telegram did not take the landlord alert (%s); sending it by SMS", failure.message)
    if sms is None:
        return "log", "skipped", None, None
    try:
        accepted = await sms.send(phone, text)
    except UpstreamError as failure:
        return "sms", "failed", failure.message[:255], None
    return "sms", "sent", None, accepted.message_id if accepted is not None else None
