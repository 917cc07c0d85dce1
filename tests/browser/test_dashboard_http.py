"""The dashboard over plain HTTP (httpx, no browser) against the real service: sign-in and its
cookie, CSRF on every form, roles, escaping, the security headers, paging, the event stream."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from agent_core.models import SessionState
from agent_core.server.dashboard.auth import COOKIE_NAME, CookieSigner, DashSession
from agent_core.server.dashboard.router import PAGE_SIZE
from agent_core.server.hub import TenantHub
from agent_core.sessions.session_manager import SessionManager
from tests.browser.harness import LiveServer, live_server
from tests.conftest import ManagerFactory

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, follow_redirects=False, timeout=10)


def _csrf(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field in the page"
    return found.group(1)


def _signin(client: httpx.Client, key: str) -> httpx.Response:
    token = _csrf(client.get("/signin").text)
    return client.post("/signin", data={"key": key, "csrf": token, "next": "/"})


@contextmanager
def _signed_in(server: LiveServer, tenant: str, role: str = "writer") -> Iterator[httpx.Client]:
    key, _ = server.create_key(tenant, role)
    with _client(server) as client:
        assert _signin(client, key).status_code == 303
        yield client


def _create(server: LiveServer, tenant: str, agent_type: str = "grader", **kw: object) -> str:
    async def go(m: SessionManager) -> str:
        return (await m.create_session(agent_type, **kw)).session_id  # type: ignore[arg-type]

    return server.call(tenant, go)


def _state(server: LiveServer, tenant: str, session_id: str) -> SessionState:
    async def go(m: SessionManager) -> SessionState:
        found = await m.get_session(session_id)
        assert found is not None
        return found.state

    return server.call(tenant, go)


# --- sign-in and the cookie -------------------------------------------------------------------


def test_pages_need_a_sign_in(server: LiveServer) -> None:
    with _client(server) as client:
        for path in ("/", "/sessions", "/sessions/00000000-0000-4000-8000-000000000000"):
            response = client.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/signin?next=")
        assert client.get("/ui/live").status_code == 401


def test_sign_in_sets_a_strict_http_only_cookie_without_the_key(
    server: LiveServer, tenant: str
) -> None:
    key, _ = server.create_key(tenant, "reader")
    with _client(server) as client:
        response = _signin(client, key)
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}=")
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= flags
        assert "secure" not in flags  # plain http here; https adds Secure
        assert key not in cookie
        page = client.get("/")
        assert page.status_code == 200
        assert f'data-test="tenant">{tenant}<' in page.text


def test_a_wrong_key_is_refused(server: LiveServer, tenant: str) -> None:
    server.create_key(tenant, "admin")
    with _client(server) as client:
        for wrong in ("ak_" + "x" * 43, "not-a-key", ""):
            response = _signin(client, wrong)
            assert response.status_code == 401
            assert "not valid" in response.text
        assert client.get("/").status_code == 303


def test_a_revoked_key_is_signed_out_at_its_next_request(server: LiveServer, tenant: str) -> None:
    key, record = server.create_key(tenant, "writer")
    with _client(server) as client:
        assert _signin(client, key).status_code == 303
        assert client.get("/").status_code == 200
        server.revoke_key(record.key_id)
        response = client.get("/")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/signin")


def test_a_forged_or_tampered_cookie_counts_as_signed_out(server: LiveServer, tenant: str) -> None:
    with _signed_in(server, tenant) as client:
        value = client.cookies[COOKIE_NAME]
        payload, mac = value.split(".")
        client.cookies.set(COOKIE_NAME, payload + "." + mac[::-1], domain="127.0.0.1")
        assert client.get("/").status_code == 303
        forged = CookieSigner(b"another secret").dumps(
            DashSession(csrf="c" * 43, digest="0" * 64, key_id="k", issued_at=time.time())
        )
        client.cookies.set(COOKIE_NAME, forged, domain="127.0.0.1")
        assert client.get("/").status_code == 303


def test_cookie_signer_refuses_old_and_malformed_values() -> None:
    signer = CookieSigner(b"s" * 32, max_age=60)
    fresh = DashSession.anonymous()
    value = signer.dumps(fresh)
    assert signer.loads(value) == fresh
    assert signer.loads(value, now=time.time() + 61) is None
    for bad in ("", "x", "a.b", value + "x", "." + value, value.replace(".", "..")):
        assert signer.loads(bad) is None


def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    server: LiveServer, tenant: str
) -> None:
    with _signed_in(server, tenant) as client:
        assert client.post("/signout", data={}).status_code == 403
        assert client.get("/").status_code == 200
        token = _csrf(client.get("/").text)
        response = client.post("/signout", data={"csrf": token})
        assert response.status_code == 303
        assert client.get("/").status_code == 303


def test_sign_in_redirects_only_inside_the_site(server: LiveServer, tenant: str) -> None:
    key, _ = server.create_key(tenant, "reader")
    with _client(server) as client:
        for target, expected in (
            ("//evil.example/x", "/"),
            ("https://evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("/\t/evil.example", "/"),
            ("/x\\..\\/evil", "/"),
            ("/sessions?state=paused", "/sessions?state=paused"),
        ):
            client.cookies.clear()
            token = _csrf(client.get("/signin").text)
            response = client.post("/signin", data={"key": key, "csrf": token, "next": target})
            assert response.headers["location"] == expected


# --- CSRF and roles ---------------------------------------------------------------------------


def test_posts_without_a_valid_csrf_token_are_refused(server: LiveServer, tenant: str) -> None:
    key, _ = server.create_key(tenant, "admin")
    sid = _create(server, tenant)
    with _client(server) as client:
        client.get("/signin")  # the anonymous cookie, with a token the form would carry
        assert client.post("/signin", data={"key": key}).status_code == 403
        assert client.post("/signin", data={"key": key, "csrf": "x" * 43}).status_code == 403
        assert _signin(client, key).status_code == 303
        for data in ({"action": "pause"}, {"action": "pause", "csrf": "forged" * 8}):
            response = client.post(f"/sessions/{sid}/state", data=data)
            assert response.status_code == 403
        # The token of the page before sign-in is worth nothing after it.
    assert _state(server, tenant, sid) is SessionState.ACTIVE


def test_a_writer_pauses_resumes_and_completes(server: LiveServer, tenant: str) -> None:
    sid = _create(server, tenant)
    with _signed_in(server, tenant, "writer") as client:
        for action, state in (
            ("pause", SessionState.PAUSED),
            ("resume", SessionState.ACTIVE),
            ("complete", SessionState.COMPLETED),
        ):
            page = client.get(f"/sessions/{sid}")
            assert f'data-action="{action}"' in page.text
            response = client.post(
                f"/sessions/{sid}/state", data={"action": action, "csrf": _csrf(page.text)}
            )
            assert response.status_code == 303
            assert response.headers["location"] == f"/sessions/{sid}?done={action}"
            assert _state(server, tenant, sid) is state
        page = client.get(f"/sessions/{sid}?done=complete")
        assert "Session completed." in page.text
        assert 'data-test="actions"' not in page.text  # a completed session has none
        refused = client.post(
            f"/sessions/{sid}/state", data={"action": "pause", "csrf": _csrf(page.text)}
        )
        assert refused.headers["location"].endswith("?done=invalid")


def test_a_reader_sees_no_forms_and_cannot_post(server: LiveServer, tenant: str) -> None:
    sid = _create(server, tenant)
    with _signed_in(server, tenant, "reader") as client:
        page = client.get(f"/sessions/{sid}")
        assert page.status_code == 200
        assert "data-action=" not in page.text
        assert f"/sessions/{sid}/state" not in page.text
        response = client.post(
            f"/sessions/{sid}/state", data={"action": "pause", "csrf": _csrf(page.text)}
        )
        assert response.status_code == 403
    assert _state(server, tenant, sid) is SessionState.ACTIVE


# --- what the pages show ----------------------------------------------------------------------

_NASTY = "<script>alert('x')</script>\"'&"


def test_user_data_is_escaped_everywhere(server: LiveServer, tenant: str) -> None:
    async def go(m: SessionManager) -> str:
        s = await m.create_session(
            _NASTY, _NASTY, context={_NASTY: _NASTY}, metadata={"note": _NASTY}
        )
        await m.append_checkpoint(s.session_id, _NASTY, {"html": _NASTY})
        await m.claim(s.session_id, _NASTY, timedelta(minutes=5))
        return s.session_id

    sid = server.call(tenant, go)
    with _signed_in(server, tenant) as client:
        for path in ("/", "/sessions", f"/sessions/{sid}", f"/sessions?agent_type={_NASTY}"):
            page = client.get(path, params=None)
            assert page.status_code == 200, path
            assert "<script>alert" not in page.text, path
            assert "&lt;script&gt;alert(" in page.text, path
        assert client.get(f"/sessions/{sid}").text.count("&lt;script&gt;") >= 5


def test_every_response_has_a_strict_content_security_policy(
    server: LiveServer, tenant: str
) -> None:
    sid = _create(server, tenant)
    with _signed_in(server, tenant) as client:
        paths = ["/", "/sessions", f"/sessions/{sid}", "/signin", "/ui/static/app.css"]
        for path in paths:
            response = client.get(path)
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe" not in csp, path
            assert "frame-ancestors 'none'" in csp
            assert response.headers["x-content-type-options"] == "nosniff"
            if response.headers.get("content-type", "").startswith("text/html"):
                # No inline script, no inline style: the policy would block them.
                assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), path
                assert not re.search(r"\sstyle=", response.text), path
                assert re.search(r"\son[a-z]+=", response.text) is None, path
                assert response.headers["cache-control"] == "no-store"


def test_static_files_are_served_with_types_and_validators(server: LiveServer) -> None:
    with _client(server) as client:
        js = client.get("/ui/static/live.js")
        assert js.status_code == 200
        assert js.headers["content-type"].startswith("text/javascript")
        assert "EventSource" in js.text
        again = client.get("/ui/static/live.js", headers={"if-none-match": js.headers["etag"]})
        assert again.status_code == 304
        assert client.get("/ui/static/../router.py").status_code == 404
        assert client.get("/ui/static/nope.js").status_code == 404


def test_the_list_filters_and_pages_with_the_cursor(server: LiveServer, tenant: str) -> None:
    async def go(m: SessionManager) -> list[str]:
        ids = [(await m.create_session("pager", f"u{i % 3}")).session_id for i in range(30)]
        await m.create_session("other", "u0")
        await m.set_state(ids[0], SessionState.PAUSED)
        return ids

    ids = sorted(server.call(tenant, go))
    with _signed_in(server, tenant) as client:
        first = client.get("/sessions", params={"agent_type": "pager"})
        shown = re.findall(r'data-session="([^"]+)"', first.text)
        assert shown == ids[:PAGE_SIZE]
        after = re.search(r'href="/sessions\?([^"]+)" rel="next"', first.text)
        assert after is not None
        second = client.get("/sessions?" + after.group(1).replace("&amp;", "&"))
        assert re.findall(r'data-session="([^"]+)"', second.text) == ids[PAGE_SIZE:]
        assert 'rel="next"' not in second.text
        paused = client.get("/sessions", params={"state": "paused"})
        assert len(re.findall(r'data-session="', paused.text)) == 1
        by_user = client.get("/sessions", params={"agent_type": "pager", "user_id": "u1"})
        assert len(re.findall(r'data-session="', by_user.text)) == 10
        jump = client.get("/sessions", params={"q": ids[7]})
        assert jump.status_code == 303 and jump.headers["location"] == f"/sessions/{ids[7]}"
        missing = client.get("/sessions", params={"q": "00000000-0000-4000-8000-000000000000"})
        assert "No session has the id" in missing.text


def test_the_session_page_pages_through_a_long_trail(server: LiveServer, tenant: str) -> None:
    async def go(m: SessionManager) -> str:
        s = await m.create_session("trail")
        for i in range(2, 46):
            await m.append_checkpoint(s.session_id, f"step-{i}")
        return s.session_id

    sid = server.call(tenant, go)
    with _signed_in(server, tenant) as client:
        newest = client.get(f"/sessions/{sid}").text
        seqs = [int(n) for n in re.findall(r'class="tl-seq mono">#(\d+)<', newest)]
        assert seqs == list(range(45, 25, -1))
        older = re.search(rf'href="/sessions/{sid}\?from=(\d+)">Older', newest)
        assert older is not None and older.group(1) == "5"
        oldest = client.get(f"/sessions/{sid}?from=0").text
        seqs = [int(n) for n in re.findall(r'class="tl-seq mono">#(\d+)<', oldest)]
        assert seqs == list(range(20, 0, -1))
        assert ">Older<" not in oldest and ">Newer<" in oldest


def test_unknown_and_malformed_session_ids_are_404(server: LiveServer, tenant: str) -> None:
    with _signed_in(server, tenant) as client:
        for sid in ("00000000-0000-4000-8000-000000000000", "not-an-id", "%3Cb%3E"):
            response = client.get(f"/sessions/{sid}")
            assert response.status_code == 404
            assert "No such session" in response.text


def test_partial_renders_only_a_live_block(server: LiveServer, tenant: str) -> None:
    sid = _create(server, tenant)
    with _signed_in(server, tenant) as client:
        block = client.get(f"/sessions/{sid}", params={"partial": "live_session"}).text
        assert block.startswith('<div data-live-block="live_session">')
        assert "<html" not in block
        # Only blocks meant for it: any other name renders the whole page.
        whole = client.get(f"/sessions/{sid}", params={"partial": "content"}).text
        assert whole.startswith("<!doctype html>")


def test_tenants_see_only_their_sessions(server: LiveServer) -> None:
    mine = _create(server, "acme", "grader")
    theirs = _create(server, "globex", "grader")
    with _signed_in(server, "acme") as client:
        assert client.get(f"/sessions/{theirs}").status_code == 404
        listing = client.get("/sessions").text
        assert mine in listing and theirs not in listing
        assert client.get("/ui/live", params={"session": theirs}).status_code == 404


# --- the event stream -------------------------------------------------------------------------


def test_the_event_stream_says_when_a_session_changes(server: LiveServer, tenant: str) -> None:
    sid = _create(server, tenant)
    with _signed_in(server, tenant) as client:
        lines: list[str] = []
        with client.stream("GET", "/ui/live", params={"session": sid}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")

            def change_soon() -> None:
                time.sleep(0.5)

                async def go(m: SessionManager) -> None:
                    await m.append_checkpoint(sid, "tick")

                server.call(tenant, go)

            threading.Thread(target=change_soon, daemon=True).start()
            for line in stream.iter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    break
        assert "event: changed" in lines
        assert lines[-1] == f"data: {sid}"
        assert client.get("/ui/live", params={"session": "not-an-id"}).status_code == 404


def test_the_cookie_is_secure_when_the_request_came_over_https(
    server: LiveServer, tenant: str
) -> None:
    key, _ = server.create_key(tenant, "reader")
    # uvicorn takes the scheme from X-Forwarded-Proto of a trusted proxy (127.0.0.1 here).
    with _client(server) as client:
        client.headers["x-forwarded-proto"] = "https"
        page = client.get("/signin")
        assert "secure" in page.headers["set-cookie"].lower().split("; ")
        # httpx would not send a Secure cookie over http: hand it over as the browser would.
        cookie = page.headers["set-cookie"].split(";")[0]
        response = client.post(
            "/signin",
            data={"key": key, "csrf": _csrf(page.text), "next": "/"},
            headers={"cookie": cookie},
        )
        assert response.status_code == 303
        assert "secure" in response.headers["set-cookie"].lower().split("; ")


@pytest.mark.parametrize("backend", ["postgres", "postgres+valkey"])
def test_a_change_made_by_another_process_reaches_the_stream(
    backend: str, manager_factory: ManagerFactory, tmp_path: Path, tenant: str
) -> None:
    """On PostgreSQL the service hears changes made by any process (LISTEN/NOTIFY, or Valkey):
    here a manager of its own, on its own event loop, as an agent in another process."""

    async def make(tenant: str | None) -> SessionManager:
        return await manager_factory(**({} if tenant is None else {"tenant": tenant}))

    hub = TenantHub(make, key_cache_s=0)
    with live_server(tmp_path, hub=hub) as server:
        sid = _create(server, tenant)

        def agent_writes() -> None:
            async def go() -> None:
                async with await make(None) as agent:
                    await agent.append_checkpoint(sid, "from-elsewhere")

            time.sleep(0.5)
            asyncio.run(go())

        with _signed_in(server, tenant, "reader") as client:
            with client.stream("GET", "/ui/live", params={"session": sid}) as stream:
                threading.Thread(target=agent_writes, daemon=True).start()
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        assert line == f"data: {sid}"
                        break
            page = client.get(f"/sessions/{sid}").text
            assert "from-elsewhere" in page
