"""Templates and how values look on a page: KES with thousands separators, times in Nairobi."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from core.shared.clock import NAIROBI
from core.shared.inbound import MAX_JSON_DEPTH, json_depth
from core.shared.money import format_kes

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def kes(value) -> str:
    return "—" if value is None else format_kes(Decimal(value))


def number(value) -> str:
    """A quantity (kWh, a counter) with separators and no trailing zeros: 1,250.5."""
    if value is None:
        return "—"
    value = Decimal(value)
    text = f"{value:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def quantity(value, unit: str) -> str:
    """KES or kWh, as the meter's profile keeps it."""
    return kes(value) if unit == "KES" else "—" if value is None else f"{number(value)} {unit}".strip()


def eat(value: datetime | None, fmt: str = "%d %b %Y %H:%M") -> str:
    return "—" if value is None else value.astimezone(NAIROBI).strftime(fmt)


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    seconds = max(0, int((now - value).total_seconds()))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return f"{seconds} s ago"


def pretty_json(body: str) -> str:
    """A stored body, indented when it is sane JSON, else as it came (autoescaped): never a 500, whatever
    an attacker managed to get stored."""
    if json_depth(body) > MAX_JSON_DEPTH:
        return body
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return body


def status_class(value) -> str:
    value = getattr(value, "value", value) or ""
    return {"completed": "ok", "applied": "ok", "failed": "bad", "push_failed": "bad", "cancelled": "muted",
            "needs_review": "warn", "queued": "wait", "sending": "wait", "pending": "wait",
            "requested": "wait"}.get(value, "")


AUDIT_TARGETS = {"retry_topup": "topups", "resolve_topup": "topups", "resolve_payment": "payments",
                 "add_tenant": "tenants", "manual_topup": "meters", "add_meter": "meters", "set_price": "meters",
                 "prepayment_switch": "meters", "clear": "meters"}


def audit_link(entry: dict) -> str | None:
    """The page an audit entry's target lives on, when it has one."""
    kind = AUDIT_TARGETS.get(entry.get("action") or "")
    return f"/admin/{kind}/{entry['target']}" if kind and entry.get("target") else None


def build_environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(kes=kes, number=number, quantity=quantity, eat=eat, pretty_json=pretty_json,
                       status_class=status_class)
    env.globals.update(ago=ago, audit_link=audit_link)
    return env
