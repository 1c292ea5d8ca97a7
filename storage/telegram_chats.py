"""Telegram chats (the bot's conversation state) and Telegram accounts (which tenant a Telegram user is).

They implement core.ports.TelegramChatStore and TelegramAccounts with the rows of core.dialogue.sessions.
Like the USSD session store, each call is one short transaction, and a chat's state is written back only
if no other update got there first (`version`), so two replicas answering the same chat at once cannot
both act on one screen.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.dialogue.sessions import TelegramAccount, TelegramChat
from core.shared.ids import new_id
from storage.tables import telegram_chats, telegram_updates, tenants


class SqlTelegramChatStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, chat_id: int) -> TelegramChat | None:
        query = sa.select(*(telegram_chats.c[name] for name in TelegramChat.__dataclass_fields__)).where(
            telegram_chats.c.chat_id == chat_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return TelegramChat(**row._mapping) if row else None

    async def save(self, chat_id: int, *, user_id: int, state: dict, payment_id: str | None,
                   expected_version: int, now: datetime) -> bool:
        """Write the next state at `expected_version + 1` (0: the chat's first row). False: another
        update of this chat won. The live message is cleared; `set_message` records the new one."""
        values = dict(user_id=user_id, state=state, version=expected_version + 1, last_message_id=None,
                      payment_id=payment_id, updated_at=now)
        async with self.engine.begin() as conn:
            if expected_version == 0:
                try:
                    async with conn.begin_nested():
                        await conn.execute(telegram_chats.insert().values(chat_id=chat_id, created_at=now, **values))
                except IntegrityError:
                    return False
                return True
            if payment_id is None:
                del values["payment_id"]  # keep the last payment started here for support
            result = await conn.execute(telegram_chats.update().where(
                telegram_chats.c.chat_id == chat_id, telegram_chats.c.version == expected_version).values(**values))
            return result.rowcount == 1

    async def set_message(self, chat_id: int, *, version: int, message_id: int) -> None:
        """The message now carrying the live keyboard, unless a newer screen replaced it meanwhile."""
        async with self.engine.begin() as conn:
            await conn.execute(telegram_chats.update().where(
                telegram_chats.c.chat_id == chat_id, telegram_chats.c.version == version).values(
                last_message_id=message_id))


class SqlTelegramAccounts:
    """Tenants by Telegram user: `tenants.telegram_user_id` (unique) and `telegram_chat_id`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def find(self, user_id: int) -> TelegramAccount | None:
        query = sa.select(tenants.c.id, tenants.c.phone, tenants.c.name, tenants.c.language).where(
            tenants.c.telegram_user_id == user_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return TelegramAccount(row.id, row.phone, row.name, row.language) if row else None

    async def link(self, *, user_id: int, chat_id: int, phone: str, name: str, language: str,
                   now: datetime) -> TelegramAccount:
        """The tenant with `phone` (created if new) is now this Telegram user. Telegram vouched for the
        phone (a contact shared by its owner), so a user or phone linked before moves over."""
        for attempt in range(2):
            try:
                return await self._link_once(user_id=user_id, chat_id=chat_id, phone=phone, name=name,
                                             language=language, now=now)
            except IntegrityError:
                if attempt:  # the same phone linked twice at once: the second try finds the first's row
                    raise
        raise AssertionError("unreachable")

    async def _link_once(self, *, user_id: int, chat_id: int, phone: str, name: str, language: str,
                         now: datetime) -> TelegramAccount:
        async with self.engine.begin() as conn:
            await conn.execute(tenants.update().where(
                tenants.c.telegram_user_id == user_id, tenants.c.phone != phone).values(
                telegram_user_id=None, telegram_chat_id=None))
            row = (await conn.execute(sa.select(tenants.c.id, tenants.c.name, tenants.c.language).where(
                tenants.c.phone == phone))).first()
            if row is None:
                tenant_id, name = new_id(), name[:120]
                await conn.execute(tenants.insert().values(
                    id=tenant_id, phone=phone, name=name, language=language, telegram_user_id=user_id,
                    telegram_chat_id=chat_id, created_at=now))
                return TelegramAccount(tenant_id, phone, name, language)
            values = dict(telegram_user_id=user_id, telegram_chat_id=chat_id)
            if not row.name:  # a landlord's spelling of the name wins; Telegram's only fills a blank
                values["name"] = name[:120]
            await conn.execute(tenants.update().where(tenants.c.id == row.id).values(**values))
            return TelegramAccount(row.id, phone, row.name or name[:120], row.language)


class SqlTelegramUpdates:
    """The update_ids already taken (core.ports.TelegramUpdateLog): one insert per update, so of two
    replicas given the same update (Telegram's retry, a backlog re-sent) exactly one wins."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def first_time(self, update_id: int, *, at: datetime) -> bool:
        async with self.engine.begin() as conn:
            try:
                async with conn.begin_nested():
                    await conn.execute(telegram_updates.insert().values(update_id=update_id, seen_at=at))
            except IntegrityError:
                return False
        return True

    async def prune(self, *, before: datetime) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(telegram_updates.delete().where(telegram_updates.c.seen_at < before))
            return result.rowcount
