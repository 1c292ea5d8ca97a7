"""Row <-> dataclass conversion for the repositories."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, TypeVar

import sqlalchemy as sa

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
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in row._mapping.items() if k in names}
    for name, convert in converters.items():
        if values.get(name) is not None:
            values[name] = convert(values[name])
    return cls(**values)
