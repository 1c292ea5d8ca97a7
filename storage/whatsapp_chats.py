"""WhatsApp conversations: core.ports.WhatsAppChatStore over `whatsapp_chats`, `whatsapp_inbound` and
`whatsapp_statuses`.

As for Telegram chats, each call is one short transaction and a state is written back only if no other
message of the same number got there first (`version`). Incoming message ids are claimed with a
primary-key insert, so a delivery Meta repeats (to this replica or another) is handled once.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.dialogue.sessions import WhatsAppChat
from storage.tables import whatsapp_chats, whatsapp_inbound, whatsapp_statuses

_FIELDS = tuple(WhatsAppChat.__dataclass_fields__)


class SqlWhatsAppChatStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, wa_id: str) -> WhatsAppChat | None:
        query = sa.select(*(whatsapp_chats.c[name] for name in _FIELDS)).where(whatsapp_chats.c.wa_id == wa_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return WhatsAppChat(**row._mapping) if row else None

    async def claim_message(self, message_id: str, *, wa_id: str, at: datetime) -> bool:
        async with self.engine.begin() as conn:
            try:
                async with conn.begin_nested():
                    await conn.execute(whatsapp_inbound.insert().values(message_id=message_id, wa_id=wa_id,
                                                                        received_at=at))
            except IntegrityError:
                return False
            # The customer wrote: the 24-hour window opens (or stays open) from now.
            opened = await conn.execute(whatsapp_chats.update().where(whatsapp_chats.c.wa_id == wa_id).values(
                last_inbound_at=at))
            if opened.rowcount == 0:
                try:
                    async with conn.begin_nested():
                        await conn.execute(whatsapp_chats.insert().values(
                            wa_id=wa_id, state=None, version=0, last_inbound_at=at, created_at=at, updated_at=at))
                except IntegrityError:  # the same number's first two messages at once
                    await conn.execute(whatsapp_chats.update().where(whatsapp_chats.c.wa_id == wa_id).values(
                        last_inbound_at=at))
        return True

    async def recent_messages(self, wa_id: str, *, since: datetime) -> int:
        query = sa.select(sa.func.count()).select_from(whatsapp_inbound).where(
            whatsapp_inbound.c.wa_id == wa_id, whatsapp_inbound.c.received_at >= since)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    async def save(self, wa_id: str, *, state: dict, payment_id: str | None, expected_version: int,
                   now: datetime) -> bool:
        values = dict(state=state, version=expected_version + 1, updated_at=now)
        if payment_id is not None:  # else keep the last payment started here, for support
            values["payment_id"] = payment_id
        async with self.engine.begin() as conn:
            result = await conn.execute(whatsapp_chats.update().where(
                whatsapp_chats.c.wa_id == wa_id, whatsapp_chats.c.version == expected_version).values(**values))
            if result.rowcount == 1 or expected_version != 0:
                return result.rowcount == 1
            try:  # a chat with no row yet (claim_message normally makes it)
                async with conn.begin_nested():
                    await conn.execute(whatsapp_chats.insert().values(wa_id=wa_id, created_at=now, **values))
            except IntegrityError:
                return False
            return True

    async def record_status(self, *, message_id: str, wa_id: str, status: str, error: str | None,
                            at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(whatsapp_statuses.insert().values(
                message_id=message_id[:128], wa_id=wa_id[:20], status=status[:16],
                error=error[:255] if error else None, at=at))

    async def purge(self, *, before: datetime) -> None:
        """Message ids older than any retry Meta makes (it gives up after about a day)."""
        async with self.engine.begin() as conn:
            await conn.execute(whatsapp_inbound.delete().where(whatsapp_inbound.c.received_at < before))
