"""What `lipameter demo` (web/cli/demo.py) runs: the whole product on one machine. SQLite, the sandbox
mounted in the same process (reached over real HTTP on loopback, like the real services), demo meters
and tenants with a month of simulated readings (web/demo_usage.py), a printed how-to."""

from __future__ import annotations

import logging
import os
import secrets

import sqlalchemy as sa
from starlette.routing import Mount

from core.admin.registry import AddMeter, AddTenant, add_meter, add_tenant
from core.meters.profiles import parse_specifications
from core.shared.errors import Conflict
from sandbox.daraja import create_daraja_sandbox
from sandbox.sms import create_sms_sandbox
from sandbox.telegram import create_telegram_sandbox
from sandbox.tuya import create_tuya_sandbox
from sandbox.whatsapp import create_whatsapp_sandbox
from web.admin.demo_admin import DEMO_ADMIN, ensure_demo_admin
from web.bootstrap import Container
from web.demo_usage import backfill
from web.settings import Settings

log = logging.getLogger("lipameter.demo")

DEMO_API_KEY = "demo-api-key"
DEMO_CALLBACK_TOKEN = "demo-callback-token-not-secret"
DEMO_DARAJA = dict(consumer_key="demo-consumer-key", consumer_secret="demo-consumer-secret",
                   shortcode="174379", passkey="demo-passkey")
DEMO_SMS = dict(username="sandbox", api_key="demo-at-key")
DEMO_PAYBILL = "600000"  # Safaricom's C2B test shortcode
DEMO_TUYA = dict(access_id="demo-tuya-access-id", access_secret="demo-tuya-access-secret")
DEMO_TELEGRAM = dict(token="7000000001:demo-bot-token", secret="demo-webhook-secret")
DEMO_WHATSAPP = dict(token="demo-whatsapp-token", phone_number_id="100000000000001",
                     app_secret="demo-whatsapp-app-secret", verify_token="demo-whatsapp-verify-token")
DEMO_METERS = [
    ("A101", "Flat A1, Kilimani Court", "sbx-a101", "seed", "25"),
    ("A102", "Flat A2, Kilimani Court", "sbx-a102", "seed", "25"),
    ("B201", "Shop 1, Umoja Market", "sbx-b201", "tuya-standard", "24.5"),
]
DEMO_LOAD_KW = "0.2"
DEMO_TENANTS = [("254712345678", "Wanjiku", ["A101", "A102"]), ("254722000111", "Otieno", ["B201"])]


def demo_settings(*, host: str, port: int, database_url: str | None) -> Settings:
    base = f"http://{host}:{port}"
    return Settings(
        database_url=database_url or os.environ.get("DATABASE_URL") or "sqlite+aiosqlite:///./lipameter.db",
        public_base_url=base,
        api_keys=DEMO_API_KEY,
        callback_token=DEMO_CALLBACK_TOKEN,
        daraja_base_url=f"{base}/sandbox/daraja",
        daraja_consumer_key=DEMO_DARAJA["consumer_key"], daraja_consumer_secret=DEMO_DARAJA["consumer_secret"],
        daraja_shortcode=DEMO_DARAJA["shortcode"], daraja_passkey=DEMO_DARAJA["passkey"],
        at_username=DEMO_SMS["username"], at_api_key=DEMO_SMS["api_key"], at_api_base=f"{base}/sandbox/at",
        tuya_endpoint=f"{base}/sandbox/tuya", tuya_access_id=DEMO_TUYA["access_id"],
        tuya_access_secret=DEMO_TUYA["access_secret"],
        telegram_bot_token=DEMO_TELEGRAM["token"], telegram_webhook_secret=DEMO_TELEGRAM["secret"],
        telegram_api_base=f"{base}/sandbox/telegram",
        whatsapp_token=DEMO_WHATSAPP["token"], whatsapp_phone_number_id=DEMO_WHATSAPP["phone_number_id"],
        whatsapp_app_secret=DEMO_WHATSAPP["app_secret"], whatsapp_verify_token=DEMO_WHATSAPP["verify_token"],
        whatsapp_api_base=f"{base}/sandbox/whatsapp/v21.0", whatsapp_receipt_template="lipameter_receipt:en",
        reconcile_after_s=60, sweep_every_s=10,
        daraja_c2b_shortcode=DEMO_PAYBILL, paybill_number=DEMO_PAYBILL,
        # Signs dashboard sessions; a fresh one per demo run (logins do not outlive the process).
        secret_key=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32),
    )


def demo_c2b(settings: Settings) -> dict:
    """What `lipameter mpesa register-urls` would send, for the demo's Daraja sandbox."""
    return {"credentials": (DEMO_DARAJA["consumer_key"], DEMO_DARAJA["consumer_secret"]),
            "register": {"ShortCode": settings.c2b_shortcode, "ResponseType": "Completed",
                         "ConfirmationURL": settings.c2b_url("confirm"), "ValidationURL": settings.c2b_url("validate")}}


def demo_tuya():
    """The Tuya cloud sandbox with one simulated meter per demo meter (balances in memory)."""
    app = create_tuya_sandbox(**DEMO_TUYA)
    for _number, name, device, profile, price in DEMO_METERS:
        balance = "150" if profile == "seed" else "12"  # KES on money meters, kWh on energy meters
        # A flat's mean load, about 5 kWh a day, shaped by the hour (sandbox.tuya_meters.DAY_SHAPE).
        app.state.tuya.add_device(device, profile, balance=balance, price=price, name=name, rate_kw=DEMO_LOAD_KW)
    return app


def sandbox_mounts(tuya_app, callback_delay_s: float = 3.0, *, base_url: str = "",
                   sms_report_url: str = "") -> list[Mount]:
    whatsapp = create_whatsapp_sandbox(token=DEMO_WHATSAPP["token"], phone_number_id=DEMO_WHATSAPP["phone_number_id"],
                                       app_secret=DEMO_WHATSAPP["app_secret"], auto_status=True,
                                       webhook_url=f"{base_url}/whatsapp/webhook" if base_url else "")
    sms = create_sms_sandbox(**DEMO_SMS)
    # Every accepted SMS is followed by AT's delivery report to the app (Success unless scripted).
    sms.state.sms.report_to(sms_report_url, delay_s=2.0)
    return [
        Mount("/sandbox/whatsapp", app=whatsapp),
        Mount("/sandbox/daraja", app=create_daraja_sandbox(callback_delay_s=callback_delay_s, **DEMO_DARAJA)),
        Mount("/sandbox/at", app=sms),
        Mount("/sandbox/tuya", app=tuya_app),
        Mount("/sandbox/telegram", app=create_telegram_sandbox(token=DEMO_TELEGRAM["token"])),
    ]


def _sandbox_meters(tuya_app) -> dict:
    """number -> (balance now, mean load, price or None when the balance is in kWh), for the backfill."""
    fleet, meters = tuya_app.state.tuya, {}
    for number, _, device_id, profile, _ in DEMO_METERS:
        device = fleet.meter(device_id)
        device.tick()
        meters[number] = ((device.balance_kes, device.rate_kw, device.price) if profile == "seed"
                          else (device.balance_kwh, device.rate_kw, None))
    return meters


def _dp_specs(tuya_app, device: str) -> dict:
    # The server is not up yet, so the demo reads the simulated device's specifications in-process;
    # `lipameter meter add` reads them from the cloud over HTTP.
    specs = parse_specifications(tuya_app.state.tuya.meter(device).specifications())
    return {code: spec.to_dict() for code, spec in specs.items()}


async def seed_demo_data(container: Container, tuya_app) -> bool:
    """Meters, tenants and the demo admin; answers whether the database already has payments."""
    for number, name, device, profile, price in DEMO_METERS:
        try:
            await add_meter(AddMeter(number=number, name=name, device_id=device, profile=profile,
                                     price_per_kwh=price, dp_specs=_dp_specs(tuya_app, device)), uow=container.uow())
        except Conflict:
            pass  # already there from an earlier demo run
    for phone, name, numbers in DEMO_TENANTS:
        await add_tenant(AddTenant(phone=phone, name=name, meter_numbers=numbers), uow=container.uow())
    await ensure_demo_admin(container.admin_users, now=container.clock.now())
    await backfill(container, _sandbox_meters(tuya_app))
    async with container.engine.connect() as conn:
        has_payments = bool(await conn.scalar(sa.text("SELECT count(*) FROM payments")))
    # The server runs on another event loop: it must not inherit this loop's pooled connections.
    await container.engine.dispose()
    return has_payments


def how_to(settings: Settings) -> str:
    base = settings.public_base_url
    return f"""
LipaMeter demo is running at {base}  (Ctrl-C to stop)
  database: {settings.database_url}
  M-Pesa, Tuya meters, SMS: the built-in sandbox (no real money moves, no real meter is touched)

Pay KES 100 for meter A101 from Wanjiku's phone (the sandbox "enters the PIN" and calls back in ~3 s;
the meter is credited a second later and the SMS receipt lands in the sandbox inbox):

  curl -s -X POST {base}/mpesa/payments \\
    -H 'Authorization: Bearer {DEMO_API_KEY}' -H 'Content-Type: application/json' \\
    -d '{{"amount": 100, "phoneNumber": "0712345678", "meterId": "A101", "description": "Electricity"}}'

Then look at the payment (use the mpesaTransactionId from the answer):

  curl -s -H 'Authorization: Bearer {DEMO_API_KEY}' {base}/mpesa/payments/<mpesaTransactionId>

Pay from the M-Pesa menu instead: "Pay Bill {DEMO_PAYBILL}, account A101" (the sandbox validates, then confirms;
try account "a-101", or one that names no meter, which is refused and the money stays in the wallet):

  curl -s -X POST {base}/sandbox/daraja/sandbox/c2b/pay -H 'Content-Type: application/json' \
    -d '{{"ShortCode": "{DEMO_PAYBILL}", "CommandID": "CustomerPayBillOnline", "Amount": 150, "Msisdn": "254712345678", "BillRefNumber": "A101"}}'

  then: curl -s -H 'Authorization: Bearer {DEMO_API_KEY}' {base}/mpesa/payments/<TransID>

Buy by USSD as Africa's Talking would post it (Wanjiku has meters A101 and A102; type 0 back, 00 home):

  lipameter dial --url {base} --phone 0712345678

  or by hand: curl -s {base}/ussd -d sessionId=demo-1 -d serviceCode='*384*1#' \\
    --data-urlencode phoneNumber=+254712345678 -d text=        (then text=1, text=1*1, text=1*1*100, text=1*1*100*1)

Make the next payment from a phone fail (cancelled, wrong_pin, insufficient_funds, unreachable, lost_callback,
or late_success: it fails, then M-Pesa says paid, and the payment waits on the dashboard's review list):

  curl -s -X POST {base}/sandbox/daraja/sandbox/script -H 'Content-Type: application/json' \\
    -d '{{"phone": "254712345678", "outcome": "cancelled"}}'

Chat with the Telegram bot (share the phone number 254712345678 to be Wanjiku; receipts come back there):

  {base}/sandbox/telegram/sandbox/chat

Chat on WhatsApp (the Cloud API sandbox; number 254712345678 is Wanjiku: say "hi"; "Expire the 24 h window"
to see a receipt go as the approved template):

  {base}/sandbox/whatsapp/sandbox/chat

SMS receipts sent:   {base}/sandbox/at/sandbox/sms/inbox  (delivery reports: {base}/sandbox/at/sandbox/sms/reports;
  the payment page shows them). Make Wanjiku's SMS opted out (the receipt then goes to her Telegram chat):
  curl -s -X POST {base}/sandbox/at/sandbox/sms/script -H 'Content-Type: application/json' \
    -d '{{"phone": "254712345678", "status": "Rejected", "reason": "UserInBlackList"}}'
Meters (live):       {base}/sandbox/tuya/sandbox/devices
What M-Pesa saw:     {base}/sandbox/daraja/sandbox/transactions
Take meter A101 offline (payments wait, then credit once it is back: fault "online"):
  curl -s -X POST {base}/sandbox/tuya/sandbox/devices/sbx-a101/fault -H 'Content-Type: application/json' -d '{{"kind": "offline"}}'
Admin dashboard:     {base}/admin  (log in as {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]}; add logins with `lipameter admin create`)
Also: {base}/openapi.json, {base}/metrics; `lipameter meter list`, `lipameter review list` (same DATABASE_URL).
"""
