"""agent-core as the session store of agent frameworks.

One module per framework, each an optional extra:

- ``agent_core.integrations.langgraph``: ``AgentCoreSaver``, a LangGraph checkpointer
  (``agent-core[langgraph]``);
- ``agent_core.integrations.openai_agents``: ``AgentCoreSession``, an OpenAI Agents SDK session
  (``agent-core[openai-agents]``);
- ``agent_core.integrations.adk``: ``AgentCoreSessionService``, a Google ADK session service
  (``agent-core[adk]``).

Each maps the framework's unit (a thread, a session) onto one agent-core session, so leases,
events, the CLI and the dashboard show framework runs like any other session. See
docs/integrations.md.
"""
