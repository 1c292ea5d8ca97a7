"""The WhatsApp room's pure parts: settings, rendering limits, reading deliveries, signatures."""

from __future__ import annotations

from core.dialogue import machine
from core.dialogue.types import Caller, MeterChoice
from sandbox.whatsapp_payloads import check
from web.settings import Settings
from whatsapp.inbound import read_delivery, signature_of, signed
from whatsapp.render import parse_id, render


def test_a_partial_whatsapp_configuration_is_named():
    assert Settings(_env_file=None).missing_for_whatsapp() == []
    partial = Settings(_env_file=None, whatsapp_token="t", whatsapp_app_secret="s")
    assert partial.missing_for_whatsapp() == ["WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_VERIFY_TOKEN"]
    assert "WHATSAPP_VERIFY_TOKEN" in partial.missing_for_serve() and not partial.whatsapp_enabled
    only_template = Settings(_env_file=None, whatsapp_receipt_template="lipameter_receipt")
    assert len(only_template.missing_for_whatsapp()) == 4
    assert only_template.whatsapp_template == ("lipameter_receipt", "en")
    assert Settings(_env_file=None, whatsapp_receipt_template="r:sw").whatsapp_template == ("r", "sw")


def test_every_screen_renders_to_a_payload_meta_accepts():
    meters = tuple(MeterChoice(number=f"M{i:02d}", name=f"A rather long meter name number {i}") for i in range(12))
    caller = Caller(phone="254712345678", meters=meters, min_amount=10, max_amount=70_000)
    step = machine.start(caller)
    seen = set()
    for entries in (["1"], ["1", "98"], ["1", "98", "98"], ["1", "1"], ["1", "1", "500"], ["4"], ["1", "1", "x"]):
        step = machine.start(caller)
        for entry in entries:
            step = machine.handle(step.state, entry, caller)
        payload = render(step.screen, state=step.state, caller=caller, version=7)
        assert check({"messaging_product": "whatsapp", "to": "254712345678", **payload}, {}) == "254712345678"
        seen.add(payload.get("interactive", {}).get("type"))
        if step.screen.name == "buy_meters":
            rows = payload["interactive"]["action"]["sections"][0]["rows"]
            assert len(rows) <= 10 and rows[0]["title"] in ("M00", "M05", "M10") and rows[0]["description"].startswith("A rather")
            assert [r["title"] for r in rows[-3:]] in (["More", "Back", "Home"], ["Other meter", "Back", "Home"])
            assert parse_id(rows[-1]["id"]) == (7, "00")
    assert seen == {"list", "button"}


def test_reading_deliveries_and_signatures():
    body = b'{"object": "whatsapp_business_account"}'
    assert signed(body, signature_of(body, "s3cret"), "s3cret")
    assert not signed(body, signature_of(body, "s3cret"), "") and not signed(body, "", "s3cret")
    value = {"metadata": {"phone_number_id": "1"}, "contacts": [{"wa_id": "254712345678", "profile": None}],
             "messages": [{"from": "254712345678", "id": "wamid.1", "type": "text", "text": {"body": "hi"}},
                          {"from": "+2547", "id": "wamid.2", "type": "text", "text": {"body": "x"}},
                          {"from": "254712345678", "id": "wamid.3", "type": "interactive",
                           "interactive": {"type": "nfm_reply"}},
                          "junk"],
             "statuses": [{"id": "wamid.9", "status": "read", "recipient_id": "254712345678"}, {"id": ""}]}
    data = {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": value}]}]}
    messages, statuses = read_delivery(data, phone_number_id="1")
    assert [(m.message_id, m.kind, m.text) for m in messages] == [("wamid.1", "text", "hi"), ("wamid.3", "other", "")]
    assert [(s.message_id, s.status) for s in statuses] == [("wamid.9", "read")]
    assert read_delivery(data, phone_number_id="2") == ([], [])  # another number of the same app
