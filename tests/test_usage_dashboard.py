"""The landlord sets a meter's low-balance threshold on its dashboard page (or back to automatic), over
real HTTP with the CSRF form, audited like `lipameter meter threshold`; bad input changes nothing."""

from __future__ import annotations

from decimal import Decimal

from tests.admin_helpers import boss, count, logged_in, module_database, stack, start_stack, watcher  # noqa: F401 (fixtures)


def threshold(stack):
    rows = stack.sql("SELECT u.threshold FROM meter_usage u JOIN meters m ON m.id = u.meter_id "
                     "WHERE m.number = 'A101'")
    return Decimal(rows[0].threshold) if rows and rows[0].threshold is not None else None


def test_the_landlord_sets_and_clears_a_meters_threshold(stack, boss):
    page = boss.page("/admin/meters/A101").text
    assert 'action="/admin/meters/A101/threshold"' in page and "known after 3 days of readings" in page
    audits = count(stack, "audit_log")
    for bad in ("", "-5", "0", "lots", "1.234", "\u0665\u0660", "1e3", "2000000"):
        answer = boss.form("/admin/meters/A101/threshold", threshold=bad, mode="fixed")
        assert answer.status_code == 422, (bad, answer.status_code)
    assert threshold(stack) is None and count(stack, "audit_log") == audits
    assert boss.form("/admin/meters/A101/threshold", threshold="50", mode="fixed", csrf=False).status_code == 403
    assert threshold(stack) is None

    answer = boss.form("/admin/meters/A101/threshold", threshold="75.5", mode="fixed")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/meters/A101"
    assert threshold(stack) == Decimal("75.5")
    page = boss.page("/admin/meters/A101").text
    assert "Low-balance threshold set to 75.5." in page and "below 75.5 KES" in page and "fixed" in page
    # "Automatic" ignores whatever is typed in the box.
    assert boss.form("/admin/meters/A101/threshold", threshold="10", mode="auto").status_code == 303
    assert threshold(stack) is None
    rows = stack.sql("SELECT actor, action, target, details FROM audit_log WHERE action = 'set_threshold' "
                     "ORDER BY id")
    assert [(r.actor, r.target) for r in rows] == [("boss", "A101"), ("boss", "A101")]
    assert "75.5" in str(rows[0].details) and "auto" in str(rows[1].details)


def test_a_viewer_cannot_set_it(stack, watcher):
    assert "/threshold" not in watcher.page("/admin/meters/A101").text
    answer = watcher.form("/admin/meters/A101/threshold", threshold="50", mode="fixed")
    assert answer.status_code == 403 and threshold(stack) is None


def test_unknown_meter_is_404(stack, boss):
    boss.page("/admin/meters/A101")
    assert boss.form("/admin/meters/NOPE/threshold", threshold="50", mode="fixed").status_code == 404
