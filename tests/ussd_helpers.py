"""Shared by the USSD tests: a phone that posts hops exactly as Africa's Talking does, and seed data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from core.admin.registry import AddMeter, AddTenant, add_meter, add_tenant
from tests.stack import with_container
from ussd.render import LIMIT
from web.bootstrap import Container

WANJIKU, OTIENO, AKINYI, STRANGER = "+254712345678", "+254722000111", "+254745000222", "+254746000333"
TWELVE = [f"M{i:02d}" for i in range(1, 13)]


class Phone:
    """One USSD session: the same sessionId every hop, `text` = every reply so far joined by `*`."""

    def __init__(self, base_url: str, phone: str = WANJIKU, session_id: str | None = None) -> None:
        self.url = base_url + "/ussd"
        self.phone = phone
        self.session_id = session_id or f"ATUid_{uuid.uuid4().hex}"
        self.replies: list[str] = []
        self.screens: list[str] = []

    def post(self, text: str, **fields: str) -> str:
        form = {"sessionId": self.session_id, "serviceCode": "*384*1#", "phoneNumber": self.phone,
                "networkCode": "63902", "text": text, **fields}
        answer = httpx.post(self.url, data=form, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        screen = answer.text
        assert screen.startswith(("CON ", "END ")) and len(screen) <= LIMIT and screen.isascii(), screen
        self.screens.append(screen)
        return screen

    def dial(self) -> str:
        self.replies = []
        return self.post("")

    def send(self, *replies: str) -> str:
        """Each reply is its own hop; returns the last screen."""
        screen = ""
        for reply in replies:
            self.replies.append(reply)
            screen = self.post(self.text)
        return screen

    def retry(self) -> str:
        """The gateway re-sends the last hop, unchanged."""
        return self.post(self.text)

    @property
    def text(self) -> str:
        return "*".join(self.replies)


def seed_ussd(database_url: str) -> None:
    """On top of the Stack's A101/B201/OFF1 and Wanjiku: A102 for Wanjiku, Otieno (Swahili) with B201,
    Akinyi with twelve meters, and A101's last known balance 1,250.50 read three hours ago."""

    async def go(c: Container) -> None:
        await add_meter(AddMeter(number="A102", name="Flat A2, Kilimani Court", device_id="dev-a102"), uow=c.uow())
        for number in TWELVE:
            await add_meter(AddMeter(number=number, name=f"Block {number[1:]}", device_id=f"dev-{number}"),
                            uow=c.uow())
        await add_tenant(AddTenant(phone=WANJIKU, meter_numbers=["A101", "A102"]), uow=c.uow())
        await add_tenant(AddTenant(phone=OTIENO, name="Otieno", meter_numbers=["B201"], language="sw"), uow=c.uow())
        await add_tenant(AddTenant(phone=AKINYI, name="Akinyi", meter_numbers=TWELVE), uow=c.uow())
        async with c.uow() as uow:
            meter = await uow.meters.get_by_number("A101")
            meter.last_balance = Decimal("1250.50")
            meter.last_balance_at = datetime.now(UTC) - timedelta(hours=3, minutes=5)
            await uow.meters.save(meter)
            await uow.commit()

    with_container(database_url, go)


def as_datetime(value) -> datetime:
    """Raw SQL gives SQLite timestamps as naive text and PostgreSQL's as aware datetimes."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
