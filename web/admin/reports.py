"""The overview, the ledger (and its CSV) and the audit log: read-only pages anyone logged in may see."""

from __future__ import annotations

from datetime import timedelta

from starlette.responses import Response

from core.admin.operator import list_reviews
from core.statements.model import parse_month
from storage.dashboard import overview
from storage.ledger import LEDGER_COLUMNS, audit_entries, ledger
from storage.statements import monthly_statement
from web.admin.chart_views import overview_charts
from web.admin.csv_export import csv_response
from web.admin.forms import FormError, day_range, day_start, nairobi_today
from web.admin.site import Ctx
from web.statements import filename, statement_csv, statement_pdf


async def overview_page(ctx: Ctx) -> Response:
    today = nairobi_today(ctx.container.clock.now())
    monday = today - timedelta(days=today.weekday())
    counts = await overview(ctx.container.engine, today=day_start(today), week=day_start(monday))
    reviews = await list_reviews(uow=ctx.container.uow())
    return ctx.render("admin/overview.html", title="Overview", counts=counts, reviews=reviews[:20],
                      today=today.isoformat(), monday=monday.isoformat(),
                      charts=await overview_charts(ctx.container))


def _range(ctx: Ctx) -> tuple[dict, object, object]:
    first, last, start, end = day_range(ctx.query)
    shown = {"from": first.isoformat() if first else "", "to": last.isoformat() if last else ""}
    return shown, start, end


async def ledger_page(ctx: Ctx) -> Response:
    try:
        shown, start, end = _range(ctx)
    except FormError as error:
        return ctx.render("admin/ledger.html", error.status, title="Ledger", error=error.message,
                          filters=ctx.query, book=None, csv_query="", months=recent_months(ctx))
    book = await ledger(ctx.container.engine, start=start, end=end)
    return ctx.render("admin/ledger.html", title="Ledger", book=book, filters=shown,
                      csv_query=ctx.request.url.query, months=recent_months(ctx))


async def ledger_csv(ctx: Ctx) -> Response:
    shown, start, end = _range(ctx)
    book = await ledger(ctx.container.engine, start=start, end=end)
    total = {"meter_number": "TOTAL", "meter_name": "", **book["total"]}
    return csv_response(f"lipameter-ledger_{shown['from'] or 'start'}_{shown['to'] or 'now'}.csv",
                        ("meter_number", "meter_name", *LEDGER_COLUMNS), [*book["rows"], total])


def recent_months(ctx: Ctx, count: int = 3) -> list[str]:
    """This month and the ones before it, newest first, as 2026-11: the statement links' choices."""
    first = nairobi_today(ctx.container.clock.now()).replace(day=1)
    months = [first]
    while len(months) < count:
        months.append((months[-1] - timedelta(days=1)).replace(day=1))
    return [f"{month:%Y-%m}" for month in months]


async def statement_file(ctx: Ctx, extension: str) -> Response:
    """A month's statement, for one meter (?meter=A101) or the whole property; bad input is a 4xx page."""
    now = ctx.container.clock.now()
    month = parse_month(ctx.query.get("month"), today=nairobi_today(now))
    statement = await monthly_statement(ctx.container.engine, month, profiles=ctx.container.profiles, made_at=now,
                                        meter_number=ctx.query.get("meter") or None)
    body, media = ((statement_pdf(statement), "application/pdf") if extension == "pdf"
                   else (statement_csv(statement), "text/csv; charset=utf-8"))
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{filename(statement, extension)}"', "Cache-Control": "no-store"})


async def statement_csv_page(ctx: Ctx) -> Response:
    return await statement_file(ctx, "csv")


async def statement_pdf_page(ctx: Ctx) -> Response:
    return await statement_file(ctx, "pdf")


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
