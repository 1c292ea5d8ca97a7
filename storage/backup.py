"""Backups of the books. SQLite: the online backup API (a consistent copy while the app writes).
PostgreSQL: `pg_dump` in its custom format and `pg_restore`, with credentials passed in the environment,
never on the command line (where `ps` would show them)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.db import is_sqlite, normalize_url


class BackupError(RuntimeError):
    pass


def backup(database_url: str, target: Path) -> None:
    url = normalize_url(database_url)
    if is_sqlite(url):
        _sqlite_backup(_sqlite_path(url), target)
    else:
        _run(["pg_dump", "--format=custom", "--no-owner", "--file", str(target)], url)


def restore(database_url: str, source: Path) -> None:
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    url = normalize_url(database_url)
    if is_sqlite(url):
        _sqlite_backup(source, _sqlite_path(url))
    else:
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", str(source)], url,
             database_flag=True)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(database)


def _sqlite_backup(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupError(f"{source}: no such database file")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as reader, sqlite3.connect(partial) as writer:
        reader.backup(writer)  # page by page, consistent even while the app writes (WAL)
    for suffix in ("-wal", "-shm"):  # a restored file must not be read through a stale log
        Path(str(target) + suffix).unlink(missing_ok=True)
    os.replace(partial, target)


def _run(command: list[str], url: str, *, database_flag: bool = False) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} not found: install PostgreSQL's client tools (Debian: postgresql-client)")
    parsed = make_url(url)
    env = {**os.environ, "PGHOST": parsed.host or "localhost", "PGPORT": str(parsed.port or 5432),
           "PGUSER": parsed.username or "", "PGDATABASE": parsed.database or ""}
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    if database_flag:
        command = [*command[:-1], "--dbname", parsed.database or "", command[-1]]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # the exit status is read below
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip()[-500:]}")
