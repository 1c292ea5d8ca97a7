"""Bytes from outside, before anything reads them: a capped body and the NUL rule. Framework-free so
that every entry room (web, ussd, bot) reads a request body the same way, from one copy."""

from __future__ import annotations

from typing import AsyncIterable

# PostgreSQL refuses NUL in text, so a NUL is refused (or dropped) at the edge, never sent to a query.
# It arrives raw, JSON-escaped or URL-encoded; which of these can occur depends on the body's format.
NUL_IN_JSON = (b"\x00", b"\\u0000")
NUL_IN_FORM = (b"\x00", b"%00")
NUL_ANYWHERE = (b"\x00", b"\\u0000", b"%00")


class TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


async def read_capped(chunks: AsyncIterable[bytes], limit: int, *, declared: str | None = None) -> bytes:
    """The whole body, refusing (TooLarge) more than `limit` bytes whatever Content-Length (`declared`) claims."""
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge(limit)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


def has_nul(raw: bytes, markers: tuple[bytes, ...] = NUL_ANYWHERE) -> bool:
    lowered = raw.lower()
    return any(marker in lowered for marker in markers)
