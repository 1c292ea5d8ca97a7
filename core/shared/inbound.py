"""Bytes from outside, before anything reads them: a capped body and the NUL rule. Framework-free so
that every entry room (web, ussd, bot) reads a request body the same way, from one copy."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable

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
    # No case to fold: `%00` has no letters, and JSON's escape is `\u` in lower case only (`\U0000` is
    # no escape: json.loads refuses it). Every request's path and query pass here (web/http.py:RefuseNul):
    # a loop, not any() over a generator, whose making and resuming cost more than the searches.
    for marker in markers:  # noqa: SIM110 (see above)
        if marker in raw:
            return True
    return False


# Deeper than any real body: json.loads recurses and fails (a 500) around a thousand levels.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_NESTING = re.compile(rb"[\[\]{}]")


def json_depth(raw: bytes | str) -> int:
    """How deeply arrays and objects nest in `raw`, counted without parsing (brackets in strings skipped)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    depth = deepest = 0
    for bracket in _JSON_NESTING.findall(_JSON_STRING.sub(b'""', data)):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest
