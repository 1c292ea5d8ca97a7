"""Reading and checking dashboard forms and query strings. Bad input becomes a FormError whose
message is shown on the page; nothing is acted on."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from urllib.parse import parse_qs

from starlette.requests import Request

from core.shared.clock import NAIROBI
from core.shared.inbound import NUL_IN_FORM, TooLarge, has_nul, read_capped

MAX_FORM_BYTES = 16 * 1024


class FormError(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message, self.status = message, status


async def read_form(request: Request) -> dict[str, str]:
    """URL-encoded form, capped; the last value wins for a repeated field."""
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        raise FormError("send the form from the dashboard page", status=415)
    try:
        raw = await read_capped(request.stream(), MAX_FORM_BYTES, declared=request.headers.get("content-length"))
    except TooLarge:
        raise FormError("form too large", status=413) from None
    if has_nul(raw, NUL_IN_FORM):
        raise FormError("the form contains a NUL character", status=400)
    fields = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def text(form: dict[str, str], name: str, *, limit: int = 200) -> str:
    return (form.get(name) or "").strip()[:limit]


def required(form: dict[str, str], name: str, label: str, *, limit: int = 200) -> str:
    value = text(form, name, limit=limit)
    if not value:
        raise FormError(f"{label} is required")
    return value


# Days far outside these years mean nothing here, and 9999-12-31 + 1 day or 0001-01-01 in UTC overflow.
FIRST_YEAR, LAST_YEAR = 2000, 2200


def parse_day(value: str | None, label: str) -> date | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise FormError(f"{label} must be a date like 2026-11-28", status=400) from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise FormError(f"{label} must be a date between {FIRST_YEAR} and {LAST_YEAR}", status=400)
    return day


def day_range(query: dict[str, str]) -> tuple[date | None, date | None, datetime | None, datetime | None]:
    """`from`/`to` are whole days in Nairobi, both included; returned also as UTC [start, end)."""
    first, last = parse_day(query.get("from"), "from"), parse_day(query.get("to"), "to")
    if first and last and last < first:
        raise FormError("the 'to' date is before the 'from' date", status=400)
    start = datetime.combine(first, time(), NAIROBI) if first else None
    end = datetime.combine(last + timedelta(days=1), time(), NAIROBI) if last else None
    return first, last, start, end


def nairobi_today(now: datetime) -> date:
    return now.astimezone(NAIROBI).date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), NAIROBI)
