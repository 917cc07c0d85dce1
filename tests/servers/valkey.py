"""The test suite's Valkey: the dev server, or ``AGENT_CORE_TEST_VALKEY_URL`` when set.

Fault operations on an external server skip the calling test.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from agent_core.devservers.valkey import ENV_URL, ExternalServerError, ValkeyServer

__all__ = ["ENV_URL", "ValkeyTestServer", "make_client"]


class ValkeyTestServer(ValkeyServer):
    def __init__(self, **options: Any) -> None:
        options.setdefault("external_url", os.environ.get(ENV_URL) or None)
        super().__init__(**options)

    def _require_own(self, what: str) -> subprocess.Popen[bytes] | None:
        try:
            return super()._require_own(what)
        except ExternalServerError as exc:
            pytest.skip(str(exc))


def make_client(kind: str, url: str, **kwargs: Any) -> Any:
    """An asyncio client of either driver: "redis" (redis-py) or "valkey" (valkey-py)."""
    if kind == "redis":
        import redis.asyncio

        return redis.asyncio.Redis.from_url(url, **kwargs)
    import valkey.asyncio

    return valkey.asyncio.Valkey.from_url(url, **kwargs)
