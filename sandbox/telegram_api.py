"""The Bot API methods of the Telegram sandbox (sandbox/telegram.py): parameters in, a result out or an
`ApiError` with Telegram's own error code and description. Each runs under the sandbox's lock."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from sandbox.telegram import TelegramSandbox

BOT_USER = {"id": 7000000001, "is_bot": True, "first_name": "LipaMeter", "username": "LipaMeterSandboxBot",
            "can_join_groups": False, "can_read_all_group_messages": False, "supports_inline_queries": False}
BLOCKED = "Forbidden: bot was blocked by the user"
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


def as_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def public(message: dict) -> dict:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def _markup(params: dict) -> tuple[dict | None, dict | None]:
    """(inline keyboard, reply keyboard) from a reply_markup parameter, checked like Telegram does."""
    markup = params.get("reply_markup")
    if isinstance(markup, str):
        try:
            markup = json.loads(markup)
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object") from None
    if not markup:
        return None, None
    if "inline_keyboard" in markup:
        for button in (b for row in markup["inline_keyboard"] for b in row):
            if len(str(button.get("callback_data", "")).encode()) > 64 or not button.get("text"):
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return {"inline_keyboard": markup["inline_keyboard"]}, None
    return None, markup  # ReplyKeyboardMarkup / ReplyKeyboardRemove: shown by the app, not echoed


def _text(params: dict) -> str:
    text = str(params.get("text") or "")
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if len(text) > 4096:
        raise ApiError(400, "Bad Request: message is too long")
    return text


def _send_message(sandbox: TelegramSandbox, params: dict) -> dict:
    chat = sandbox._chat_for_bot(params)
    text, (inline, keyboard) = _text(params), _markup(params)
    message = {"message_id": chat.next_id, "from": BOT_USER, "chat": chat.as_json(), "date": int(time.time()),
               "text": text, **({"reply_markup": inline} if inline else {}), "_keyboard": keyboard}
    chat.next_id += 1
    chat.messages.append(message)
    return public(message)


def _edit(sandbox: TelegramSandbox, params: dict, *, text: bool) -> dict:
    chat = sandbox._chat_for_bot(params)
    message = sandbox._bot_message(chat, params)
    new_text = _text(params) if text else message["text"]
    inline, _ = _markup(params)
    if new_text == message["text"] and inline == message.get("reply_markup"):
        raise ApiError(400, NOT_MODIFIED)
    message["text"] = new_text
    message.pop("reply_markup", None)
    if inline:
        message["reply_markup"] = inline
    message["edit_date"] = int(time.time())
    return public(message)


def _answer_callback(sandbox: TelegramSandbox, params: dict) -> bool:
    query_id = str(params.get("callback_query_id") or "")
    query = sandbox._queries.get(query_id)
    if query is None or query["answered"]:
        raise ApiError(400, QUERY_TOO_OLD)
    query["answered"] = True
    sandbox.answers.append({"chat_id": query["chat_id"], "callback_query_id": query_id,
                            "text": params.get("text") or ""})
    return True


def _set_webhook(sandbox: TelegramSandbox, params: dict) -> bool:
    url, secret = str(params.get("url") or ""), str(params.get("secret_token") or "")
    if url:
        parsed = urlparse(url)
        if parsed.scheme != "https" and not (parsed.scheme == "http" and parsed.hostname in _LOOPBACK):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        if secret and not _SECRET.match(secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
    allowed = params.get("allowed_updates") or []
    if isinstance(allowed, str):
        allowed = json.loads(allowed or "[]")
    sandbox.webhook = {"url": url, "secret_token": secret if url else "", "allowed_updates": allowed}
    return True


def _get_updates(sandbox: TelegramSandbox, params: dict) -> list[dict]:
    if sandbox.webhook["url"]:
        raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                            "use deleteWebhook to delete the webhook first")
    offset, limit = as_int(params.get("offset")) or 0, min(max(as_int(params.get("limit")) or 100, 1), 100)
    sandbox._pending = [u for u in sandbox._pending if u["update_id"] >= offset]  # offset confirms the rest
    return sandbox._pending[:limit]


def _webhook_info(sandbox: TelegramSandbox, params: dict) -> dict:
    info = {"url": sandbox.webhook["url"], "has_custom_certificate": False, "pending_update_count": 0}
    if sandbox.webhook["allowed_updates"]:
        info["allowed_updates"] = sandbox.webhook["allowed_updates"]
    # As the real API: present only after a delivery to the webhook failed.
    info.update({k: sandbox.webhook[k] for k in ("last_error_date", "last_error_message") if sandbox.webhook.get(k)})
    return info


METHODS = {
    "getme": lambda sandbox, params: BOT_USER,
    "sendmessage": _send_message,
    "editmessagetext": lambda sandbox, params: _edit(sandbox, params, text=True),
    "editmessagereplymarkup": lambda sandbox, params: _edit(sandbox, params, text=False),
    "answercallbackquery": _answer_callback,
    "setwebhook": _set_webhook,
    "deletewebhook": lambda sandbox, params: _set_webhook(sandbox, {}),
    "getwebhookinfo": _webhook_info,
    "getupdates": _get_updates,
}
DESCRIPTIONS = {"setwebhook": "Webhook was set", "deletewebhook": "Webhook was deleted"}


