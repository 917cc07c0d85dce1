"""A Hypothesis state machine drives the manager and a plain in-memory model side by side.

Every step does the same thing to both; every read compares them. Run on every backend
combination (see ``conftest.BACKENDS``), with two managers that share the data so that stale
copies and cross-manager caches are exercised too.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from agent_core.codec import merge_patch
from agent_core.errors import ConflictError, InvalidTransition, SessionNotFound
from agent_core.sessions import AgentSession, SessionManager, SessionState
from tests.conftest import BACKENDS, ManagerFactory

keys = st.sampled_from(["a", "b", "c"])
values = (
    st.none()
    | st.integers(-3, 3)
    | st.text(max_size=3)
    | st.dictionaries(keys, st.integers(0, 2), max_size=2)
)
patches = st.dictionaries(keys, values, max_size=3)
states = st.sampled_from([s for s in SessionState if s is not SessionState.DELETED])


@dataclass
class ModelSession:
    agent_type: str
    state: SessionState = SessionState.ACTIVE
    context: dict[str, Any] = field(default_factory=dict)
    trail: list[str] = field(default_factory=lambda: ["session_created"])
    version: int = 1
    deleted: bool = False


class ManagerMachine(RuleBasedStateMachine):
    factory: ManagerFactory
    loop: asyncio.AbstractEventLoop

    ids = Bundle("ids")
    copies = Bundle("copies")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, ModelSession] = {}
        self.a, self.b = self.run(self.factory()), self.run(self.factory())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.a.close())
        self.run(self.b.close())

    def pick(self, side: bool) -> SessionManager:
        return self.a if side else self.b

    @rule(
        target=ids,
        agent=st.sampled_from(["grader", "tutor"]),
        ctx=patches.map(lambda p: {k: v for k, v in p.items() if v is not None}),
        side=st.booleans(),
    )
    def create(self, agent: str, ctx: dict[str, Any], side: bool) -> str:
        session = self.run(self.pick(side).create_session(agent, "u", context=ctx))
        self.model[session.session_id] = ModelSession(agent, context=copy.deepcopy(ctx))
        return session.session_id

    @rule(sid=ids, name=st.sampled_from(["x", "y"]), side=st.booleans())
    def append(self, sid: str, name: str, side: bool) -> None:
        m = self.model[sid]
        if m.deleted:
            with pytest.raises(SessionNotFound):
                self.run(self.pick(side).append_checkpoint(sid, name))
            return
        cp = self.run(self.pick(side).append_checkpoint(sid, name))
        m.trail.append(name)
        m.version += 1
        assert cp.seq == len(m.trail)

    @rule(sid=ids, patch=patches, side=st.booleans())
    def patch(self, sid: str, patch: dict[str, Any], side: bool) -> None:
        m = self.model[sid]
        if m.deleted:
            with pytest.raises(SessionNotFound):
                self.run(self.pick(side).patch_context(sid, patch))
            return
        head = self.run(self.pick(side).patch_context(sid, patch))
        m.context = merge_patch(m.context, patch)
        m.version += 1
        assert head.context == m.context

    @rule(sid=ids, state=states, side=st.booleans())
    def set_state(self, sid: str, state: SessionState, side: bool) -> None:
        m = self.model[sid]
        manager = self.pick(side)
        if m.deleted:
            with pytest.raises(SessionNotFound):
                self.run(manager.set_state(sid, state))
        elif m.state.can_become(state):
            self.run(manager.set_state(sid, state))
            m.state = state
            m.version += 1
        else:
            with pytest.raises(InvalidTransition):
                self.run(manager.set_state(sid, state))

    @rule(sid=ids, side=st.booleans())
    def delete(self, sid: str, side: bool) -> None:
        m = self.model[sid]
        assert self.run(self.pick(side).delete_session(sid)) is (not m.deleted)
        m.deleted = True

    @rule(target=copies, sid=ids, side=st.booleans())
    def read_copy(self, sid: str, side: bool) -> AgentSession | None:
        return self.run(self.pick(side).get_session(sid))

    @rule(copy_=copies, key=keys, side=st.booleans())
    def update(self, copy_: AgentSession | None, key: str, side: bool) -> None:
        if copy_ is None:
            return
        m = self.model[copy_.session_id]
        mine = copy.deepcopy(copy_)
        mine.context[key] = mine.version
        mine.checkpoint("u")
        manager = self.pick(side)
        if m.deleted:
            with pytest.raises(SessionNotFound):
                self.run(manager.update_session(mine))
        elif mine.version != m.version:
            with pytest.raises(ConflictError):
                self.run(manager.update_session(mine))
        else:
            self.run(manager.update_session(mine))
            m.context = copy.deepcopy(mine.context)
            m.trail.append("u")
            m.version += 1
            assert mine.version == m.version

    @invariant()
    def every_session_matches_the_model(self) -> None:
        for sid, m in self.model.items():
            for manager in (self.a, self.b):
                got = self.run(manager.get_session(sid))
                if m.deleted:
                    assert got is None
                    continue
                assert got is not None
                assert (got.state, got.context, got.version) == (m.state, m.context, m.version)
                assert got.checkpoint_count == len(m.trail)
                window = [cp.name for cp in got.checkpoints]
                assert window == m.trail[-len(window) :] and len(window) == min(
                    len(m.trail), manager.checkpoint_window
                )


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_manager_never_diverges_from_the_model(
    backend: str, manager_factory: ManagerFactory, tmp_path: Path
) -> None:
    loop = asyncio.new_event_loop()
    try:
        machine = type(
            "Machine", (ManagerMachine,), {"factory": staticmethod(manager_factory), "loop": loop}
        )
        machine.TestCase.settings = settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        machine.TestCase().runTest()
    finally:
        loop.close()
