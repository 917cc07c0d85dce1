"""ADK's real Runner on AgentCoreSessionService, with a scripted model (no network): the same
conversation on ADK's InMemorySessionService and on ours stores the same state and events, and
a fresh manager reads back exactly what the run wrote."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

from google.adk.agents.llm_agent import LlmAgent
from google.adk.events.event import Event
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import BaseSessionService
from google.adk.sessions.in_memory_session_service import InMemorySessionService
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from agent_core.integrations.adk import EVENT_CHECKPOINT, AgentCoreSessionService
from tests.conftest import MakeManager

# --- a scripted model and agent (also the agent of test_adk_server.py) -------------------------
#
# No network, deterministic: the model answers from the request alone (not from a queue), so
# the same conversation gives the same events on any session service:
#
# * a user message ``remember <word>`` -> a call of the ``remember`` tool with ``word``;
# * a tool response -> the text ``saved #<count>``;
# * any other user message -> the text ``echo: <message>``.


class ScriptedLlm(BaseLlm):
    model: str = "scripted"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1]
        part = (last.parts or [types.Part(text="")])[0]
        if part.function_response is not None:
            response = part.function_response.response or {}
            yield _text(f"saved #{response.get('count')}")
            return
        text = part.text or ""
        if text.startswith("remember "):
            call = types.FunctionCall(name="remember", args={"value": text[len("remember ") :]})
            content = types.Content(role="model", parts=[types.Part(function_call=call)])
            yield LlmResponse(content=content, usage_metadata=_USAGE)
            return
        yield _text(f"echo: {text}")


_USAGE = types.GenerateContentResponseUsageMetadata(
    prompt_token_count=1, candidates_token_count=1, total_token_count=2
)


def _text(text: str) -> LlmResponse:
    content = types.Content(role="model", parts=[types.Part(text=text)])
    return LlmResponse(content=content, usage_metadata=_USAGE)


def remember(value: str, tool_context: ToolContext) -> dict[str, Any]:
    """Remember a value for this user."""
    count = int(tool_context.state.get("user:count", 0)) + 1
    tool_context.state["user:count"] = count
    tool_context.state["app:total"] = int(tool_context.state.get("app:total", 0)) + 1
    tool_context.state["temp:last"] = value
    tool_context.state["notes"] = [*tool_context.state.get("notes", []), value]
    return {"count": count}


def make_agent() -> LlmAgent:
    return LlmAgent(
        name="scribe",
        model=ScriptedLlm(),
        instruction="Remember what the user asks you to.",
        tools=[remember],
        output_key="last_reply",
    )


TURNS = ["hello", "remember apples", "remember pears", "how many?"]


async def _converse(
    service: BaseSessionService, app: str, user: str, session_id: str
) -> list[Event]:
    runner = Runner(app_name=app, agent=make_agent(), session_service=service)
    await service.create_session(
        app_name=app, user_id=user, session_id=session_id, state={"app:greeting": "hi"}
    )
    seen: list[Event] = []
    for i, text in enumerate(TURNS):
        message = types.Content(role="user", parts=[types.Part(text=text)])
        async for event in runner.run_async(
            user_id=user,
            session_id=session_id,
            new_message=message,
            state_delta={"turn": i, "temp:turn": i},
        ):
            seen.append(event)
    return seen


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _shape(events: list[Event]) -> list[tuple[Any, ...]]:
    """What two runs of the same conversation share (event and call ids, timestamps differ)."""
    return [
        (
            e.author,
            _without_ids(e.content.model_dump(mode="json", exclude_none=True))
            if e.content
            else None,
            dict(e.actions.state_delta),
        )
        for e in events
    ]


async def test_runner_on_agent_core_matches_in_memory(make_manager: MakeManager) -> None:
    app = f"scribe{uuid.uuid4().hex[:6]}"
    reference = InMemorySessionService()
    ours = AgentCoreSessionService(await make_manager())
    ref_seen = await _converse(reference, app, "u1", "s1")
    our_seen = await _converse(ours, app, "u1", "s1")
    assert _shape(our_seen) == _shape(ref_seen)

    ref = await reference.get_session(app_name=app, user_id="u1", session_id="s1")
    got = await ours.get_session(app_name=app, user_id="u1", session_id="s1")
    assert ref is not None and got is not None
    assert got.state == ref.state
    assert got.state["user:count"] == 2 and got.state["app:total"] == 2
    assert got.state["notes"] == ["apples", "pears"]
    assert got.state["last_reply"] == "echo: how many?"
    assert not any(key.startswith("temp:") for key in got.state)
    assert _shape(got.events) == _shape(ref.events)
    assert len(got.events) == len(ref.events) > len(TURNS)
    # what the runner yielded is what was stored, exactly (ids, float timestamps, content)
    stored = {e.id: e for e in got.events}
    for event in our_seen:
        if not event.partial:
            assert stored[event.id] == event
    assert await ours.get_user_state(app_name=app, user_id="u1") == {"count": 2}


async def test_fresh_manager_reads_back_the_run(make_manager: MakeManager) -> None:
    app = f"scribe{uuid.uuid4().hex[:6]}"
    manager = await make_manager()
    first = AgentCoreSessionService(manager)
    await _converse(first, app, "u1", "s1")
    before = await first.get_session(app_name=app, user_id="u1", session_id="s1")

    second = AgentCoreSessionService(await make_manager())
    after = await second.get_session(app_name=app, user_id="u1", session_id="s1")
    assert before is not None and after is not None
    assert after.events == before.events
    assert after.state == before.state
    assert after.last_update_time == before.last_update_time == before.events[-1].timestamp

    # the run is an ordinary agent-core session: its steps are its trail
    key = first.session_id_of(app, "u1", "s1")
    trail = await manager.list_checkpoints(key, limit=1000)
    assert [cp.name for cp in trail] == ["session_created"] + [EVENT_CHECKPOINT] * len(
        before.events
    )
    assert [cp.data["id"] for cp in trail[1:]] == [e.id for e in before.events]

    # and the run goes on from the other service
    runner = Runner(app_name=app, agent=make_agent(), session_service=second)
    message = types.Content(role="user", parts=[types.Part(text="remember plums")])
    async for _ in runner.run_async(user_id="u1", session_id="s1", new_message=message):
        pass
    final = await first.get_session(app_name=app, user_id="u1", session_id="s1")
    assert final is not None
    assert final.state["notes"] == ["apples", "pears", "plums"]
    assert final.state["user:count"] == 3
