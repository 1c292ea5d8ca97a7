"""Row <-> dataclass conversion for the repositories."""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")


def to_row(obj: Any, table: sa.Table) -> dict[str, Any]:
    row = {}
    for f in dataclasses.fields(obj):
        if f.name in table.c:
            value = getattr(obj, f.name)
            row[f.name] = value.value if isinstance(value, enum.Enum) else value
    return row


def from_row(cls: type[T], row: sa.Row | None, **converters: Any) -> T | None:
    if row is None:
        return None
    names = _field_names(cls)
    values = {k: v for k, v in row._mapping.items() if k in names}
    for name, convert in converters.items():
        if values.get(name) is not None:
            values[name] = convert(values[name])
    return cls(**values)


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


# Statements of the hot paths, built once. SQLAlchemy caches a statement's compiled SQL under its cache
# key, but computes that key (a walk of the whole statement) for every new statement object, and
# building one (`.values(**row)`, `.where(col == value)`) costs as much again: about half a millisecond
# of the event loop per statement for a 20-column row. A statement built once with bind parameters has
# its key memoised; the values go in as execute() parameters.

@functools.cache
def update_by_id(table: sa.Table) -> sa.Update:
    """UPDATE table SET <the parameters' columns> WHERE id = :row_id (execute with {"row_id": ..., **row})."""
    return table.update().where(table.c.id == sa.bindparam("row_id"))


@functools.cache
def insert_or_nothing(table: sa.Table, dialect: str) -> sa.Insert:
    """INSERT … ON CONFLICT DO NOTHING on every unique index (execute with the row)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).on_conflict_do_nothing()


@functools.cache
def select_by(table: sa.Table, column: str, *, for_update: bool = False) -> sa.Select:
    """SELECT * FROM table WHERE column = :value [FOR UPDATE]."""
    query = sa.select(table).where(table.c[column] == sa.bindparam("value"))
    return query.with_for_update() if for_update else query
