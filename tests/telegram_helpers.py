"""A Telegram user for end-to-end tests: updates built by the Bot API sandbox (as Telegram builds them),
delivered to the app's webhook over HTTP with the secret, and the bot's replies read back from the sandbox."""

from __future__ import annotations

import time

from sandbox.telegram import TelegramSandbox


class TelegramUser:
    def __init__(self, sandbox: TelegramSandbox, chat_id: int = 5550001, name: str = "Wanjiku",
                 phone: str = "254712345678", language_code: str = "en") -> None:
        self.sandbox, self.chat_id, self.phone = sandbox, chat_id, phone
        sandbox.chat(chat_id, first_name=name, language_code=language_code)

    # --- acting ---------------------------------------------------------------------------------

    def deliver(self, update: dict, *, sends: int = 1) -> list[str]:
        """Post the update; wait for the bot to send `sends` new messages; their texts."""
        before = self._sent()
        assert self.sandbox.deliver(update) == 200
        self._wait(lambda: self._sent() >= before + sends, f"{sends} new message(s)")
        return [m["text"] for m in self.sandbox.bot_messages(self.chat_id)[-sends:]] if sends else []

    def send(self, text: str) -> str:
        return self.deliver(self.sandbox.say(self.chat_id, text))[-1]

    def share_contact(self, phone: str | None = None, *, user_id: int | None = -1, sends: int = 2) -> list[str]:
        return self.deliver(self.sandbox.share_contact(self.chat_id, phone or self.phone, user_id=user_id), sends=sends)

    def press(self, label: str, message_id: int | None = None) -> str:
        """Press a button the newest keyboard (or message `message_id`) shows; the bot's next message."""
        message_id = message_id or self.keyboard_message()["message_id"]
        return self.deliver(self.sandbox.press(self.chat_id, message_id, label=label))[-1]

    def press_data(self, message_id: int, data: str) -> str:
        """Press a button by its raw callback data (an old or forged one); the toast the bot answered with."""
        update = self.sandbox.press(self.chat_id, message_id, data=data)
        query_id = update["callback_query"]["id"]
        assert self.sandbox.deliver(update) == 200
        self._wait(lambda: any(a["callback_query_id"] == query_id for a in self.sandbox.answers), "an answer")
        return next(a["text"] for a in self.sandbox.answers if a["callback_query_id"] == query_id)

    # --- reading --------------------------------------------------------------------------------

    @property
    def last(self) -> dict:
        return self.sandbox.bot_messages(self.chat_id)[-1]

    def keyboard_message(self) -> dict:
        return next(m for m in reversed(self.sandbox.bot_messages(self.chat_id)) if m.get("reply_markup"))

    def buttons(self, message: dict | None = None) -> list[str]:
        message = message or self.last
        return [b["text"] for row in (message.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]

    def message(self, message_id: int) -> dict:
        return next(m for m in self.sandbox.messages(self.chat_id) if m["message_id"] == message_id)

    def wait_for_text(self, start: str, timeout: float = 15) -> dict:
        """The bot's first message starting with `start`, once it has been sent (receipts come late)."""
        def found():
            return next((m for m in self.sandbox.bot_messages(self.chat_id) if m["text"].startswith(start)), None)
        self._wait(lambda: found() is not None, f"a message starting {start!r}", timeout)
        return found()

    def _sent(self) -> int:
        return sum(1 for call in self.sandbox.calls if call["method"] == "sendMessage"
                   and str(call["params"].get("chat_id")) == str(self.chat_id))

    @staticmethod
    def _wait(done, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"the bot did not send {what} in {timeout} s")
            time.sleep(0.01)
