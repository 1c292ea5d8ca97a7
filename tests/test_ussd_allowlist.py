"""USSD_ALLOWED_IPS: only Africa's Talking's addresses may post hops (it does not sign them)."""

import httpx

from tests.stack import Stack

HOP = {"sessionId": "ATUid_allow", "serviceCode": "*384*1#", "phoneNumber": "+254712345678",
       "networkCode": "63902", "text": ""}


def test_ussd_hops_only_from_allowed_sources(tmp_path, sqlite_template):
    import shutil

    shutil.copy(sqlite_template, tmp_path / "db.sqlite")
    stack = Stack(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", ussd_allowed_ips="10.0.0.0/8",
                  trusted_proxies="127.0.0.1/32")
    try:
        refused = httpx.post(f"{stack.url}/ussd", data=HOP)
        assert refused.status_code == 403 and refused.text.startswith("END ")
        assert stack.sql("SELECT count(*) n FROM ussd_sessions")[0].n == 0
        allowed = httpx.post(f"{stack.url}/ussd", data=HOP, headers={"X-Forwarded-For": "10.2.3.4"})
        assert allowed.status_code == 200 and allowed.text.startswith("CON LipaMeter")
        assert httpx.get(f"{stack.url}/healthz").status_code == 200  # other paths are not affected
    finally:
        stack.stop()
