"""The dashboard's request plumbing: who is asking (session → user), may they (role, CSRF), and how a
page or an error is answered. Handlers get a `Ctx` and return a response."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from core.admin.model import AdminUser, Role
from core.admin.operator import Actor
from core.shared.errors import DomainError, NotFound
from web.admin import csrf
from web.admin.forms import FormError, read_form
from web.admin.sessions import SessionStore
from web.bootstrap import Container
from web.http import domain_status

log = logging.getLogger("lipameter.admin")

SECURITY_HEADERS = {
    # No script at all on these pages; forms post only to ourselves; never framed.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class AdminSite:
    env: Environment
    container: Container
    sessions: SessionStore | None  # None: SECRET_KEY is missing, the dashboard is off
    disabled_reason: str = ""

    def html(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(**context)
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


@dataclass
class Ctx:
    request: Request
    site: AdminSite
    container: Container
    user: AdminUser
    session: dict
    form: dict[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> Actor:
        return Actor(self.user.username)

    @property
    def can_edit(self) -> bool:
        return self.user.role is Role.ADMIN

    @property
    def query(self) -> dict[str, str]:
        return {key: value.strip() for key, value in self.request.query_params.items()}

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        flash = self.session.pop("f", None)
        response = self.site.html(template, status, user=self.user, csrf=self.session.get("c"),
                                  can_edit=self.can_edit, flash=flash, now=self.container.clock.now(),
                                  path=self.request.url.path, **context)
        if flash:
            self.site.sessions.write(response, self.session)
        return response

    def error(self, status: int, message: str) -> HTMLResponse:
        return self.render("admin/error.html", status, title=f"Error {status}", message=message)

    def redirect(self, url: str, flash: str | None = None) -> Response:
        response = RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)
        if flash:
            self.session["f"] = flash[:300]
            self.site.sessions.write(response, self.session)
        return response


Handler = Callable[[Ctx], Awaitable[Response]]


def guarded(site: AdminSite, handler: Handler, *, need: Role = Role.VIEWER,
            write: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """A page (GET, any role by default) or an action (POST: CSRF checked; admins only, as the routes say)."""

    async def endpoint(request: Request) -> Response:
        if site.sessions is None:
            return site.html("admin/error.html", 503, title="Dashboard off", message=site.disabled_reason,
                             user=None)
        session = site.sessions.read(request)
        user = await site.container.admin_users.get(session.get("u") or "") if session.get("u") else None
        if user is None or not user.active or session.get("g") != user.session_gen:  # revoked
            target = request.url.path if request.method == "GET" else "/admin"
            return RedirectResponse(f"/admin/login?next={quote(target)}", status_code=303, headers=SECURITY_HEADERS)
        ctx = Ctx(request=request, site=site, container=site.container, user=user, session=session)
        return await _run(ctx, handler, need=need, write=write)

    return endpoint


async def _run(ctx: Ctx, handler: Handler, *, need: Role, write: bool) -> Response:
    try:
        if write:
            ctx.form = await read_form(ctx.request)
            if not csrf.valid(ctx.session.get("c"), ctx.form.get(csrf.FIELD)):
                return ctx.error(403, "This form has expired or did not come from this dashboard. "
                                      "Go back, reload the page and try again.")
        if not ctx.user.role.may(need):
            return ctx.error(403, f"Your account ({ctx.user.role.value}) can look but not change anything.")
        return await handler(ctx)
    except FormError as error:
        return ctx.error(error.status, error.message)
    except NotFound as error:
        return ctx.error(404, error.message)
    except DomainError as error:
        return ctx.error(domain_status(error), error.message)


def not_found(what: str) -> NotFound:
    return NotFound(f"no {what} here: it may have been mistyped or never existed", code="not_found")
