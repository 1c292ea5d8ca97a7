"""One JSON POST to a chat service's HTTP API (Telegram's Bot API, Meta's WhatsApp Cloud API)."""

from __future__ import annotations

from typing import Any

import httpx

from core.shared.errors import UpstreamError


async def post_json(client: httpx.AsyncClient | None, url: str, payload: dict[str, Any], *, service: str, code: str,
                    timeout_s: float, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, the answer's JSON object). UpstreamError when the service cannot be reached (transient;
    only the error's type name is kept, since its text may hold the URL and so a token) or answers something
    that is not a JSON object (transient on a 5xx). Without `client`, one is made for this call."""
    http = client or httpx.AsyncClient()
    try:
        response = await http.post(url, json=payload, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise UpstreamError(f"{service} unreachable ({type(error).__name__})", code=f"{code}_network",
                            transient=True) from None
    finally:
        if client is None:
            await http.aclose()
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise UpstreamError(f"{service} answered HTTP {response.status_code} without JSON", code=f"{code}_bad_answer",
                            transient=response.status_code >= 500)
    return response.status_code, answer
