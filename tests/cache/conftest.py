"""A private Valkey per test module (these tests kill and pause it) and a fresh namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers.valkey import ValkeyTestServer


@pytest.fixture(scope="module")
def server() -> Iterator[ValkeyTestServer]:
    with ValkeyTestServer() as srv:
        yield srv


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"
