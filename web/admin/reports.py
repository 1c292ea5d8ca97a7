"""The overview, the ledger (and its CSV) and the audit log: read-only pages anyone logged in may see."""

from __future__ import annotations

from datetime import timedelta

from starlette.responses import Response

from core.admin.operator import list_reviews
from storage.dashboard import overview
from storage.ledger import LEDGER_COLUMNS, audit_entries, ledger
from web.admin.csv_export import csv_response
from web.admin.forms import FormError, day_range, day_start, nairobi_today
from web.admin.site import Ctx


async def overview_page(ctx: Ctx) -> Response:
    today = nairobi_today(ctx.container.clock.now())
    monday = today - timedelta(days=today.weekday())
    counts = await overview(ctx.container.engine, today=day_start(today), week=day_start(monday))
    reviews = await list_reviews(uow=ctx.container.uow())
    return ctx.render("admin/overview.html", title="Overview", counts=counts, reviews=reviews[:20],
                      today=today.isoformat(), monday=monday.isoformat())


def _range(ctx: Ctx) -> tuple[dict, object, object]:
    first, last, start, end = day_range(ctx.query)
    shown = {"from": first.isoformat() if first else "", "to": last.isoformat() if last else ""}
    return shown, start, end


async def ledger_page(ctx: Ctx) -> Response:
    try:
        shown, start, end = _range(ctx)
    except FormError as error:
        return ctx.render("admin/ledger.html", error.status, title="Ledger", error=error.message,
                          filters=ctx.query, book=None, csv_query="")
    book = await ledger(ctx.container.engine, start=start, end=end)
    return ctx.render("admin/ledger.html", title="Ledger", book=book, filters=shown,
                      csv_query=ctx.request.url.query)


async def ledger_csv(ctx: Ctx) -> Response:
    shown, start, end = _range(ctx)
    book = await ledger(ctx.container.engine, start=start, end=end)
    total = {"meter_number": "TOTAL", "meter_name": "", **book["total"]}
    return csv_response(f"lipameter-ledger_{shown['from'] or 'start'}_{shown['to'] or 'now'}.csv",
                        ("meter_number", "meter_name", *LEDGER_COLUMNS), [*book["rows"], total])


async def audit_page(ctx: Ctx) -> Response:
    before = ctx.query.get("before", "")
    if before and not (before.isascii() and before.isdigit() and len(before) < 10):
        raise FormError("'before' must be an audit entry number", status=400)
    actor, action = ctx.query.get("actor", "")[:80], ctx.query.get("action", "")[:60]
    entries = await audit_entries(ctx.container.engine, actor=actor, action=action,
                                  before_id=int(before) if before else None)
    more = entries[-1]["id"] if len(entries) == 100 else None  # a full page: there may be older ones
    return ctx.render("admin/audit.html", title="Audit log", entries=entries,
                      filters={"actor": actor, "action": action}, more=more)
