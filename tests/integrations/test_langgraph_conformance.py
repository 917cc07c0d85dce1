"""LangGraph's checkpointer conformance suite (langgraph-checkpoint-conformance) on every backend.

Every capability, base and extended, is run on its own against ``AgentCoreSaver`` over the
``backend`` fixture's manager; a capability the saver does not implement would be reported as
not detected, which fails here too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from agent_core.integrations.langgraph import AgentCoreSaver
from tests.conftest import MakeManager


@pytest.mark.parametrize("capability", [c.value for c in Capability])
async def test_conformance(capability: str, backend: str, make_manager: MakeManager) -> None:
    manager = await make_manager()
    errors: list[str] = []

    async def factory() -> AsyncGenerator[BaseCheckpointSaver[str], None]:
        yield AgentCoreSaver(manager)

    def on_result(cap: str, name: str, passed: bool, error: str | None) -> None:
        if not passed:
            errors.append(f"{cap}.{name}:\n{error}")

    registered = checkpointer_test(name=f"AgentCoreSaver[{backend}]")(factory)
    report = await validate(
        registered,
        capabilities={capability},
        progress=ProgressCallbacks(on_test_result=on_result),
    )
    result = report.results[capability]
    assert result.detected, f"{capability} is not implemented"
    assert result.passed, "\n".join(errors or result.failures)
    assert result.tests_passed > 0
