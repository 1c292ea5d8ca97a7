"""The unit of work: one connection, one transaction, repositories bound to it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.db import autocommit_engine, one_statement
from storage.inbox import GroupCommitInbox
from storage.job_queue import SqlJobQueue
from storage.repositories import (
    SqlAuditLog,
    SqlCallbackRepository,
    SqlMeterRepository,
    SqlNotificationRepository,
    SqlPaymentRepository,
    SqlTenantRepository,
    SqlTopUpRepository,
)
from storage.usage import SqlUsageRepository


class SqlUnitOfWork:
    """`async with uow:` begins a transaction; leaving without `commit()` rolls it back.

    Re-enterable one at a time: a service may open several short transactions on the same object,
    so that no transaction stays open across a network call.
    """

    def __init__(self, engine: AsyncEngine, inbox: GroupCommitInbox | None = None) -> None:
        self.engine = engine
        self.single_writer = engine.dialect.name == "sqlite"  # every transaction BEGIN IMMEDIATE (storage/db.py)
        self.inbox = inbox  # the process's group commit for raw callbacks (None: one statement each)
        self.conn: AsyncConnection | None = None
        self._autocommit = False

    def autocommit(self) -> SqlUnitOfWork:
        """The next `async with` opens no transaction: each statement commits on its own (see
        storage.db.autocommit_engine)."""
        self._autocommit = True
        return self

    async def __aenter__(self) -> SqlUnitOfWork:
        if self.conn is not None:
            raise RuntimeError("unit of work is already open")
        plain, self._autocommit = self._autocommit, False
        if plain:
            self.conn = await autocommit_engine(self.engine).connect()
        else:
            self.conn = await self.engine.connect()
            await self.conn.begin()
        self.meters = SqlMeterRepository(self.conn)
        self.tenants = SqlTenantRepository(self.conn)
        self.payments = SqlPaymentRepository(self.conn)
        self.callbacks = SqlCallbackRepository(self.conn)
        self.topups = SqlTopUpRepository(self.conn)
        self.jobs = SqlJobQueue(self.conn)
        self.notifications = SqlNotificationRepository(self.conn)
        self.audit = SqlAuditLog(self.conn)
        self.usage = SqlUsageRepository(self.conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn, self.conn = self.conn, None
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()

    async def commit(self) -> None:
        await self.conn.commit()

    async def keep_callback(self, *, body: str, source: str | None, received_at: datetime, outcome: str = "received",
                            checkout_request_id: str | None = None) -> int:
        if self.inbox is not None:
            return await self.inbox.keep(body=body, source=source, received_at=received_at, outcome=outcome,
                                         checkout_request_id=checkout_request_id)
        async with one_statement(self.engine) as conn:  # autocommit: durable once it returns
            return await SqlCallbackRepository(conn).add(body=body, source=source, received_at=received_at,
                                                         outcome=outcome, checkout_request_id=checkout_request_id)

    async def rollback(self) -> None:
        await self.conn.rollback()
