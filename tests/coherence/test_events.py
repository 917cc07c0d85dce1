"""A filtered event stream gets every kind of event of the sessions it matches (item 11)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from agent_core.bus.base import EventKind, SessionEvent
from tests.conftest import MakeManager

BUSES = ["memory", "postgres", "postgres+valkey+local"]  # in-process, NOTIFY, Valkey


async def collect(stream: Any, wanted: dict[str, EventKind], timeout: float) -> dict[str, Any]:
    """Events on ``stream`` until one of each ``(session, kind)`` wanted arrived or
    ``timeout``; returns them by label."""
    got: dict[str, SessionEvent] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(wanted) and (left := deadline - time.monotonic()) > 0:
        try:
            event = await stream.get(left)
        except TimeoutError:
            break
        for label, kind in wanted.items():
            sid, _, _ = label.partition("/")
            if label not in got and event.kind is kind and event.session_id == sid:
                got[label] = event
    return got


@pytest.mark.parametrize("backend", BUSES)
async def test_f11_filtered_streams_get_claimed_released_deleted_and_purged(
    make_manager: MakeManager,
) -> None:
    actor = await make_manager()
    listener = await make_manager()
    leased = (await actor.create_session("grader", "alice")).session_id
    purged = (await actor.create_session("grader", "alice")).session_id
    wanted = {
        f"{leased}/claimed": EventKind.CLAIMED,
        f"{leased}/released": EventKind.RELEASED,
        f"{leased}/deleted": EventKind.DELETED,
        f"{purged}/purged": EventKind.PURGED,
    }
    async with (
        listener.events(agent_type="grader") as by_agent,
        listener.events(user_id="alice") as by_user,
    ):
        lease = await actor.claim(leased, "w1", timedelta(seconds=30))
        await actor.release(lease)
        await actor.delete_session(leased)
        await actor.purge(session_id=purged)
        for name, stream in (("agent_type", by_agent), ("user_id", by_user)):
            got = await collect(stream, wanted, 3.0)
            missing = sorted(label.partition("/")[2] for label in wanted if label not in got)
            assert not missing, f"events({name}=...) never delivered: {missing}"
            for event in got.values():
                assert (event.agent_type, event.user_id) == ("grader", "alice"), event
