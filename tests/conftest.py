"""Shared fixtures: databases on SQLite and PostgreSQL, migrated by Alembic.

PostgreSQL tests run against LIPAMETER_TEST_POSTGRES_URL (default: the local server). They skip when it
is unreachable, unless LIPAMETER_REQUIRE_POSTGRES=1 (set by .ci/run), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid

import aiosqlite
import pytest
import sqlalchemy as sa

from storage.db import create_engine
from storage.migrate import upgrade
from storage.tables import metadata

PG_ADMIN_URL = os.environ.get("LIPAMETER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("LIPAMETER_REQUIRE_POSTGRES") == "1"


async def _pg_exec(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_url():
    name = f"lipameter_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    except Exception as error:  # no server: skip locally, fail in CI
        message = f"PostgreSQL unreachable at {PG_ADMIN_URL.split('@')[-1]}: {type(error).__name__}: {error}"
        if REQUIRE_PG:
            pytest.fail(message)
        pytest.skip(message)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    asyncio.run(_pg_exec(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def _truncate_pg(url: str) -> None:
    names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    asyncio.run(_pg_exec(url, f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path, sqlite_template):
    """A freshly migrated, empty database on each engine."""
    if request.param == "sqlite":
        path = tmp_path / "lipameter.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url = request.getfixturevalue("pg_url")
    _truncate_pg(url)
    return url


@pytest.fixture
async def engine(database_url):
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sqlite_trips(monkeypatch):
    """The functions queued to aiosqlite's thread, by name (each one trip there and back)."""
    counted: list[str] = []
    queue = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):
        counted.append(getattr(fn, "__name__", repr(fn)))
        return await queue(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return counted
