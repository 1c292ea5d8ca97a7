"""CSRF tokens: one random token per session, carried in the signed session cookie and echoed by
every form. A forged cross-site post cannot read the page, so it cannot know the token."""

from __future__ import annotations

import hmac
import secrets

FIELD = "csrf"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def valid(session_token: str | None, submitted: str | None) -> bool:
    if not session_token or not submitted:
        return False
    return hmac.compare_digest(session_token.encode(), submitted.encode())
