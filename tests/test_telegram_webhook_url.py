"""Telegram's setWebhook takes only HTTPS on ports 443, 80, 88 or 8443: `serve` refuses a webhook URL
api.telegram.org would refuse, unless the bot talks to another Bot API server (TELEGRAM_API_BASE)."""

from __future__ import annotations

import pytest

from tests.test_cli import lipameter_process
from web.settings import Settings

TOKEN = "7000000001:sandbox-test-token"


def settings(**values) -> Settings:
    return Settings(_env_file=None, telegram_bot_token=TOKEN, telegram_webhook_secret="s3cret", **values)


@pytest.mark.parametrize("values", [
    dict(public_base_url="https://pay.example.co.ke"),
    dict(public_base_url="https://pay.example.co.ke:8443/"),
    dict(public_base_url="http://10.0.0.5:9000", telegram_webhook_url="https://bot.example.co.ke:88/telegram/webhook"),
    dict(public_base_url="http://127.0.0.1:8000", telegram_api_base="http://127.0.0.1:8081"),  # self-hosted
    dict(public_base_url=""),  # no webhook: nothing to refuse
])
def test_webhook_urls_telegram_takes(values):
    assert settings(**values).telegram_webhook_problem() is None


@pytest.mark.parametrize("values,reason", [
    (dict(public_base_url="http://pay.example.co.ke"), "not an https:// URL"),
    (dict(public_base_url="https://pay.example.co.ke:8000"), "port 8000"),
    (dict(public_base_url="https://pay.example.co.ke", telegram_webhook_url="https://pay.example.co.ke:9443/tg"),
     "port 9443"),
    (dict(public_base_url="https://pay.example.co.ke:99999"), "no valid port"),
])
def test_webhook_urls_telegram_refuses(values, reason):
    assert reason in settings(**values).telegram_webhook_problem()
    assert settings(telegram_api_base="http://127.0.0.1:8081", **values).telegram_webhook_problem() is None


def test_serve_refuses_a_webhook_url_telegram_cannot_use(tmp_path):
    env = {"PUBLIC_BASE_URL": "https://pay.example.co.ke:8000", "API_KEYS": "k", "CALLBACK_TOKEN": "t" * 32,
           "DARAJA_CONSUMER_KEY": "k", "DARAJA_CONSUMER_SECRET": "s", "DARAJA_SHORTCODE": "174379",
           "DARAJA_PASSKEY": "p", "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": "s3cret",
           "TELEGRAM_API_BASE": "", "TUYA_ENDPOINT": "https://openapi.tuyaeu.com", "TUYA_ACCESS_ID": "i",
           "TUYA_ACCESS_SECRET": "s"}
    result = lipameter_process("serve", database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db", env=env)
    assert result.returncode == 2, result.stderr
    assert "port 8000" in result.stderr and "443, 80, 88, 8443" in result.stderr and TOKEN not in result.stderr
