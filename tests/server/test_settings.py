"""Settings from the environment (strict casts), the hub's key cache and its single-tenant
fallback, keys' format."""

from __future__ import annotations

from typing import Any

import pytest

from agent_core.errors import ConfigurationError, ValidationError
from agent_core.server.hub import TenantHub
from agent_core.server.keys import KEY_PREFIX, ApiKeys, AuthenticationError, Role, check_tenant
from agent_core.server.settings import Settings
from agent_core.sessions.session_manager import SessionManager


def test_settings_from_the_environment() -> None:
    env = {
        "AGENT_CORE_STORE_URL": "postgresql://u:secret@db/x",
        "AGENT_CORE_CACHE_URL": "valkey://c:6379/0",
        "AGENT_CORE_PORT": "9000",
        "AGENT_CORE_HOST": "0.0.0.0",
        "AGENT_CORE_DEMO": "yes",
        "AGENT_CORE_SSE_HEARTBEAT_S": "2.5",
        "AGENT_CORE_NAMESPACE": "",  # empty counts as unset
        "OTHER": "ignored",
    }
    s = Settings.from_env(env)
    assert (s.store_url, s.cache_url, s.port, s.host, s.demo) == (
        "postgresql://u:secret@db/x",
        "valkey://c:6379/0",
        9000,
        "0.0.0.0",
        True,
    )
    assert s.sse_heartbeat_s == 2.5 and s.namespace == "agent_core"
    assert "secret" not in s.describe() and "secret" not in repr(s.with_(encryption_keys="k"))
    # Options override the environment; None falls through to it.
    assert Settings.from_env(env, port=1234, host=None).port == 1234
    assert Settings.from_env({}).store_url == "sqlite:///agent-core.db"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "1_000"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("DEMO", "maybe"),
        ("SSE_HEARTBEAT_S", "nan"),
        ("SSE_HEARTBEAT_S", "-1"),
        ("MAX_BODY_BYTES", "1e6"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_bad_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({f"AGENT_CORE_{name}": value})


def test_unknown_override() -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({}, colour="blue")


@pytest.mark.parametrize("tenant", ["", " a", "a b", "a/b", "x" * 65, "ä", "-a", None, 3])
def test_tenant_names(tenant: Any) -> None:
    with pytest.raises(ValidationError):
        check_tenant(tenant)


async def test_key_cache_and_one_manager_per_tenant() -> None:
    store = SessionManager()
    made: list[str | None] = []

    async def factory(tenant: str | None) -> SessionManager:
        made.append(tenant)
        return store

    now = [0.0]
    hub = TenantHub(factory, key_cache_s=5, clock=lambda: now[0])
    async with hub:
        secret, key = await hub.keys.create("acme", Role.READER)
        assert secret.startswith(KEY_PREFIX)
        principal = await hub.authenticate(secret)
        assert (principal.tenant, principal.role, principal.key_id) == (
            "acme",
            Role.READER,
            key.key_id,
        )
        await ApiKeys(store).revoke(key.key_id)  # as another process would
        assert await hub.authenticate(secret) == principal  # cached for key_cache_s
        now[0] = 6
        with pytest.raises(AuthenticationError):
            await hub.authenticate(secret)
        for bad in ("", "ak_", "Bearer x", KEY_PREFIX + "é", "x" * 10_000):
            with pytest.raises(AuthenticationError):
                await hub.authenticate(bad)
        manager = await hub.manager_for("acme")
        assert made == [None, "acme"]
        assert manager is await hub.manager_for("acme")  # made once
