"""`lipameter doctor`: a preflight for going live, run against the configured services.

Each check is a small async function that returns `Check` lines (ok / warn / fail, and what to do).
A check never raises: an unexpected error is its own `fail` line, so one broken service does not hide
the others. Secrets (keys, tokens, the callback token in the URL) never appear in a line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from core.meters.profiles import DpSpec, missing_codes
from core.shared.errors import ConfigurationError, UpstreamError
from web.bootstrap import Container, build_container
from web.settings import Settings

OK, WARN, FAIL = "ok", "warn", "FAIL"
SAFARICOM_HOSTS = {"sandbox.safaricom.co.ke": "Safaricom's sandbox", "api.safaricom.co.ke": "production"}
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"  # public, on Safaricom's docs
SANDBOX_SHORTCODE = "174379"
WORKER_STALE_S = 60.0
NETWORK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    level: str  # ok | warn | FAIL
    name: str
    message: str

    def line(self) -> str:
        return f"{self.level:<4}  {self.name}: {self.message}"


def ok(name: str, message: str) -> Check:
    return Check(OK, name, message)


def warn(name: str, message: str) -> Check:
    return Check(WARN, name, message)


def fail(name: str, message: str) -> Check:
    return Check(FAIL, name, message)


# --- database ---------------------------------------------------------------------------------------

async def check_database(s: Container) -> list[Check]:
    from alembic.script import ScriptDirectory

    from storage.migrate import alembic_config

    try:
        async with s.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
            try:
                rows = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
            except sa.exc.DBAPIError:
                rows = None
    except (OSError, sa.exc.SQLAlchemyError) as error:
        return [fail("database", f"unreachable ({type(error).__name__}): check DATABASE_URL and that the "
                                 "database server runs")]
    heads = set(ScriptDirectory.from_config(alembic_config(s.settings.database_url)).get_heads())
    current = {row[0] for row in rows or []}
    if not current:
        return [fail("database", "reachable but not migrated: run `lipameter migrate`")]
    if current != heads:
        return [fail("database", f"at revision {', '.join(sorted(current))}, the code expects "
                                 f"{', '.join(sorted(heads))}: run `lipameter migrate`")]
    return [ok("database", f"reachable, migrated (revision {', '.join(sorted(current))})")]


# --- Daraja -----------------------------------------------------------------------------------------

def daraja_environment(base_url: str) -> tuple[str, str]:
    host = (urlsplit(base_url).hostname or "").lower()
    return host, SAFARICOM_HOSTS.get(host, f"a stand-in at {host or base_url!r}")


async def check_daraja(s: Container) -> list[Check]:
    settings = s.settings
    host, environment = daraja_environment(settings.daraja_base_url)
    lines = []
    if environment == "production":
        lines.append(ok("daraja environment", f"production ({host})"))
    elif host == "sandbox.safaricom.co.ke":
        lines.append(warn("daraja environment", "Safaricom's sandbox: no real money moves; set "
                                                "DARAJA_BASE_URL=https://api.safaricom.co.ke to go live"))
    else:
        lines.append(warn("daraja environment", f"{environment}: not Safaricom; fine for tests and demos only"))
    lines += _shortcode_and_passkey(settings, production=environment == "production")
    try:
        await s.payment_gateway._access_token()  # DarajaGateway: the OAuth step every push starts with
    except Exception as error:  # the gateway's own typed errors (Refused, Retryable, UpstreamError)
        reason = getattr(error, "message", None) or " ".join(str(a) for a in error.args) or type(error).__name__
        lines.append(fail("daraja oauth", f"no token ({reason}): check DARAJA_CONSUMER_KEY and "
                                          f"DARAJA_CONSUMER_SECRET belong to the app on {host or 'this host'}"))
    else:
        lines.append(ok("daraja oauth", "token obtained"))
    return lines


def _shortcode_and_passkey(settings: Settings, *, production: bool) -> list[Check]:
    lines = []
    for name, value in (("DARAJA_SHORTCODE", settings.daraja_shortcode), ("DARAJA_PARTY_B", settings.daraja_party_b)):
        if name == "DARAJA_PARTY_B" and not value:
            continue
        if not re.fullmatch(r"\d{5,7}", value or ""):
            lines.append(fail("daraja shortcode", f"{name} must be a 5-7 digit paybill or till number"))
        elif production and value == SANDBOX_SHORTCODE:
            lines.append(fail("daraja shortcode", f"{name} is Safaricom's sandbox shortcode on the production host"))
        else:
            lines.append(ok("daraja shortcode", f"{name} {value}"))
    passkey = settings.daraja_passkey.get_secret_value()
    if not passkey:
        lines.append(fail("daraja passkey", "DARAJA_PASSKEY is empty: copy it from the Daraja portal"))
    elif production and passkey == SANDBOX_PASSKEY:
        lines.append(fail("daraja passkey", "DARAJA_PASSKEY is Safaricom's public sandbox passkey on the "
                                            "production host: use the one Safaricom sent for your shortcode"))
    elif not re.fullmatch(r"[0-9a-f]{64}", passkey):
        lines.append(warn("daraja passkey", "unusual shape (Safaricom's passkeys are 64 hex characters): "
                                            "check DARAJA_PASSKEY"))
    else:
        lines.append(ok("daraja passkey", "64 hex characters"))
    return lines


# --- callback URL -----------------------------------------------------------------------------------

async def check_callback_url(s: Container) -> list[Check]:
    base = s.settings.public_base_url.strip()
    if not base:
        return [fail("callback url", "PUBLIC_BASE_URL is empty: set the https:// address Safaricom can reach")]
    parts = urlsplit(base)
    shown = f"{parts.scheme}://{parts.netloc}"
    if parts.scheme != "https":
        return [fail("callback url", f"{shown} is not https: Daraja calls back only over HTTPS; put the app "
                                     "behind TLS and set PUBLIC_BASE_URL=https://…")]
    host = parts.hostname or ""
    problem = await _not_public(host)
    if problem is None:
        return [ok("callback url", f"{shown} (https, public)")]
    level = warn if problem.startswith("could not") else fail
    return [level("callback url", f"{shown}: {problem}")]


async def _not_public(host: str) -> str | None:
    if host == "localhost" or host.endswith(".local"):
        return "a local name: Safaricom cannot reach it"
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.wait_for(asyncio.to_thread(socket.getaddrinfo, host, 443), 3)
        except (TimeoutError, OSError):
            return "could not resolve the host here; make sure it resolves to a public address"
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if all(not a.is_global for a in addresses):
        return "resolves to a private or loopback address: Safaricom cannot reach it"
    return None


# --- Tuya -------------------------------------------------------------------------------------------

async def check_tuya(s: Container) -> list[Check]:
    gateway = s.meter_gateway
    if gateway is None:
        return [fail("tuya", "TUYA_ENDPOINT, TUYA_ACCESS_ID and TUYA_ACCESS_SECRET are not all set: paid "
                             "top-ups would wait in the queue")]
    try:
        await gateway.check_token()
    except UpstreamError as error:
        return [fail("tuya token", error.message)]
    lines = [ok("tuya token", f"obtained from {urlsplit(s.settings.tuya_endpoint).hostname}")]
    async with s.uow() as uow:
        meters = [m for m in await uow.meters.list() if m.active]
    if not meters:
        return lines + [warn("tuya meters", "no active meters yet: `lipameter meter add` (the cloud "
                                            "subscription is checked through a meter)")]
    subscription_ok = False
    for meter in meters:
        line, answered = await _check_meter(s, meter)
        lines.append(line)
        subscription_ok = subscription_ok or answered
        if line.level == FAIL and "platform.tuya.com" in line.message:
            break  # a project-wide problem: every meter would say the same
    if subscription_ok:
        lines.append(ok("tuya cloud", "device, status and shadow-properties APIs answer (IoT Core subscription works)"))
    return lines


async def _check_meter(s: Container, meter) -> tuple[Check, bool]:
    """One line for a meter, and whether the cloud's device APIs answered at all."""
    name = f"meter {meter.number}"
    profile = s.profiles.get(meter.profile)
    if profile is None:
        return fail(name, f"unknown profile {meter.profile!r}: add it to METER_PROFILES_FILE"), False
    gateway = s.meter_gateway
    try:
        info = await gateway.device_info(meter.device_id)
        specs = await gateway.specifications(meter.device_id)
        missing = missing_codes(profile, specs)
        stored = {code: DpSpec.from_dict(spec) for code, spec in (meter.dp_specs or {}).items()}
        check_codes = [c for c in (profile.read_purchase_total, profile.read_energy_balance,
                                   profile.read_consumption_total) if c and c in stored]
        if check_codes:
            await gateway.reports(meter.device_id, check_codes)
    except ConfigurationError as error:
        return fail(name, error.message), False
    except UpstreamError as error:
        return fail(name, f"device {meter.device_id}: {error.message}"), False
    if missing:
        return fail(name, f"device {meter.device_id} lacks {', '.join(missing)} needed by profile "
                          f"{profile.name}: pick the right --profile"), True
    if not info.get("online"):
        return warn(name, f"device {meter.device_id} is offline in the Tuya cloud: top-ups wait until it is back"), True
    return ok(name, f"device {meter.device_id} online, profile {profile.name}'s data points present"), True


# --- Africa's Talking, Telegram ---------------------------------------------------------------------

async def check_sms(s: Container) -> list[Check]:
    from gateways.sms import account_balance

    settings = s.settings
    if not settings.sms_enabled:
        return [warn("sms", "AT_USERNAME/AT_API_KEY not set: receipts are recorded, not sent")]
    try:
        balance = await account_balance(settings.at_username, settings.at_api_key.get_secret_value(),
                                        api_base=settings.at_api_base or None, timeout_s=NETWORK_TIMEOUT_S)
    except UpstreamError as error:
        return [fail("sms", f"{error.message.removeprefix('SMS not sent: ')}: check AT_USERNAME and AT_API_KEY (sandbox keys work only "
                            "with username `sandbox`)")]
    amount = re.search(r"(-?\d+(?:\.\d+)?)", balance)
    if amount and float(amount.group(1)) <= 0:
        return [warn("sms", f"credentials valid, balance {balance}: top up the Africa's Talking account")]
    sandbox = " (the sandbox account: messages go to AT's simulator)" if settings.at_username == "sandbox" else ""
    return [ok("sms", f"Africa's Talking credentials valid, balance {balance}{sandbox}")]


async def check_telegram(s: Container) -> list[Check]:
    settings = s.settings
    token = settings.telegram_bot_token.get_secret_value()
    if not token:
        return [ok("telegram", "not configured (optional)")]
    url = f"{(settings.telegram_api_base or 'https://api.telegram.org').rstrip('/')}/bot{token}"
    async with httpx.AsyncClient(timeout=NETWORK_TIMEOUT_S) as client:
        try:
            me = (await client.post(f"{url}/getMe")).json()
            hook = (await client.post(f"{url}/getWebhookInfo")).json() if me.get("ok") else {}
        except (httpx.HTTPError, ValueError) as error:  # never the URL: it carries the token
            return [fail("telegram", f"Telegram unreachable ({type(error).__name__})")]
    if not me.get("ok"):
        return [fail("telegram", f"getMe refused ({me.get('description')}): check TELEGRAM_BOT_TOKEN")]
    lines = [ok("telegram", f"bot @{(me.get('result') or {}).get('username')}")]
    info = hook.get("result") or {}
    if not info.get("url"):
        lines.append(warn("telegram webhook", "not set: `lipameter serve` sets it at start "
                                              "(or run `lipameter bot --polling`)"))
    elif info.get("last_error_message"):
        when = info.get("last_error_date")
        at = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M UTC") if when else "recently"
        lines.append(warn("telegram webhook", f"last delivery failed {at}: {info['last_error_message']} "
                                              f"({info.get('pending_update_count', 0)} updates waiting)"))
    else:
        lines.append(ok("telegram webhook", f"set, no delivery errors ({info.get('pending_update_count', 0)} waiting)"))
    return lines


# --- allowlists, worker -----------------------------------------------------------------------------

async def check_allowlists(s: Container) -> list[Check]:
    settings, lines = s.settings, []
    for name, value, who in (("CALLBACK_ALLOWED_IPS", settings.callback_allowed_ips, "Safaricom's callback addresses"),
                             ("USSD_ALLOWED_IPS", settings.ussd_allowed_ips, "Africa's Talking's addresses")):
        if value.strip():
            lines.append(ok("allowlist", f"{name} set ({len([v for v in value.split(',') if v.strip()])} entries)"))
        else:
            lines.append(warn("allowlist", f"{name} is empty: any address may post; set it to {who}"))
    return lines


async def check_worker(s: Container) -> list[Check]:
    from storage.heartbeats import SqlHeartbeats

    try:
        latest = await SqlHeartbeats(s.engine).latest()
    except sa.exc.SQLAlchemyError:
        return [fail("worker", "cannot read worker heartbeats (is the database migrated?)")]
    if latest is None:
        return [fail("worker", "no worker has run yet: `lipameter serve` runs one, or start `lipameter worker`")]
    worker_id, seen = latest
    age = (s.clock.now() - seen).total_seconds()
    if age > WORKER_STALE_S:
        return [fail("worker", f"last seen {age:.0f}s ago ({worker_id}): paid top-ups are not being applied; "
                               "start `lipameter worker` or `lipameter serve`")]
    return [ok("worker", f"alive, seen {max(age, 0):.0f}s ago ({worker_id})")]


CHECKS: list[Callable[[Container], Awaitable[list[Check]]]] = [
    check_database, check_daraja, check_callback_url, check_tuya, check_sms, check_telegram,
    check_allowlists, check_worker,
]


async def run_checks(services: Container) -> list[Check]:
    lines: list[Check] = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            lines += await asyncio.wait_for(check(services), timeout=60)
        except Exception as error:  # a broken check is a failed check, never a traceback
            lines.append(fail(name, f"the check itself failed ({type(error).__name__})"))
    return lines


def doctor(settings: Settings, out: Callable[[str], None] = print) -> int:
    """Print one line per check; the number of failures is the result."""

    async def go() -> list[Check]:
        services = build_container(settings)
        try:
            return await run_checks(services)
        finally:
            await services.aclose()

    lines = asyncio.run(go())
    for line in lines:
        out(line.line())
    failures = sum(1 for line in lines if line.level == FAIL)
    out(f"{len(lines)} checks: {failures} failed, {sum(1 for line in lines if line.level == WARN)} warnings")
    return failures
