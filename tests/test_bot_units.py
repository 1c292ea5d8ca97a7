"""Unit tests of the Telegram pieces: the renderer, command parsing, the per-chat limiter, receipts
routed by `notify` (with core's fakes), and the Bot API gateway against the sandbox over real HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from bot.conversation import command_of
from bot.render import parse_data, render
from core.dialogue.machine import start
from core.dialogue.screens import goodbye
from core.dialogue.types import Caller, DialogueState, Frame, MeterChoice, Option, Screen
from core.jobs.kinds import Notify, NotifyEvent
from core.meters.model import Meter
from core.notify.service import notify
from core.payments.model import Channel, Payment, PaymentStatus
from core.ports import Blocked
from core.shared.errors import UpstreamError
from core.tenants.model import Tenant
from gateways.telegram import PerChatLimiter, TelegramBotApi
from sandbox.telegram import create_telegram_sandbox
from tests.fakes import FakeClock, FakeStore, FakeUnitOfWork
from tests.servers import serve

TOKEN = "123:unit-token"


# --- rendering ---------------------------------------------------------------------------------

def test_screens_become_messages_with_versioned_buttons():
    caller = Caller(phone="254712345678", meters=(MeterChoice(number="A101", name="Flat A1"),), min_amount=150,
                    max_amount=800)
    step = start(caller)
    send = render(step.screen, state=step.state, caller=caller, version=7)
    assert send.text == "LipaMeter" and send.track_version == 7
    assert [[b.data for b in row] for row in send.buttons] == [["7:1"], ["7:2"], ["7:3"], ["7:4"]]
    state = DialogueState(frame=Frame(screen="buy_amount", meter=caller.meters[0]))
    amount = Screen("buy_amount", "Enter amount:", expects="amount")
    rows = render(amount, state=state, caller=caller, version=8).buttons
    assert [b.label for b in rows[-1]] == ["KES 200", "KES 500"]  # only picks within the limits
    confirm = Screen("buy_confirm", "Confirm payment:", options=(Option("1", "Pay now"), Option("2", "Cancel")))
    assert [[b.label for b in row] for row in render(confirm, state=state, caller=caller, version=9).buttons] == [
        ["Pay now", "Cancel"]]
    ended = render(goodbye("sw", "cancelled"), state=state.model_copy(update={"language": "sw"}), caller=caller,
                   version=10)
    assert ended.text == "Imeghairiwa. Hakuna pesa iliyotozwa." and ended.buttons[0][0].label == "Menyu"


def test_callback_data_and_commands_are_parsed_strictly():
    assert parse_data("12:00") == (12, "00") and parse_data("3:menu") == (3, "menu")
    for bad in ("", "12", ":1", "x:1", "1:1 ", "1:abc", "1:" + "9" * 8, "1" * 10 + ":1"):
        assert parse_data(bad) is None
    assert command_of("/start") == "start" and command_of("/Balance@LipaMeterBot now") == "balance"
    assert command_of("hello") is None and command_of("/") is None and command_of("/ x") is None


async def test_per_chat_limiter_spaces_messages_to_one_chat_only():
    now, slept = [100.0], []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))

    limiter = PerChatLimiter(1.0, clock=lambda: now[0], sleep=sleep)
    await limiter.wait(1)
    await limiter.wait(2)
    await limiter.wait(1)
    await limiter.wait(1)
    assert slept == [1.0, 2.0]  # chat 1's second and third message wait their turn; chat 2 never waits
    now[0] += 5
    await limiter.wait(1)
    assert slept == [1.0, 2.0]


# --- receipts routed by notify -----------------------------------------------------------------

class FakeTelegram:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent, self.error = [], error

    async def send(self, chat_id: int, text: str) -> int:
        if self.error:
            raise self.error
        self.sent.append((chat_id, text))
        return 1


class FakeSms:
    def __init__(self) -> None:
        self.sent = []

    async def send(self, phone: str, message: str) -> None:
        self.sent.append((phone, message))


def _store(channel: Channel, chat_id: int | None = 4242) -> FakeStore:
    store = FakeStore()
    now = datetime(2026, 11, 27, 9, tzinfo=UTC)
    store.meters["m"] = Meter(id="m", number="A101", name="Flat A1", device_id="d")
    store.tenants["t"] = Tenant(id="t", phone="254712345678", telegram_user_id=chat_id, telegram_chat_id=chat_id)
    store.payments["p"] = Payment(id="p", amount=100, phone="254712345678", meter_id="m", channel=channel,
                                  created_at=now, updated_at=now, status=PaymentStatus.FAILED, result_code="1032",
                                  tenant_id="t")
    return store


@pytest.mark.parametrize("channel, chat_id, via", [
    (Channel.TELEGRAM, 4242, "telegram"), (Channel.USSD, 4242, "sms"), (Channel.TELEGRAM, None, "sms")])
async def test_telegram_payments_are_answered_in_telegram(channel, chat_id, via):
    store, telegram, sms = _store(channel, chat_id), FakeTelegram(), FakeSms()
    event = Notify(NotifyEvent.PAYMENT_FAILED, payment_id="p")
    assert await notify(event, uow=FakeUnitOfWork(store), sms=sms, clock=FakeClock(), telegram=telegram) == "sent"
    assert [n["channel"] for n in store.notifications] == [via]
    assert len(telegram.sent if via == "telegram" else sms.sent) == 1
    assert len(sms.sent if via == "telegram" else telegram.sent) == 0
    if via == "telegram":
        assert telegram.sent[0][0] == 4242 and "you cancelled the M-Pesa prompt" in telegram.sent[0][1]


async def test_blocked_bot_falls_back_to_sms_and_transient_trouble_retries():
    store, sms = _store(Channel.TELEGRAM), FakeSms()
    blocked = FakeTelegram(Blocked("Forbidden: bot was blocked by the user"))
    event = Notify(NotifyEvent.PAYMENT_FAILED, payment_id="p")
    assert await notify(event, uow=FakeUnitOfWork(store), sms=sms, clock=FakeClock(), telegram=blocked) == "sent"
    assert [(n["channel"], n["status"]) for n in store.notifications] == [("telegram", "failed"), ("sms", "sent")]
    assert len(sms.sent) == 1
    # Run again (a job retry), it tells nobody twice.
    assert await notify(event, uow=FakeUnitOfWork(store), sms=sms, clock=FakeClock(), telegram=blocked) == "sent"
    assert len(sms.sent) == 1 and len(store.notifications) == 2
    store, sms = _store(Channel.TELEGRAM), FakeSms()
    busy = FakeTelegram(UpstreamError("Telegram is busy", transient=True))
    with pytest.raises(UpstreamError):  # the job retries Telegram later; no SMS yet
        await notify(event, uow=FakeUnitOfWork(store), sms=sms, clock=FakeClock(), telegram=busy)
    assert sms.sent == [] and store.notifications == []


# --- the gateway and the sandbox over HTTP -----------------------------------------------------

@pytest.fixture
def bot_api():
    app = create_telegram_sandbox(token=TOKEN)
    with serve(app) as server:
        yield app.state.telegram, server.url


async def test_gateway_sends_and_reports_blocked_and_gone_chats(bot_api):
    sandbox, url = bot_api
    sandbox.chat(501, "Wanjiku")
    api = TelegramBotApi(TOKEN, api_base=url, limiter=PerChatLimiter(0))
    message_id = await api.send(501, "LipaMeter: KES 100 received.")
    assert sandbox.bot_messages(501)[-1]["text"] == "LipaMeter: KES 100 received." and message_id == 1
    sandbox.block(501)
    with pytest.raises(Blocked, match="bot was blocked by the user"):
        await api.send(501, "again")
    with pytest.raises(Blocked, match="chat not found"):
        await api.send(999, "nobody")
    with pytest.raises(UpstreamError) as wrong:
        await TelegramBotApi("123:wrong", api_base=url).send(501, "x")
    assert not wrong.value.transient and "wrong" not in wrong.value.message
    with pytest.raises(UpstreamError) as down:
        await TelegramBotApi(TOKEN, api_base="http://127.0.0.1:9").send(501, "x")
    assert down.value.transient and TOKEN not in down.value.message


def test_sandbox_speaks_the_bot_api(bot_api):
    sandbox, url = bot_api
    sandbox.chat(7, "Otieno")

    def call(method: str, **params) -> httpx.Response:
        return httpx.post(f"{url}/bot{TOKEN}/{method}", data=params)  # form fields, as python-telegram-bot posts

    markup = json.dumps({"inline_keyboard": [[{"text": "Pay now", "callback_data": "3:1"}]]})
    sent = call("sendMessage", chat_id="7", text="Confirm", reply_markup=markup).json()
    assert sent["ok"] and sent["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "3:1"
    message_id = sent["result"]["message_id"]
    assert call("editMessageReplyMarkup", chat_id=7, message_id=message_id).json()["ok"]
    again = call("editMessageReplyMarkup", chat_id=7, message_id=message_id)
    assert again.status_code == 400 and "message is not modified" in again.json()["description"]
    assert call("editMessageText", chat_id=7, message_id=999, text="x").json()["description"] == \
        "Bad Request: message to edit not found"
    press = sandbox.press(7, message_id, data="3:1")["callback_query"]["id"]
    assert call("answerCallbackQuery", callback_query_id=press).json() == {"ok": True, "result": True}
    assert "query is too old" in call("answerCallbackQuery", callback_query_id=press).json()["description"]
    assert call("sendMessage", chat_id=7, text="x" * 4097).json()["description"] == "Bad Request: message is too long"
    long_data = json.dumps({"inline_keyboard": [[{"text": "x", "callback_data": "9" * 65}]]})
    assert "BUTTON_DATA_INVALID" in call("sendMessage", chat_id=7, text="x", reply_markup=long_data).text
    assert httpx.post(f"{url}/bot{TOKEN}/setWebhook", json={"url": "http://example.com/hook"}).status_code == 400
    assert httpx.post(f"{url}/bot{TOKEN}/setWebhook", json={"url": "https://example.com/hook",
                                                            "secret_token": "bad secret!"}).status_code == 400
    set_ok = httpx.post(f"{url}/bot{TOKEN}/setWebhook", json={"url": "https://example.com/hook", "secret_token": "s_1"})
    assert set_ok.json() == {"ok": True, "result": True, "description": "Webhook was set"}
    assert httpx.get(f"{url}/bot{TOKEN}/getWebhookInfo").json()["result"]["url"] == "https://example.com/hook"
    assert httpx.post(f"{url}/bot{TOKEN}/deleteWebhook").json()["description"] == "Webhook was deleted"
    assert httpx.post(f"{url}/bot{TOKEN}/sendSticker").json() == {"ok": False, "error_code": 404,
                                                                   "description": "Not Found"}
    assert httpx.post(f"{url}/bot123:nope/getMe").json()["error_code"] == 401
    assert httpx.get(f"{url}/sandbox/chat").text.startswith("<!doctype html>")
