"""The dashboard in a real browser: Debian's chromium driven by Playwright against the real
service. Sign in, the list, a session page, and changes made through the library arriving on
the open page without a reload."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from agent_core.models import SessionState
from agent_core.sessions.session_manager import SessionManager
from tests.browser.harness import LiveServer

WAIT_MS = 10_000


def _sign_in(page: Any, server: LiveServer, key: str) -> None:
    page.goto(server.url + "/")
    assert page.url.startswith(server.url + "/signin")
    page.fill("#key", key)
    page.click("button[type=submit]")


def _mark(page: Any) -> None:
    """A value that lives as long as the document: gone if the page reloads."""
    page.evaluate("window.__noReload = 'still here'")


def _not_reloaded(page: Any) -> bool:
    return bool(page.evaluate("window.__noReload === 'still here'"))


def _live(page: Any) -> None:
    page.wait_for_selector('[data-live-status][data-state="on"]', timeout=WAIT_MS)


def test_sign_in_list_and_open_a_session(page: Any, server: LiveServer, tenant: str) -> None:
    async def seed(m: SessionManager) -> str:
        s = await m.create_session(
            "support-triage", "ana", context={"ticket": "T-1", "priority": "high"}
        )
        await m.append_checkpoint(s.session_id, "classified", {"intent": "refund"})
        await m.create_session("code-review", "ben")
        return s.session_id

    sid = server.call(tenant, seed)
    key, _ = server.create_key(tenant, "writer")

    _sign_in(page, server, "ak_wrong")
    page.wait_for_selector(".alert-error")
    assert "not valid" in page.inner_text(".alert-error")
    assert "/signin" in page.url
    # The refused sign-in answered 401, which the browser logs; nothing else may be logged.
    assert all("401" in e for e in page.console_errors)
    page.console_errors.clear()

    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    assert page.inner_text('[data-test="tenant"]') == tenant
    assert page.inner_text('[data-test="count-active"] .stat-value') == "2"

    page.click("nav.nav >> text=Sessions")
    page.wait_for_url(server.url + "/sessions")
    rows = page.locator("tbody tr")
    assert rows.count() == 2
    page.select_option("#f-state", "active")
    page.fill("#f-agent", "support-triage")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*agent_type=support-triage.*"))
    assert page.locator("tbody tr").count() == 1

    page.click(f'a[href="/sessions/{sid}"]')
    page.wait_for_url(server.url + f"/sessions/{sid}")
    assert page.inner_text('[data-test="state"]').strip().lower() == "active"
    assert '"priority": "high"' in page.inner_text('[data-test="context"]')
    assert "classified" in page.inner_text('[data-test="timeline"]')
    assert page.console_errors == []


def test_a_change_arrives_on_the_open_session_page(
    page: Any, server: LiveServer, tenant: str
) -> None:
    sid = server.call(tenant, lambda m: _new(m, "planner"))
    key, _ = server.create_key(tenant, "reader")
    _sign_in(page, server, key)
    page.goto(server.url + f"/sessions/{sid}")
    _live(page)
    _mark(page)

    async def work(m: SessionManager) -> None:
        await m.append_checkpoint(sid, "tool_called", {"tool": "search"})
        await m.patch_context(sid, {"step": 2})
        await m.set_state(sid, SessionState.PAUSED)

    server.call(tenant, work)
    expect(page.locator('[data-test="timeline"]')).to_contain_text("tool_called", timeout=WAIT_MS)
    expect(page.locator('[data-test="state"]')).to_have_text("paused", timeout=WAIT_MS)
    expect(page.locator('[data-test="context"]')).to_contain_text('"step": 2', timeout=WAIT_MS)
    assert _not_reloaded(page)
    assert page.console_errors == []


def test_a_new_session_arrives_on_the_open_overview_and_list(
    page: Any, server: LiveServer, tenant: str
) -> None:
    server.call(tenant, lambda m: _new(m, "planner"))
    key, _ = server.create_key(tenant, "reader")
    _sign_in(page, server, key)
    page.wait_for_url(server.url + "/")
    _live(page)
    _mark(page)
    assert page.inner_text('[data-test="count-active"] .stat-value') == "1"

    created = server.call(tenant, lambda m: _new(m, "live-arrival"))
    expect(page.locator('[data-test="count-active"] .stat-value')).to_have_text(
        "2", timeout=WAIT_MS
    )
    assert page.locator(f'tr[data-session="{created}"]').count() == 1
    assert _not_reloaded(page)

    page.goto(server.url + "/sessions")
    _live(page)
    _mark(page)
    third = server.call(tenant, lambda m: _new(m, "third"))
    page.wait_for_selector(f'tr[data-session="{third}"]', timeout=WAIT_MS)
    assert _not_reloaded(page)
    assert page.console_errors == []


def test_a_writer_uses_the_forms_and_a_reader_sees_none(
    page: Any, browser: Any, server: LiveServer, tenant: str
) -> None:
    sid = server.call(tenant, lambda m: _new(m, "worker"))
    writer, _ = server.create_key(tenant, "writer")
    _sign_in(page, server, writer)
    page.goto(server.url + f"/sessions/{sid}")
    page.click('button[data-action="pause"]')
    page.wait_for_selector(".alert-info")
    assert page.inner_text(".alert-info") == "Session paused."
    assert page.inner_text('[data-test="state"]').strip().lower() == "paused"
    assert page.locator('button[data-action="resume"]').count() == 1

    reader, _ = server.create_key(tenant, "reader")
    other = browser.new_context()
    try:
        reader_page = other.new_page()
        _sign_in(reader_page, server, reader)
        reader_page.goto(server.url + f"/sessions/{sid}")
        assert reader_page.locator("button[data-action]").count() == 0
        assert reader_page.locator('form[action$="/state"]').count() == 0
        assert reader_page.inner_text(".role").lower() == "reader"
    finally:
        other.close()

    page.click("form.signout button")
    page.wait_for_url(re.compile(r".*/signin$"))
    page.goto(server.url + "/")
    assert "/signin" in page.url
    assert page.console_errors == []


async def _new(manager: SessionManager, agent_type: str) -> str:
    return (await manager.create_session(agent_type, "u")).session_id
