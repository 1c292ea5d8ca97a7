"""Telegram Bot API stand-in: `/bot<token>/<method>` answered the way api.telegram.org answers.

What it copies from the real service, because python-telegram-bot and our gateway depend on it:
- parameters arrive as JSON, as a form (python-telegram-bot posts url-encoded fields, with
  `reply_markup` and `allowed_updates` JSON-encoded inside) or in the query string;
- answers are `{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, "description": "..."}`:
  401 "Unauthorized" for a wrong token, 404 "Not Found" for an unknown method, 403 "Forbidden: bot was
  blocked by the user", 400 "Bad Request: chat not found" for a chat that never spoke to the bot,
  "message is not modified", "message to edit not found", "query is too old…" for a callback query
  answered twice or never issued, "message text is empty" / "message is too long" (4096);
- messages carry message_id (one counter per chat, shared by both sides), date, chat, from, text and
  an inline `reply_markup`; callback data is at most 64 bytes (else BUTTON_DATA_INVALID);
- setWebhook wants HTTPS and a secret_token of 1-256 characters `A-Z a-z 0-9 _ -`. Deliberate
  relaxation: plain http is accepted for loopback hosts, so the demo and the tests need no TLS;
- getUpdates (for `lipameter bot --polling`) hands out what users did while no webhook was set, confirms
  by `offset`, and answers 409 Conflict while a webhook is set; it long-polls for at most 1 s.

The user's side (`say`, `share_contact`, `press`, `sticker`, `photo`, `block`) builds the updates Telegram
would send to the webhook; `deliver` posts one there with the registered secret, retrying a non-2xx answer
when asked (`retries`). Downtime: `go_offline` queues what users do, `come_back` delivers that backlog in
order; `lose_answers` makes Telegram miss our answer and send the same update again. The chat page
(sandbox/telegram_chat.py) is built on the same calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.telegram_api import BLOCKED, BOT_USER, DESCRIPTIONS, METHODS, ApiError, as_int, public


@dataclass
class Chat:
    id: int
    first_name: str
    language_code: str = "en"
    blocked: bool = False
    messages: list[dict] = field(default_factory=list)  # both sides, oldest first, current content
    next_id: int = 1

    def as_json(self) -> dict:
        return {"id": self.id, "type": "private", "first_name": self.first_name}

    def user(self) -> dict:
        return {"id": self.id, "is_bot": False, "first_name": self.first_name, "language_code": self.language_code}


class TelegramSandbox:
    """State shared by the HTTP handlers and the tests or the chat page (other threads): one lock."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.webhook = {"url": "", "secret_token": "", "allowed_updates": []}
        self.calls: list[dict] = []  # every Bot API call the bot made: method and parameters
        self.answers: list[dict] = []  # answerCallbackQuery calls: callback id and toast text
        self._chats: dict[int, Chat] = {}
        self._queries: dict[str, dict] = {}
        self._update_ids = itertools.count(1)
        self._pending: list[dict] = []  # updates for getUpdates, made while no webhook is set
        self._backlog: list[dict] = []  # updates made while the webhook was "down" (see go_offline)
        self._offline = False
        self._answers_to_lose = 0  # faults: the next N deliveries' answers are "lost", so they are re-sent
        self.deliveries: list[tuple[int, int]] = []  # every POST to the webhook: (update_id, HTTP status or 0)
        self._query_ids = itertools.count(4_100_000_000_000)
        self._lock = threading.RLock()

    # --- the user's side --------------------------------------------------------------------------

    def chat(self, chat_id: int, first_name: str = "Wanjiku", language_code: str = "en") -> Chat:
        with self._lock:
            if chat_id not in self._chats:
                self._chats[chat_id] = Chat(chat_id, first_name, language_code)
            return self._chats[chat_id]

    def _user_message(self, chat_id: int, **content) -> dict:
        with self._lock:
            chat = self.chat(chat_id)
            message = {"message_id": chat.next_id, "from": chat.user(), "chat": chat.as_json(),
                       "date": int(time.time()), **content}
            chat.next_id += 1
            chat.messages.append(message)
            return self._queued({"update_id": next(self._update_ids), "message": message})

    def _queued(self, update: dict) -> dict:
        if not self.webhook["url"]:
            self._pending.append(update)
        elif self._offline:
            self._backlog.append(update)
        return update

    # --- Telegram's delivery habits ---------------------------------------------------------------

    def go_offline(self) -> None:
        """The bot's server is down: what users do now waits in Telegram's queue (`come_back` sends it)."""
        with self._lock:
            self._offline = True

    def come_back(self, *, retries: int = 3, retry_delay_s: float = 0.1) -> list[int]:
        """The server is back: the backlog is delivered in order, each update retried while it is not
        answered 2xx, as Telegram does. The final status of each."""
        with self._lock:
            self._offline, backlog, self._backlog = False, self._backlog, []
        return [self.deliver(update, retries=retries, retry_delay_s=retry_delay_s) for update in backlog]

    def lose_answers(self, count: int = 1) -> None:
        """Fault: the next `count` deliveries reach the bot but Telegram never sees the answer (a timeout,
        a dropped connection), so it delivers the same update again."""
        with self._lock:
            self._answers_to_lose += count

    def say(self, chat_id: int, text: str) -> dict:
        entities = []
        if text.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0]) if text.split() else 1}]
        return self._user_message(chat_id, text=text, **({"entities": entities} if entities else {}))

    def share_contact(self, chat_id: int, phone: str, *, user_id: int | None = -1, first_name: str = "") -> dict:
        """The contact button sends the user's own card (user_id = theirs); pass another user_id, or None
        for a contact typed into the address book, to share someone else's."""
        chat = self.chat(chat_id)
        contact = {"phone_number": phone, "first_name": first_name or chat.first_name}
        if user_id is not None:
            contact["user_id"] = chat_id if user_id == -1 else user_id
        return self._user_message(chat_id, contact=contact)

    def sticker(self, chat_id: int) -> dict:
        return self._user_message(chat_id, sticker={
            "file_id": "CAACAgIAAxkBAAE", "file_unique_id": "AgAD", "type": "regular", "width": 512, "height": 512,
            "is_animated": False, "is_video": False, "emoji": "\U0001f44d"})

    def photo(self, chat_id: int) -> dict:
        return self._user_message(chat_id, photo=[{"file_id": "AgACAgQAAxk", "file_unique_id": "AQAD",
                                                   "width": 90, "height": 90, "file_size": 1200}])

    def press(self, chat_id: int, message_id: int, *, label: str | None = None, data: str | None = None) -> dict:
        """A button press. By `label`: only a button the message shows now (as in the app). By `data`:
        anything, as a stale client or a forger could send."""
        with self._lock:
            chat = self.chat(chat_id)
            message = next((m for m in chat.messages if m["message_id"] == message_id), None)
            if label is not None:
                rows = ((message or {}).get("reply_markup") or {}).get("inline_keyboard", [])
                data = next((b.get("callback_data") for row in rows for b in row if b.get("text") == label), None)
                if data is None:
                    raise LookupError(f"message {message_id} shows no button {label!r}")
            query_id = str(next(self._query_ids))
            self._queries[query_id] = {"chat_id": chat_id, "answered": False}
            shown = message or {"message_id": message_id, "chat": chat.as_json(), "date": 0}
            return self._queued({"update_id": next(self._update_ids), "callback_query": {
                "id": query_id, "from": chat.user(), "message": public(shown),
                "chat_instance": str(chat_id * 7), "data": data or ""}})

    def block(self, chat_id: int, blocked: bool = True) -> None:
        with self._lock:
            self.chat(chat_id).blocked = blocked

    def deliver(self, update: dict, *, timeout: float = 10, retries: int = 0, retry_delay_s: float = 0.1) -> int:
        """POST an update to the registered webhook with its secret, as Telegram does; the HTTP status.
        With `retries`, a non-2xx answer (or none) is retried, as Telegram retries (0: no answer at all)."""
        for attempt in range(retries + 1):
            status = self._post_once(update, timeout=timeout)
            with self._lock:
                lost, self._answers_to_lose = self._answers_to_lose > 0, max(0, self._answers_to_lose - 1)
            if lost:
                status = 0
            if 200 <= status < 300 or attempt == retries:
                return status
            time.sleep(retry_delay_s * (attempt + 1))
        return status

    def _post_once(self, update: dict, *, timeout: float) -> int:
        url, secret = self.webhook["url"], self.webhook["secret_token"]
        if not url:
            raise RuntimeError("no webhook registered")
        status = self._post(url, secret, update, timeout)
        with self._lock:
            self.deliveries.append((update.get("update_id", 0), status))
        return status

    @staticmethod
    def _post(url: str, secret: str, update: dict, timeout: float) -> int:
        request = urllib.request.Request(url, data=json.dumps(update).encode(), method="POST", headers={
            "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, OSError):  # nothing listening, or the connection dropped
            return 0

    # --- what the bot did -----------------------------------------------------------------------

    def messages(self, chat_id: int) -> list[dict]:
        """The chat as its user sees it now (both sides, edits applied), as Bot API message objects."""
        with self._lock:
            chat = self._chats.get(chat_id)
            return [public(m) | {"keyboard": m.get("_keyboard")} for m in chat.messages] if chat else []

    def bot_messages(self, chat_id: int) -> list[dict]:
        return [m for m in self.messages(chat_id) if m["from"]["id"] == BOT_USER["id"]]

    # --- the Bot API --------------------------------------------------------------------------

    def call(self, method: str, params: dict) -> object:
        with self._lock:
            if method.lower() != "getupdates":  # polled many times a second; not worth keeping
                self.calls.append({"method": method, "params": params})
            handler = METHODS.get(method.lower())
            if handler is None:
                raise ApiError(404, "Not Found")
            return handler(self, params)

    def _chat_for_bot(self, params: dict) -> Chat:
        chat = self._chats.get(as_int(params.get("chat_id")))
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if chat.blocked:
            raise ApiError(403, BLOCKED)
        return chat

    def _bot_message(self, chat: Chat, params: dict) -> dict:
        message_id = as_int(params.get("message_id"))
        message = next((m for m in chat.messages if m["message_id"] == message_id), None)
        if message is None or message["from"]["id"] != BOT_USER["id"]:
            raise ApiError(400, "Bad Request: message to edit not found")
        return message


async def _params(request: Request) -> dict:
    params = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        body = await request.json()
        params.update(body if isinstance(body, dict) else {})
    elif content_type.startswith("multipart/form-data"):
        params.update({k: v for k, v in (await request.form()).items() if isinstance(v, str)})
    else:
        params.update(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    return params


async def _bot_api(request: Request) -> JSONResponse:
    sandbox: TelegramSandbox = request.app.state.telegram
    if request.path_params["token"] != sandbox.token:
        return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401)
    method = request.path_params["method"]
    try:
        params = await _params(request)
        result = sandbox.call(method, params)
        waited = 0.0
        while method.lower() == "getupdates" and not result and waited < min(as_int(params.get("timeout")) or 0, 1):
            await asyncio.sleep(0.05)  # long polling, briefly: a sandbox need not hold connections for long
            waited += 0.05
            result = sandbox.call(method, params)
    except ApiError as error:
        return JSONResponse({"ok": False, "error_code": error.code, "description": error.description},
                            status_code=error.code)
    except ValueError:
        return JSONResponse({"ok": False, "error_code": 400, "description": "Bad Request: can't parse JSON"},
                            status_code=400)
    answer = {"ok": True, "result": result}
    if method.lower() in DESCRIPTIONS:
        answer["description"] = DESCRIPTIONS[method.lower()]
    return JSONResponse(answer)


def create_telegram_sandbox(*, token: str) -> Starlette:
    """An ASGI app speaking the Bot API; point TELEGRAM_API_BASE at where it is mounted."""
    from sandbox.telegram_chat import chat_routes

    app = Starlette(routes=[Route("/bot{token}/{method}", _bot_api, methods=["GET", "POST"]), *chat_routes])
    app.state.telegram = TelegramSandbox(token)
    return app
