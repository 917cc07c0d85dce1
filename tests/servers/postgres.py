"""The test suite's PostgreSQL: the dev server, or ``AGENT_CORE_TEST_POSTGRES_URL`` when set."""

from __future__ import annotations

from typing import Any

from agent_core.devservers.postgres import ENV_URL
from agent_core.devservers.postgres import PostgresServer as _PostgresServer

__all__ = ["ENV_URL", "PostgresServer", "server_for_tests"]


class PostgresServer(_PostgresServer):
    def __init__(self, **options: Any) -> None:
        options.setdefault("use_env", True)
        super().__init__(**options)


def server_for_tests() -> PostgresServer:
    """The server tests should use, started: the one named by ``AGENT_CORE_TEST_POSTGRES_URL``,
    or a fresh private one. The caller closes it."""
    server = PostgresServer()
    server.start()
    return server
