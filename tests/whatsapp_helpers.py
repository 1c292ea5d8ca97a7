"""A WhatsApp user for end-to-end tests: deliveries built by the Cloud API sandbox (as Meta builds them),
signed with the app secret and posted to the app's webhook over HTTP, the app's replies read back from
the sandbox (which checked their shapes)."""

from __future__ import annotations

import time

from sandbox.whatsapp import WhatsAppSandbox


class WhatsAppUser:
    def __init__(self, sandbox: WhatsAppSandbox, wa_id: str = "254712345678", name: str = "Wanjiku") -> None:
        self.sandbox, self.wa_id = sandbox, wa_id
        sandbox.user(wa_id, name)

    # --- acting ---------------------------------------------------------------------------------

    def deliver(self, delivery: dict, *, sends: int = 1) -> list[str]:
        """Post the delivery (signed); the texts of the `sends` replies it got (0: none expected)."""
        before = len(self.sandbox.business_messages(self.wa_id))
        assert self.sandbox.deliver(delivery, retries=False) == 200
        self._wait(lambda: len(self.sandbox.business_messages(self.wa_id)) >= before + sends, f"{sends} replies")
        replies = self.sandbox.business_messages(self.wa_id)[before:]
        assert len(replies) == sends, [r["text"] for r in replies]
        return [r["text"] for r in replies]

    def say(self, text: str, *, sends: int = 1) -> str:
        replies = self.deliver(self.sandbox.say(self.wa_id, text), sends=sends)
        return replies[-1] if replies else ""

    def tap(self, title: str, message_id: str | None = None) -> str:
        """Tap a button or list row the newest interactive message (or message `message_id`) shows."""
        message_id = message_id or self.interactive()["id"]
        return self.deliver(self.sandbox.tap(self.wa_id, message_id, title=title))[-1]

    def tap_id(self, message_id: str, reply_id: str) -> str:
        return self.deliver(self.sandbox.tap(self.wa_id, message_id, reply_id=reply_id))[-1]

    # --- reading --------------------------------------------------------------------------------

    @property
    def last(self) -> dict:
        return self.sandbox.business_messages(self.wa_id)[-1]

    def interactive(self) -> dict:
        return next(m for m in reversed(self.sandbox.business_messages(self.wa_id))
                    if m["payload"].get("type") == "interactive")

    def choices(self, message: dict | None = None) -> list[str]:
        return [c["title"] for c in self.rows(message)]

    def rows(self, message: dict | None = None) -> list[dict]:
        interactive = (message or self.last)["payload"].get("interactive") or {}
        action = interactive.get("action") or {}
        if interactive.get("type") == "button":
            return [b["reply"] for b in action["buttons"]]
        if interactive.get("type") == "list":
            return [row for section in action["sections"] for row in section["rows"]]
        return []

    def kind(self, message: dict | None = None) -> str:
        payload = (message or self.last)["payload"]
        return payload.get("interactive", {}).get("type") or payload.get("type")

    def wait_for_text(self, start: str, timeout: float = 15) -> dict:
        """The first business message starting with `start`, once sent (receipts come late)."""
        def found():
            return next((m for m in self.sandbox.business_messages(self.wa_id) if m["text"].startswith(start)), None)
        self._wait(lambda: found() is not None, f"a message starting {start!r}", timeout)
        return found()

    @staticmethod
    def _wait(done, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"the app did not send {what} in {timeout} s")
            time.sleep(0.01)
