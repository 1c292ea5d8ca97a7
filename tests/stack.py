"""The product and its sandboxes on real loopback ports, for end-to-end tests.

The app runs as it does in production (uvicorn, lifespan, in-process worker); Daraja is the sandbox
on its own port; the callback crosses real HTTP back to the app."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa

from bench.seed import run_sql
from core.admin.registry import AddMeter, AddTenant, add_tenant, register_meter
from sandbox.daraja import create_daraja_sandbox
from sandbox.sms import create_sms_sandbox
from sandbox.telegram import create_telegram_sandbox
from sandbox.tuya import create_tuya_sandbox
from sandbox.whatsapp import create_whatsapp_sandbox
from tests.servers import ServerThread, reserve_port, stop_all
from ussd.hop import UssdConfig
from web.app import create_app
from web.bootstrap import Container, build_container
from web.cli.common import run_with_container
from web.settings import Settings

T = TypeVar("T")

API_KEY = "test-api-key-1"
CALLBACK_TOKEN = "test-callback-token-0123456789"
DARAJA = dict(consumer_key="ck-test", consumer_secret="cs-test", shortcode="174379", passkey="pk-test")
TUYA = dict(access_id="tuya-test-id", access_secret="tuya-test-secret")
SMS = dict(username="sandbox", api_key="at-test-key")
TELEGRAM = dict(token="7000000001:sandbox-test-token", secret="test-webhook-secret_0123")
WHATSAPP = dict(token="EAAG-sandbox-test-token", phone_number_id="109876543210", app_secret="test-app-secret-0123",
                verify_token="test-verify-token")


class Stack:
    def __init__(self, database_url: str, *, callback_delay_s: float = 0.1, run_worker: bool = True,
                 seed: bool = True, telegram: bool = False, whatsapp: bool = False,
                 ussd_config: UssdConfig | None = None, **overrides: Any) -> None:
        self.database_url = database_url
        self.daraja_app = create_daraja_sandbox(callback_delay_s=callback_delay_s, **DARAJA)
        self.daraja = self.daraja_app.state.daraja
        self._daraja_server = ServerThread(self.daraja_app).start()
        tuya_app, sms_app = create_tuya_sandbox(**TUYA), create_sms_sandbox(**SMS)
        self.tuya, self.sms = tuya_app.state.tuya, sms_app.state.sms
        self._tuya_server, self._sms_server = ServerThread(tuya_app).start(), ServerThread(sms_app).start()
        self.tuya_url = self._tuya_server.url
        port = reserve_port()
        self.url = f"http://127.0.0.1:{port}"
        settings = dict(
            database_url=database_url, public_base_url=self.url, api_keys=f"other-key,{API_KEY}",
            callback_token=CALLBACK_TOKEN, daraja_base_url=self._daraja_server.url,
            daraja_consumer_key=DARAJA["consumer_key"], daraja_consumer_secret=DARAJA["consumer_secret"],
            daraja_shortcode=DARAJA["shortcode"], daraja_passkey=DARAJA["passkey"], daraja_timeout_s=5,
            reconcile_after_s=600, sweep_every_s=0.2, min_amount=10, max_amount=70_000,
            tuya_endpoint=self.tuya_url, tuya_access_id=TUYA["access_id"], tuya_access_secret=TUYA["access_secret"],
            tuya_timeout_s=2, topup_confirm_deadline_s=3, topup_poll_interval_s=0.1,
            at_username=SMS["username"], at_api_key=SMS["api_key"], at_api_base=self._sms_server.url,
        )
        self.telegram, self._telegram_server = None, None  # the Bot API sandbox, when asked for
        if telegram:
            telegram_app = create_telegram_sandbox(token=TELEGRAM["token"])
            self.telegram, self._telegram_server = telegram_app.state.telegram, ServerThread(telegram_app).start()
            settings.update(telegram_bot_token=TELEGRAM["token"], telegram_webhook_secret=TELEGRAM["secret"],
                            telegram_api_base=self._telegram_server.url)
        self.whatsapp, self._whatsapp_server = None, None  # the Cloud API sandbox, when asked for
        if whatsapp:
            whatsapp_app = create_whatsapp_sandbox(token=WHATSAPP["token"], phone_number_id=WHATSAPP["phone_number_id"],
                                                   app_secret=WHATSAPP["app_secret"],
                                                   webhook_url=f"{self.url}/whatsapp/webhook")
            self.whatsapp, self._whatsapp_server = whatsapp_app.state.whatsapp, ServerThread(whatsapp_app).start()
            settings.update(whatsapp_token=WHATSAPP["token"], whatsapp_phone_number_id=WHATSAPP["phone_number_id"],
                            whatsapp_app_secret=WHATSAPP["app_secret"], whatsapp_verify_token=WHATSAPP["verify_token"],
                            whatsapp_api_base=f"{self._whatsapp_server.url}/v21.0",
                            whatsapp_receipt_template="lipameter_receipt:en")
        settings.update(overrides)
        self.settings = Settings(_env_file=None, **settings)
        if seed:
            add_meters(self)
        self.ussd_config = ussd_config
        self.container = build_container(self.settings, ussd_config=ussd_config)
        self.app = create_app(self.container, run_worker=run_worker)
        self._app_server = ServerThread(self.app, port=port).start()
        self.port = port
        self._wait_for_bot()
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=20)

    @property
    def callback_url(self) -> str:
        return f"{self.url}/mpesa/callback/{CALLBACK_TOKEN}"

    def restart_app(self) -> None:
        """A new app process on the same database and port (the sandboxes keep running)."""
        self._app_server.stop()
        self.container = build_container(self.settings, ussd_config=self.ussd_config)
        self.app = create_app(self.container, run_worker=True)
        self._app_server = ServerThread(self.app, port=self.port).start()
        self._wait_for_bot()

    def _wait_for_bot(self, timeout: float = 10) -> None:
        """The bot starts in the background (getMe, setWebhook); updates wait until it is up."""
        deadline = time.monotonic() + timeout
        while self.telegram is not None and not (self.container.telegram_bot and self.container.telegram_bot.ready):
            if time.monotonic() > deadline:
                raise RuntimeError("the Telegram bot did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.client.close()
        self._app_server.stop()  # first: its worker may be talking to the sandboxes until it is down
        self.daraja.reset()
        stop_all(server for server in (self._telegram_server, self._whatsapp_server, self._daraja_server,
                                       self._tuya_server, self._sms_server) if server is not None)

    def pay(self, amount: Any = 100, phone: str = "0712345678", meter: str = "A101", **extra: Any) -> httpx.Response:
        headers = extra.pop("headers", {})
        body = {"amount": amount, "phoneNumber": phone, "meterId": meter, "description": "Electricity", **extra}
        return self.client.post("/mpesa/payments", json=body, headers=headers)

    def payment(self, ref: str) -> dict:
        answer = self.client.get(f"/mpesa/payments/{ref}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_for(self, ref: str, predicate: Callable[[dict], bool], timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            document = self.payment(ref)
            if predicate(document):
                return document
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; last state: {document}")
            time.sleep(0.05)

    def sql(self, query: str, **params: Any) -> list[sa.Row]:
        return run_sql(self.database_url, query, **params)

    def sql_until(self, query: str, rows: int, timeout: float = 10, **params: Any) -> list[sa.Row]:
        """The query's rows once there are at least `rows` of them. A receipt reaches the tenant before the
        worker's transaction that records it (`notifications`) commits, so a test that saw the receipt waits."""
        deadline = time.monotonic() + timeout
        while len(found := self.sql(query, **params)) < rows and time.monotonic() < deadline:
            time.sleep(0.05)
        return found




def with_container(settings: Settings | str, fn: Callable[[Container], Awaitable[T]]) -> T:
    """Run `fn` against a container of its own (settings, or just a database URL), then close it."""
    if isinstance(settings, str):
        settings = Settings(_env_file=None, database_url=settings)
    return run_with_container(fn, settings=settings)


def add_meters(stack: Stack) -> None:
    """A101 (seed profile, KES 100 on it), B201 (tuya-standard, 10 kWh), OFF1 (inactive); tenant Wanjiku."""
    stack.tuya.add_device("dev-a101", "seed", balance="100", price="25")
    stack.tuya.add_device("dev-b201", "tuya-standard", balance="10")
    stack.tuya.add_device("dev-off1", "seed")

    async def go(c: Container) -> None:
        register = dict(meters=c.meter_gateway, profiles=c.profiles)
        await register_meter(AddMeter(number="A101", name="Flat A1", device_id="dev-a101", price_per_kwh="25"),
                             uow=c.uow(), **register)
        await register_meter(AddMeter(number="B201", name="Shop 1", device_id="dev-b201", profile="tuya-standard",
                                      price_per_kwh="25"), uow=c.uow(), **register)
        meter = await register_meter(AddMeter(number="OFF1", name="Closed shop", device_id="dev-off1"),
                                     uow=c.uow(), **register)
        async with c.uow() as uow:
            meter.active = False
            await uow.meters.save(meter)
            await uow.commit()
        await add_tenant(AddTenant(phone="0712345678", name="Wanjiku", meter_numbers=["A101"]), uow=c.uow())

    with_container(stack.settings, go)


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The settings as environment variables, for a `lipameter` subprocess."""
    env = {k: v for k, v in os.environ.items() if k.isupper() and not k.startswith(("DARAJA_", "TUYA_", "AT_"))}
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return env
