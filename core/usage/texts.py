"""What tenants are told about their meter's balance, in English and Swahili."""

from __future__ import annotations

from decimal import Decimal

from core.jobs.kinds import AlertKind

TEXTS = {
    "en": {
        "low": "LipaMeter: meter {meter} is running low ({balance} left). Top up soon.",
        "zero": "LipaMeter: meter {meter} has run out and cut the power. Top up to restore it: "
                "power comes back as soon as the meter is credited.",
        "how_ussd": " Dial {ussd} and choose Buy.",
        "how_paybill": " Or M-Pesa Paybill {paybill}, account {meter}.",
        "how_telegram": " Press Buy below.",
        "days_left": "about {days} days at your usual use",
        "day_left": "about {days} day at your usual use",
    },
    "sw": {
        "low": "LipaMeter: salio la mita {meter} linakaribia kuisha ({balance} limebaki). Ongeza mapema.",
        "zero": "LipaMeter: mita {meter} imeisha na umeme umekatika. Ongeza salio kuurudisha: "
                "umeme unarudi mara mita ikiongezewa.",
        "how_ussd": " Piga {ussd} uchague Nunua.",
        "how_paybill": " Au M-Pesa Paybill {paybill}, akaunti {meter}.",
        "how_telegram": " Bonyeza Nunua hapa chini.",
        "days_left": "takriban siku {days} kwa matumizi yako ya kawaida",
        "day_left": "takriban siku {days} kwa matumizi yako ya kawaida",
    },
}


def _t(language: str, key: str) -> str:
    return TEXTS.get(language, TEXTS["en"])[key]


def _amount(balance: Decimal | None) -> str:
    return "?" if balance is None else f"{balance.normalize():f}"


def alert_text(language: str, alert: AlertKind, *, meter: str, balance: Decimal | None, ussd_code: str,
               paybill: str, telegram: bool) -> str:
    body = _t(language, alert.value).format(meter=meter, balance=_amount(balance))
    if telegram:
        return body + _t(language, "how_telegram")
    if ussd_code:
        body += _t(language, "how_ussd").format(ussd=ussd_code)
    if paybill:
        body += _t(language, "how_paybill").format(paybill=paybill, meter=meter)
    return body


def days_left_text(language: str, days: int | None) -> str:
    """"about N days at your usual use", or "" when unknown."""
    if days is None:
        return ""
    return _t(language, "day_left" if days == 1 else "days_left").format(days=days)
