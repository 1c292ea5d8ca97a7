"""The dashboard session: a signed (itsdangerous), HttpOnly, SameSite cookie holding the username and
the CSRF token. It is re-issued with a fresh token at login and logout, so a session planted before
login is worth nothing after it. Roles are read from the database on every request, never the cookie, and
so is the user's session generation: logout, a new password or disabling the user raise it, and every
cookie issued before is refused although its signature is still good."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from web.admin import csrf

COOKIE = "lipameter_admin"
MAX_AGE_S = 12 * 3600  # a working day; then log in again


class SessionStore:
    def __init__(self, secret: str, *, secure: bool) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt="lipameter.admin.session")
        self.secure = secure

    def read(self, request: Request) -> dict:
        """The session, or a new anonymous one (with a CSRF token for the login form)."""
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data = self.serializer.loads(raw, max_age=MAX_AGE_S)
                if isinstance(data, dict) and isinstance(data.get("c"), str):
                    return data
            except BadSignature:  # also SignatureExpired
                pass
        return {"c": csrf.new_token(), "new": True}

    @staticmethod
    def fresh(username: str | None = None, generation: int = 0) -> dict:
        """`g` is the user's session generation at login: raising it server-side ends this session."""
        return {"u": username, "g": generation, "c": csrf.new_token()} if username else {"c": csrf.new_token()}

    def write(self, response: Response, session: dict) -> None:
        data = {key: value for key, value in session.items() if key != "new"}
        response.set_cookie(COOKIE, self.serializer.dumps(data), httponly=True, samesite="lax",
                            secure=self.secure, path="/admin")
