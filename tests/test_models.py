"""Properties of the pure models: serialization round trips and the lifecycle rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_core import codec
from agent_core.errors import InvalidTransition, ValidationError
from agent_core.sessions.session_models import AgentSession, SessionCheckpoint, SessionState

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    # -0.0 is refused by the input rules (PostgreSQL's jsonb has no negative zero).
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f + 0.0)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
aware_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
checkpoints = st.builds(
    SessionCheckpoint,
    name=st.text(min_size=1, max_size=20),
    timestamp=aware_times,
    data=json_objects,
    seq=st.none() | st.integers(min_value=1, max_value=10**6),
)
sessions = st.builds(
    AgentSession,
    agent_type=st.text(min_size=1, max_size=20),
    user_id=st.text(max_size=20),
    state=st.sampled_from(SessionState),
    created_at=aware_times,
    last_heartbeat=aware_times,
    context=json_objects,
    checkpoints=st.lists(checkpoints, max_size=5),
    metadata=json_objects,
    version=st.integers(min_value=0, max_value=10**9),
)


@given(sessions)
def test_session_round_trips_through_dict_and_json(session: AgentSession) -> None:
    as_json = json.dumps(session.to_dict())
    back = AgentSession.from_dict(json.loads(as_json))
    assert back == session
    assert back.to_dict() == session.to_dict()


@given(checkpoints)
def test_checkpoint_round_trips(cp: SessionCheckpoint) -> None:
    assert SessionCheckpoint.from_dict(cp.to_dict()) == cp


@given(json_objects)
def test_every_json_object_is_accepted_by_the_codec(value: dict[str, Any]) -> None:
    encoded = codec.encode_object(value, what="context")
    assert codec.loads(encoded) == value


def test_reference_shaped_dicts_load() -> None:
    """Data written by the reference design: naive ISO timestamps, no version fields."""
    old = {
        "session_id": "0b7c54e1-8f5e-4d67-9a4c-1b1f5b0c9d11",
        "agent_type": "tutor",
        "user_id": "u1",
        "state": "active",
        "created_at": "2025-01-02T03:04:05.123456",
        "last_heartbeat": "2025-01-02T03:05:00",
        "context": {"lesson": 3},
        "checkpoints": [
            {"name": "session_created", "timestamp": "2025-01-02T03:04:05", "data": {}}
        ],
        "metadata": {},
    }
    session = AgentSession.from_dict(old)
    assert session.created_at == datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert session.checkpoint_count == 1 and session.version == 0
    assert session.checkpoints[0].seq is None


ALLOWED = {
    ("active", "paused"),
    ("paused", "active"),
    ("active", "completed"),
    ("active", "failed"),
    ("paused", "completed"),
    ("paused", "failed"),
    *((s.value, "deleted") for s in SessionState if s is not SessionState.DELETED),
}


@given(st.sampled_from(SessionState), st.sampled_from(SessionState))
def test_transitions_follow_the_design_table(a: SessionState, b: SessionState) -> None:
    assert a.can_become(b) == ((a.value, b.value) in ALLOWED)
    if (a.value, b.value) in ALLOWED:
        a.check_transition(b)
    else:
        with pytest.raises(InvalidTransition):
            a.check_transition(b)


@given(st.lists(st.sampled_from(["pause", "resume", "complete", "fail"]), max_size=8))
def test_terminal_states_never_come_back(moves: list[str]) -> None:
    session = AgentSession(agent_type="x")
    reached_terminal = False
    for move in moves:
        before = session.state
        try:
            getattr(session, move)()
        except InvalidTransition:
            assert session.state is before
            continue
        if reached_terminal:
            pytest.fail(f"{move} left terminal state {before}")
        reached_terminal = session.state.is_terminal
    assert session.state.is_terminal == reached_terminal


def test_fail_records_the_reason_and_heartbeat_moves_forward() -> None:
    session = AgentSession(agent_type="x", last_heartbeat=datetime.now(UTC) - timedelta(hours=1))
    before = session.last_heartbeat
    session.heartbeat()
    assert session.last_heartbeat > before
    session.fail("boom")
    assert session.state is SessionState.FAILED and session.context["failure_reason"] == "boom"


def test_checkpoint_names_must_be_non_empty() -> None:
    with pytest.raises(ValidationError):
        AgentSession(agent_type="x").checkpoint("")


def test_new_checkpoints_are_pending_until_stored() -> None:
    session = AgentSession(agent_type="x")
    cp = session.checkpoint("a", {"k": 1})
    assert session.pending_checkpoints == [cp] and cp.seq is None
