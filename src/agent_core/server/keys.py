"""API keys: who is calling, for which tenant, with which role.

A key is ``ak_`` followed by 43 URL-safe characters (``secrets.token_urlsafe(32)``: 256 random
bits). It is shown once, when created, and stored only as its SHA-256 (hex): the record key in
scope ``agent_core:api_keys``, whose value is JSON ``{"id", "tenant", "role", "created_at",
"revoked"}``. The key id (for ``keys list`` and ``keys revoke``) is the first 12 hex digits of
that hash: printable, stable, and useless for authenticating. Keys live in the un-tenanted
manager's records, so one store serves every tenant's keys.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

from agent_core.errors import AgentCoreError, ValidationError
from agent_core.models import utcnow

if TYPE_CHECKING:
    from agent_core.sessions.session_manager import SessionManager

__all__ = [
    "KEY_PREFIX",
    "SCOPE",
    "ApiKey",
    "ApiKeys",
    "AuthenticationError",
    "KeyNotFound",
    "PermissionDenied",
    "Principal",
    "Role",
    "check_tenant",
    "hash_key",
    "well_formed",
]

SCOPE = "agent_core:api_keys"
KEY_PREFIX = "ak_"
_KEY_ID_LENGTH = 12
_MAX_KEY_LENGTH = 128
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_ID = re.compile(f"[0-9a-f]{{{_KEY_ID_LENGTH}}}")


class AuthenticationError(AgentCoreError):
    """No key, a malformed key, an unknown key or a revoked one (the caller cannot tell which)."""


class PermissionDenied(AgentCoreError):
    """The key's role does not allow this call."""


class KeyNotFound(AgentCoreError, LookupError):
    """No API key has this id."""


class Role(StrEnum):
    """What a key may do; each role may do everything the ones before it may."""

    READER = "reader"
    """Reads: sessions, checkpoints, events, leases' current holder."""
    WRITER = "writer"
    """And every write: sessions, context, state, checkpoints, leases, deletes."""
    ADMIN = "admin"
    """And purge and export (personal data)."""

    def allows(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.READER: 0, Role.WRITER: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """The caller, as its key says: its tenant, its role and the key's id."""

    tenant: str
    role: Role
    key_id: str

    def require(self, needed: Role) -> None:
        if not self.role.allows(needed):
            raise PermissionDenied(f"this call needs a {needed.value} key, not {self.role.value}")


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without the secret."""

    key_id: str
    tenant: str
    role: Role
    created_at: datetime
    revoked: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.key_id,
                "tenant": self.tenant,
                "role": self.role.value,
                "created_at": self.created_at.isoformat(),
                "revoked": self.revoked,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> ApiKey:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(
            key_id=data["id"],
            tenant=data["tenant"],
            role=Role(data["role"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            revoked=bool(data.get("revoked", False)),
        )


def check_tenant(tenant: object) -> str:
    """A tenant name: 1 to 64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter
    or digit."""
    if not isinstance(tenant, str) or _TENANT.fullmatch(tenant) is None:
        raise ValidationError(
            f"tenant must be 1-64 letters, digits, '.', '_' or '-' (first a letter or digit),"
            f" not {tenant!r:.80}"
        )
    return tenant


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def well_formed(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) <= _MAX_KEY_LENGTH and key.isascii()


class ApiKeys:
    """Create, find, list and revoke keys through an un-tenanted manager's records."""

    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager

    async def create(self, tenant: str, role: Role | str = Role.WRITER) -> tuple[str, ApiKey]:
        """A new key for ``tenant``: ``(the secret, its stored description)``."""
        check_tenant(tenant)
        try:
            wanted = Role(role)
        except ValueError:
            raise ValidationError(f"role must be admin, writer or reader, not {role!r}") from None
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(secret)
        key = ApiKey(digest[:_KEY_ID_LENGTH], tenant, wanted, utcnow())
        # keep_existing: a (never seen) hash collision must not replace another key.
        written = await self._manager.put_records(
            SCOPE, [(digest, key.to_json())], keep_existing=True
        )
        if written != 1:
            raise AgentCoreError("a new API key collided with a stored one; try again")
        return secret, key

    async def find(self, secret: str) -> ApiKey | None:
        """The live (not revoked) key ``secret`` is, or ``None``."""
        if not well_formed(secret):
            return None
        return await self.find_digest(hash_key(secret))

    async def find_digest(self, digest: str) -> ApiKey | None:
        """The live (not revoked) key whose SHA-256 (hex) is ``digest``, or ``None``."""
        found = await self._manager.get_records(SCOPE, [digest])
        raw = found.get(digest)
        if raw is None:
            return None
        key = ApiKey.from_json(raw)
        return None if key.revoked else key

    async def list(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (revoked ones too), by id; only ``tenant``'s when given."""
        out: list[ApiKey] = []
        after: str | None = None
        while True:
            page = await self._manager.list_records(SCOPE, after=after, limit=1000)
            out += [ApiKey.from_json(raw) for _, raw in page]
            if len(page) < 1000:
                break
            after = page[-1][0]
        if tenant is not None:
            out = [key for key in out if key.tenant == tenant]
        return out

    async def revoke(self, key_id: str) -> ApiKey:
        """Mark the key revoked (kept, for the record); ``KeyNotFound`` if no key has the id."""
        if not isinstance(key_id, str) or _KEY_ID.fullmatch(key_id) is None:
            raise KeyNotFound(f"no API key has id {key_id!r:.80}")
        page = await self._manager.list_records(SCOPE, prefix=key_id, limit=2)
        if len(page) != 1:
            raise KeyNotFound(f"no API key has id {key_id!r}")
        digest, raw = page[0]
        key = ApiKey.from_json(raw)
        revoked = ApiKey(key.key_id, key.tenant, key.role, key.created_at, revoked=True)
        await self._manager.put_records(SCOPE, [(digest, revoked.to_json())])
        return revoked
