"""The dashboard's URL map. `admin_routes(container)` is called once by web/app.py's create_app."""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from core.admin.model import Role
from web.admin import auth, meters, payments, reports, tenants
from web.admin.sessions import SessionStore
from web.admin.site import AdminSite, guarded
from web.admin.views import build_environment
from web.bootstrap import Container

STATIC = Path(__file__).resolve().parent.parent / "static"
MIN_SECRET_LEN = 16


def build_site(container: Container) -> AdminSite:
    settings = container.settings
    secret = settings.secret_key.get_secret_value()
    env = build_environment()
    if len(secret) < MIN_SECRET_LEN:
        return AdminSite(env, container, None, disabled_reason=f"The dashboard is off: set SECRET_KEY (at least "
                                                    f"{MIN_SECRET_LEN} random characters) to sign its sessions.")
    secure = settings.public_base_url.lower().startswith("https://")
    return AdminSite(env, container, SessionStore(secret, secure=secure))


def admin_routes(container: Container) -> list[BaseRoute]:
    site = build_site(container)
    view = functools.partial(guarded, site)  # GET pages: any logged-in user

    def act(handler, need: Role = Role.ADMIN):  # POST forms: CSRF, admins unless said otherwise
        return guarded(site, handler, need=need, write=True)

    def page(path: str, handler, **kw) -> Route:
        return Route(path, view(handler, **kw), methods=["GET"])

    def post(path: str, handler, **kw) -> Route:
        return Route(path, act(handler, **kw), methods=["POST"])

    return [
        Route("/admin/login", functools.partial(auth.login, site), methods=["GET", "POST"]),
        post("/admin/logout", auth.logout, need=Role.VIEWER),
        page("/admin", reports.overview_page),
        page("/admin/meters", meters.meters_page), post("/admin/meters", meters.add_meter),
        page("/admin/meters/{number}", meters.meter_page),
        post("/admin/meters/{number}/topup", meters.topup),
        post("/admin/meters/{number}/price", meters.set_price),
        post("/admin/meters/{number}/prepayment", meters.prepayment),
        post("/admin/meters/{number}/threshold", meters.set_threshold),
        page("/admin/meters/{number}/clear", meters.clear_confirm, need=Role.ADMIN),
        post("/admin/meters/{number}/clear", meters.clear),
        page("/admin/payments", payments.payments_page), page("/admin/payments.csv", payments.payments_csv),
        page("/admin/payments/{payment_id}", payments.payment_page),
        page("/admin/topups", payments.topups_page), page("/admin/topups/{topup_id}", payments.topup_page),
        post("/admin/topups/{topup_id}/retry", payments.retry),
        post("/admin/reviews/{ref}/resolve", payments.resolve),
        page("/admin/tenants", tenants.tenants_page), post("/admin/tenants", tenants.add),
        page("/admin/tenants/{tenant_id}", tenants.tenant_page),
        post("/admin/tenants/{tenant_id}/link", tenants.link),
        post("/admin/tenants/{tenant_id}/unlink", tenants.unlink),
        page("/admin/ledger", reports.ledger_page), page("/admin/ledger.csv", reports.ledger_csv),
        page("/admin/statement.csv", reports.statement_csv_page),
        page("/admin/statement.pdf", reports.statement_pdf_page),
        page("/admin/audit", reports.audit_page),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
