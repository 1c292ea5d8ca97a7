"""Alembic environment: async engines (aiosqlite, asyncpg), URL from the caller or DATABASE_URL."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from storage.db import DEFAULT_DATABASE_URL, create_engine, normalize_url
from storage.tables import metadata

config = context.config
MIGRATION_LOCK_KEY = 7_201_112_012  # any constant; the same in every replica
target_metadata = metadata


def _url() -> str:
    import os

    return normalize_url(config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Several replicas may start together: one migrates, the others wait here and then find
                # the database at head. Released at commit. (SQLite: BEGIN IMMEDIATE already serialises.)
                await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
