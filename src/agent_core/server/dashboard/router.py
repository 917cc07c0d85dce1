"""The dashboard's routes: server-rendered pages, one event stream, a few static files.

Pages: ``/`` (overview), ``/sessions`` (search, paged with the ``after`` cursor),
``/sessions/{id}`` (head, context, lease, checkpoint trail), ``/signin``, ``/signout``. Every
page is one Jinja2 template (autoescaped); a page asked with ``?partial=<block>`` renders only
that block, which is what ``static/live.js`` fetches when ``/ui/live`` (server-sent events)
says something changed. Every response carries a strict Content-Security-Policy: scripts and
styles come from ``/ui/static`` only.

Everything a page shows comes from the signed-in key's tenant-bound manager
(``app.state.hub.manager_for(principal.tenant)``), so no page can show another tenant's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from agent_core import codec
from agent_core.errors import (
    AgentCoreError,
    InvalidTransition,
    SessionNotFound,
    StoreUnavailable,
    ValidationError,
)
from agent_core.models import AgentSession, SessionState, utcnow
from agent_core.server.dashboard import views
from agent_core.server.dashboard.auth import (
    COOKIE_NAME,
    CookieSigner,
    DashSession,
    key_digest,
    secret_from_env,
)
from agent_core.server.keys import Principal, Role

if TYPE_CHECKING:
    from agent_core.server.hub import TenantHub
    from agent_core.sessions.session_manager import SessionManager

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
TRAIL_PAGE = 20
#: A session whose heartbeat is older than this is shown as quiet.
QUIET_AFTER = timedelta(minutes=5)
#: Events within this many seconds become one "changed" message: on a session page, and on
#: the overview and list (which cost more to render again, and change with every session).
_COALESCE_SESSION_S = 0.25
_COALESCE_TENANT_S = 1.0

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_STATIC_TYPES = {
    "app.css": "text/css; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: The actions the session page offers: form value -> (target state, button label).
ACTIONS: dict[str, tuple[SessionState, str]] = {
    "pause": (SessionState.PAUSED, "Pause"),
    "resume": (SessionState.ACTIVE, "Resume"),
    "complete": (SessionState.COMPLETED, "Complete"),
}
_NOTICES = {
    "pause": "Session paused.",
    "resume": "Session resumed.",
    "complete": "Session completed.",
    "invalid": "That change is not allowed in the session's current state.",
    "gone": "The session no longer exists.",
}


async def _principal_for_digest(hub: TenantHub, digest: str) -> Principal:
    """The principal of the key whose SHA-256 is ``digest``; ``AuthenticationError`` if the key
    is unknown or revoked. Asked on every request, so revoking a key signs its browsers out."""
    return await hub.authenticate_digest(digest)


# --- per-application state ------------------------------------------------------------------


class _Static:
    def __init__(self) -> None:
        folder = resources.files(__package__).joinpath("static")
        self.files: dict[str, bytes] = {
            name: folder.joinpath(name).read_bytes() for name in _STATIC_TYPES
        }
        self.etags = {
            name: hashlib.sha256(body).hexdigest()[:16] for name, body in self.files.items()
        }

    def url(self, name: str) -> str:
        return f"/ui/static/{name}?v={self.etags[name]}"


@dataclass
class _Dashboard:
    signer: CookieSigner
    env: jinja2.Environment
    static: _Static
    #: Per tenant: (monotonic time its scan began, the overview).
    overview_cache: dict[str, tuple[float, views.Overview]] = field(default_factory=dict)
    #: Per tenant: when an event stream last heard of a change (monotonic); an overview whose
    #: scan began before it is not served from the cache.
    last_change: dict[str, float] = field(default_factory=dict)


def _dashboard(request: Request) -> _Dashboard:
    state = request.app.state
    dash: _Dashboard | None = getattr(state, "dashboard", None)
    if dash is None:
        settings = getattr(state, "settings", None)
        secret = secret_from_env(getattr(settings, "secret", None))
        env = jinja2.Environment(
            loader=jinja2.PackageLoader(__package__ or "", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        static = _Static()
        env.globals["static_url"] = static.url
        env.filters.update(ago=_ago, when=_when, pretty=_pretty, short=_short, count=_count)
        dash = _Dashboard(CookieSigner(secret), env, static)
        state.dashboard = dash
    return dash


# --- formatting -----------------------------------------------------------------------------


def _ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "never"
    seconds = int(((now or utcnow()) - when).total_seconds())
    if seconds < 0:
        return "just now" if seconds > -5 else "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _short(session_id: str) -> str:
    return session_id[:8]


# --- the browser session --------------------------------------------------------------------


@dataclass
class Viewer:
    """Who is looking: the cookie's session and, when signed in, the key's principal."""

    dash: DashSession
    principal: Principal | None = None
    manager: SessionManager | None = None
    fresh_cookie: bool = False

    @property
    def can_write(self) -> bool:
        return self.principal is not None and self.principal.role.allows(Role.WRITER)

    @property
    def tenant(self) -> str:
        return self.principal.tenant if self.principal else ""

    def require_manager(self) -> SessionManager:
        if self.manager is None:
            raise _NotSignedIn
        return self.manager


class _NotSignedIn(Exception):
    pass


def _hub(request: Request) -> TenantHub:
    hub: TenantHub = request.app.state.hub
    return hub


async def _viewer(request: Request) -> Viewer:
    dash = _dashboard(request).signer.loads(request.cookies.get(COOKIE_NAME))
    if dash is None:
        return Viewer(DashSession.anonymous(), fresh_cookie=True)
    if not dash.signed_in:
        return Viewer(dash)
    hub = _hub(request)
    try:
        principal = await _principal_for_digest(hub, dash.digest)
    except StoreUnavailable:
        raise
    except AgentCoreError:
        # Revoked, or the store forgot it: signed out from now on.
        return Viewer(DashSession.anonymous(), fresh_cookie=True)
    manager = await hub.manager_for(principal.tenant)
    return Viewer(dash, principal, manager)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _finish(request: Request, response: Response, viewer: Viewer | None) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    if viewer is not None and viewer.fresh_cookie:
        response.set_cookie(
            COOKIE_NAME,
            _dashboard(request).signer.dumps(viewer.dash),
            max_age=_dashboard(request).signer.max_age,
            path="/",
            secure=_secure(request),
            httponly=True,
            samesite="strict",
        )
    return response


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never ``//evil`` or ``https://evil`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    # Browsers drop tabs and newlines from a URL and read a backslash as a slash.
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    return target


def _render(
    request: Request,
    viewer: Viewer,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
) -> Response:
    dash = _dashboard(request)
    tmpl = dash.env.get_template(template)
    values = {
        "viewer": viewer,
        "csrf": viewer.dash.csrf,
        "path": request.url.path,
        "page": template.removesuffix(".html"),
        **context,
    }
    partial = request.query_params.get("partial")
    if partial and partial in tmpl.blocks and partial.startswith("live_"):
        body = "".join(tmpl.blocks[partial](tmpl.new_context(values)))
    else:
        body = tmpl.render(values)
    return _finish(request, HTMLResponse(body, status_code=status), viewer)


def _to_signin(request: Request, viewer: Viewer) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = urlencode({"next": here})
    if request.query_params.get("partial"):
        # A live refresh after the sign-in ended: the script reloads the page.
        return _finish(request, Response(status_code=401), viewer)
    return _finish(request, RedirectResponse(f"/signin?{query}", status_code=303), viewer)


Page = Callable[[Request, Viewer], Awaitable[Response]]


async def _page(request: Request, build: Page) -> Response:
    """Run one page with the signed-in viewer; the sign-in page if nobody is signed in."""
    try:
        viewer = await _viewer(request)
    except StoreUnavailable:
        return _unavailable(request)
    if viewer.manager is None:
        return _to_signin(request, viewer)
    try:
        return await build(request, viewer)
    except StoreUnavailable:
        return _unavailable(request, viewer)


def _unavailable(request: Request, viewer: Viewer | None = None) -> Response:
    anonymous = viewer or Viewer(DashSession.anonymous())
    return _render(
        request,
        anonymous,
        "error.html",
        {
            "title": "Store unavailable",
            "message": "The session store did not answer. The page will work again once it is "
            "back; try again in a moment.",
        },
        status=503,
    )


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _keep(dash: DashSession | None) -> Viewer:
    """The viewer of a refused form: its cookie kept (a forged post must not sign anyone
    out), or a fresh anonymous one if it had none."""
    if dash is None:
        return Viewer(DashSession.anonymous(), fresh_cookie=True)
    return Viewer(dash)


def _csrf_refused(request: Request, viewer: Viewer) -> Response:
    return _render(
        request,
        viewer,
        "error.html",
        {
            "title": "Form expired",
            "message": "This form was not sent from this dashboard, or it has expired. Go back, "
            "reload the page and try again.",
        },
        status=403,
    )


# --- sign-in --------------------------------------------------------------------------------


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(request: Request) -> Response:
    try:
        viewer = await _viewer(request)
    except StoreUnavailable:
        return _unavailable(request)
    target = _safe_next(request.query_params.get("next"))
    if viewer.manager is not None:
        return _finish(request, RedirectResponse(target, status_code=303), viewer)
    return _render(request, viewer, "signin.html", {"next": target, "error": ""})


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await _form(request)
    dash = _dashboard(request).signer.loads(request.cookies.get(COOKIE_NAME))
    if dash is None or not dash.csrf_matches(form.get("csrf")):
        return _csrf_refused(request, _keep(dash))
    target = _safe_next(form.get("next"))
    key = form.get("key", "").strip()
    try:
        principal = await _hub(request).authenticate(key) if key else None
    except StoreUnavailable:
        return _unavailable(request, Viewer(dash))
    except AgentCoreError:
        principal = None
    if principal is None:
        logger.info("dashboard: sign-in refused from %s", request.client)
        return _render(
            request,
            Viewer(dash),
            "signin.html",
            {"next": target, "error": "That key is not valid, or it has been revoked."},
            status=401,
        )
    signed = Viewer(dash.signed_in_as(key_digest(key), principal.key_id), fresh_cookie=True)
    return _finish(request, RedirectResponse(target, status_code=303), signed)


@router.post("/signout")
async def signout(request: Request) -> Response:
    form = await _form(request)
    dash = _dashboard(request).signer.loads(request.cookies.get(COOKIE_NAME))
    if dash is None or not dash.csrf_matches(form.get("csrf")):
        return _csrf_refused(request, _keep(dash))
    fresh = Viewer(DashSession.anonymous(), fresh_cookie=True)
    return _finish(request, RedirectResponse("/signin", status_code=303), fresh)


# --- pages ----------------------------------------------------------------------------------

_OVERVIEW_TTL_S = 1.0


async def _overview(
    request: Request, viewer: Viewer, *, ttl: float = _OVERVIEW_TTL_S, stale_ok: bool = False
) -> views.Overview:
    """The tenant's overview, scanned at most once a second: many open tabs refresh together
    after an event. An overview scanned before the last change an event stream saw is scanned
    again, unless ``stale_ok`` (the list page only wants the agent types from it)."""
    dash = _dashboard(request)
    tenant = viewer.tenant
    hit = dash.overview_cache.get(tenant)
    now = time.monotonic()
    if (
        hit is not None
        and now - hit[0] < ttl
        and (stale_ok or hit[0] >= dash.last_change.get(tenant, 0.0))
    ):
        return hit[1]
    data = await views.overview(viewer.require_manager())
    dash.overview_cache[tenant] = (now, data)
    return data


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request) -> Response:
    async def build(request: Request, viewer: Viewer) -> Response:
        data = await _overview(request, viewer)
        return _render(
            request,
            viewer,
            "overview.html",
            {
                "data": data,
                "states": views.LIVE_STATES,
                "chart": views.activity_svg(data.activity),
                "now": utcnow(),
                "quiet_after": QUIET_AFTER,
            },
        )

    return await _page(request, build)


@dataclass(frozen=True)
class _Filters:
    state: str = ""
    agent_type: str = ""
    user_id: str = ""
    after: str = ""

    def query(self, **changes: str) -> str:
        values = {
            "state": self.state,
            "agent_type": self.agent_type,
            "user_id": self.user_id,
            "after": self.after,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


@router.get("/sessions", response_class=HTMLResponse)
async def sessions_page(request: Request) -> Response:
    async def build(request: Request, viewer: Viewer) -> Response:
        manager = viewer.require_manager()
        q = request.query_params
        find = q.get("q", "").strip()
        if find:
            try:
                found = await manager.get_session(codec.validate_session_id(find))
            except ValidationError:
                found = None
            if found is not None:
                return _finish(
                    request,
                    RedirectResponse(f"/sessions/{found.session_id}", status_code=303),
                    viewer,
                )
        state = q.get("state", "")
        filters = _Filters(
            state=state if state in {s.value for s in views.LIVE_STATES} else "",
            agent_type=q.get("agent_type", "").strip(),
            user_id=q.get("user_id", "").strip(),
            after=q.get("after", "").strip(),
        )
        error = f"No session has the id {find!r}." if find else ""
        rows: list[AgentSession] = []
        more = False
        try:
            page = await manager.list_sessions(
                state=filters.state or None,
                agent_type=filters.agent_type or None,
                user_id=filters.user_id or None,
                limit=PAGE_SIZE + 1,
                after=filters.after or None,
            )
            rows, more = page[:PAGE_SIZE], len(page) > PAGE_SIZE
        except ValidationError as exc:
            error = str(exc)
        return _render(
            request,
            viewer,
            "sessions.html",
            {
                "rows": rows,
                "filters": filters,
                "find": find,
                "error": error,
                "next_query": filters.query(after=rows[-1].session_id) if more else "",
                "first_query": filters.query(after="") if filters.after else "",
                "states": views.LIVE_STATES,
                "agent_types": (
                    await _overview(request, viewer, ttl=30.0, stale_ok=True)
                ).agent_types,
                "now": utcnow(),
                "quiet_after": QUIET_AFTER,
            },
        )

    return await _page(request, build)


def _trail_window(count: int, raw: str | None) -> int:
    """The ``after_seq`` of the trail page to show: the newest page unless one is asked."""
    newest = max(0, count - TRAIL_PAGE)
    if raw is None or not raw.isdigit():
        return newest
    return min(int(raw), newest)


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
async def session_page(request: Request, session_id: str) -> Response:
    async def build(request: Request, viewer: Viewer) -> Response:
        manager = viewer.require_manager()
        try:
            session = await manager.get_session(codec.validate_session_id(session_id))
        except ValidationError:
            session = None
        if session is None:
            return _render(
                request,
                viewer,
                "error.html",
                {
                    "title": "No such session",
                    "message": "There is no session with this id (or it was deleted).",
                },
                status=404,
            )
        lease = None
        with contextlib.suppress(SessionNotFound):
            lease = await manager.current_lease(session.session_id)
        now = utcnow()
        pinned = request.query_params.get("from")
        after_seq = _trail_window(session.checkpoint_count, pinned)
        trail = await manager.list_checkpoints(
            session.session_id, after_seq=after_seq, limit=TRAIL_PAGE
        )
        trail.reverse()
        return _render(
            request,
            viewer,
            "session.html",
            {
                "s": session,
                "lease": lease,
                "lease_left": int((lease.expires_at - now).total_seconds()) if lease else 0,
                "trail": trail,
                "after_seq": after_seq,
                "older": max(0, after_seq - TRAIL_PAGE) if after_seq > 0 else None,
                "newer": (
                    after_seq + TRAIL_PAGE
                    if after_seq + TRAIL_PAGE < session.checkpoint_count
                    else None
                ),
                "pinned": pinned is not None,
                "actions": [
                    (name, label)
                    for name, (target, label) in ACTIONS.items()
                    if session.state.can_become(target)
                ],
                "notice": _NOTICES.get(request.query_params.get("done", ""), ""),
                "now": now,
                "quiet": session.state is SessionState.ACTIVE
                and now - session.last_heartbeat > QUIET_AFTER,
            },
        )

    return await _page(request, build)


@router.post("/sessions/{session_id}/state")
async def change_state(request: Request, session_id: str) -> Response:
    async def build(request: Request, viewer: Viewer) -> Response:
        form = await _form(request)
        if not viewer.dash.csrf_matches(form.get("csrf")):
            return _csrf_refused(request, viewer)
        if not viewer.can_write:
            return _render(
                request,
                viewer,
                "error.html",
                {
                    "title": "Read-only key",
                    "message": "This key may read sessions but not change them.",
                },
                status=403,
            )
        manager = viewer.require_manager()
        action = form.get("action", "")
        if action not in ACTIONS:
            return _finish(request, Response("unknown action", status_code=400), viewer)
        try:
            sid = codec.validate_session_id(session_id)
        except ValidationError:
            return _finish(request, RedirectResponse("/sessions", status_code=303), viewer)
        try:
            await manager.set_state(sid, ACTIONS[action][0])
            outcome = action
        except InvalidTransition:
            outcome = "invalid"
        except SessionNotFound:
            outcome = "gone"
        return _finish(
            request,
            RedirectResponse(f"/sessions/{sid}?done={outcome}", status_code=303),
            viewer,
        )

    return await _page(request, build)


# --- live updates ---------------------------------------------------------------------------


async def _changes(
    request: Request,
    manager: SessionManager,
    tenant: str,
    session_id: str | None,
    heartbeat_s: float,
) -> AsyncIterator[bytes]:
    """``changed`` messages (the session id as data) while the browser listens.

    A page never gets another tenant's ids: the stream comes from the tenant-bound manager,
    and the overview/list stream sends no id at all (it only says "something changed").
    """
    yield b"retry: 2000\n\n"
    loop = asyncio.get_running_loop()
    stopping: asyncio.Event | None = getattr(request.app.state, "stopping", None)
    quiet_since = loop.time()
    async with manager.events(session_id=session_id) as stream:
        while not (stopping is not None and stopping.is_set()):
            if await request.is_disconnected():
                break
            try:
                # Wake up every second to notice a shutdown or a browser gone away.
                event = await stream.get(timeout=1.0)
            except TimeoutError:
                if loop.time() - quiet_since >= heartbeat_s:
                    quiet_since = loop.time()
                    yield b": keep-alive\n\n"
                continue
            # Coalesce a burst: one refresh for many writes.
            changes = _dashboard(request).last_change
            changes[tenant] = max(changes.get(tenant, 0.0), time.monotonic())
            deadline = loop.time() + (_COALESCE_SESSION_S if session_id else _COALESCE_TENANT_S)
            with contextlib.suppress(TimeoutError):
                while (left := deadline - loop.time()) > 0:
                    await stream.get(timeout=left)
            quiet_since = loop.time()
            data = event.session_id if session_id else ""
            yield f"event: changed\ndata: {data}\n\n".encode()


@router.get("/ui/live")
async def live(request: Request) -> Response:
    try:
        viewer = await _viewer(request)
    except StoreUnavailable:
        return _finish(request, Response(status_code=503), None)
    if viewer.manager is None:
        return _finish(request, Response(status_code=401), viewer)
    manager = viewer.manager
    session_id = request.query_params.get("session") or None
    if session_id is not None:
        try:
            found = await manager.get_session(codec.validate_session_id(session_id))
        except ValidationError:
            found = None
        if found is None:
            return _finish(request, Response(status_code=404), viewer)
    settings = getattr(request.app.state, "settings", None)
    heartbeat_s = float(getattr(settings, "sse_heartbeat_s", 15.0)) or 15.0
    response = StreamingResponse(
        _changes(request, manager, viewer.tenant, session_id, heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    return _finish(request, response, viewer)


# --- static files ---------------------------------------------------------------------------


@router.get("/ui/static/{name}")
async def static(request: Request, name: str) -> Response:
    files = _dashboard(request).static
    if name not in files.files:
        return _finish(request, Response(status_code=404), None)
    etag = f'"{files.etags[name]}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    if request.headers.get("if-none-match") == etag:
        return _finish(request, Response(status_code=304, headers=headers), None)
    response = Response(files.files[name], media_type=_STATIC_TYPES[name], headers=headers)
    return _finish(request, response, None)
