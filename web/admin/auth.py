"""Log in and log out. Throttled per username and per client address (the attempts are in the
database, so every replica counts the same); scrypt runs off the event loop."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from core.admin.auth import KEEP_LOGIN_ATTEMPTS, BadCredentials, Throttled, authenticate, verify_password
from web.admin import csrf
from web.admin.forms import FormError, read_form
from web.admin.site import SECURITY_HEADERS, AdminSite, Ctx
from web.http import client_address


def safe_next(target: str | None) -> str:
    """Only our own pages: an open redirect after login would lend our name to a phishing link."""
    if target and target.startswith("/admin") and "//" not in target and "\\" not in target:
        return target
    return "/admin"


def _login_page(site: AdminSite, session: dict, *, status: int = 200, error: str | None = None,
                username: str = "", next_url: str = "/admin") -> Response:
    flash = session.pop("f", None)
    response = site.html("admin/login.html", status, title="Log in", user=None, csrf=session["c"], error=error,
                         flash=flash, username=username, next_url=next_url)
    site.sessions.write(response, session)
    return response


async def login(site: AdminSite, request: Request) -> Response:
    if site.sessions is None:
        return site.html("admin/error.html", 503, title="Dashboard off", message=site.disabled_reason, user=None)
    session = site.sessions.read(request)
    if request.method == "GET":
        return _login_page(site, session, next_url=safe_next(request.query_params.get("next")))
    try:
        form = await read_form(request)
    except FormError as error:
        return _login_page(site, session, status=error.status, error=error.message)
    username, next_url = (form.get("username") or "").strip()[:80], safe_next(form.get("next"))
    if not csrf.valid(session.get("c"), form.get(csrf.FIELD)):
        return _login_page(site, site.sessions.fresh(), status=403, username=username, next_url=next_url,
                           error="The login form had expired. Please try again.")
    return await _check_password(request, site, username, form.get("password") or "", next_url)


async def _check_password(request: Request, site: AdminSite, username: str, password: str, next_url: str) -> Response:
    container = site.container
    now = container.clock.now()
    address = client_address(request, container.settings.trusted_proxy_list) or "unknown"
    attempts = container.login_attempts
    try:
        user = await authenticate(username, password, address=address, users=container.admin_users,
                                  attempts=attempts, now=now,
                                  verify=lambda p, h: asyncio.to_thread(verify_password, p, h))
    except Throttled as error:
        return _login_page(site, site.sessions.fresh(), status=429, error=error.message, username=username,
                           next_url=next_url)
    except BadCredentials as error:
        return _login_page(site, site.sessions.fresh(), status=401, error=error.message, username=username,
                           next_url=next_url)
    await attempts.prune(before=now - KEEP_LOGIN_ATTEMPTS)  # the sweep prunes too
    response = RedirectResponse(next_url, status_code=303, headers=SECURITY_HEADERS)
    # A new session: fixation is moot.
    site.sessions.write(response, site.sessions.fresh(user.username, user.session_gen))
    return response


async def logout(ctx: Ctx) -> Response:
    # Ends this user's sessions server-side (in every browser): a copy of the cookie is worth nothing now.
    await ctx.container.admin_users.end_sessions(ctx.user.username)
    response = RedirectResponse("/admin/login", status_code=303, headers=SECURITY_HEADERS)
    ctx.site.sessions.write(response, {**ctx.site.sessions.fresh(), "f": "You are logged out."})
    return response
