"""Wiring: one URL table for stores and tiers, and one password redactor."""

from __future__ import annotations

import pytest

from agent_core.bus.postgres import PostgresBus
from agent_core.errors import ConfigurationError
from agent_core.factory import hide_password, store_from_url, tier_from_url
from agent_core.stores.postgres import PostgresStore


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("sqlite:///rel.db", "sqlite:///rel.db"),
        ("postgresql://app:secret@db:5432/agents", "postgresql://app:***@db:5432/agents"),
        (
            "postgresql://db/agents?user=app&password=secret",
            "postgresql://db/agents?user=app&password=***",
        ),
        ("valkey://:secret@cache:6379/0", "valkey://:***@cache:6379/0"),
        ("http://[broken", "<unparsable URL>"),
    ],
)
def test_passwords_are_hidden_and_nothing_else_changes(url: str, shown: str) -> None:
    assert hide_password(url) == shown
    assert "secret" not in hide_password(url)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+asyncpg"])
def test_every_postgres_spelling_gets_the_store_and_its_events(scheme: str) -> None:
    url = f"{scheme}://app@127.0.0.1:1/agents"
    assert isinstance(store_from_url(url), PostgresStore)
    tier = tier_from_url(None, url, namespace="n", ttl=60)
    assert not tier.caches and isinstance(tier.bus, PostgresBus)


def test_unknown_schemes_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        store_from_url("mysql://db/x")
    with pytest.raises(ConfigurationError):
        tier_from_url("memcached://c:1", "sqlite:///x.db", namespace="n", ttl=60)
