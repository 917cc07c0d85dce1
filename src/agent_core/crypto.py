"""Encryption at rest: AES-GCM sealing of context, metadata and checkpoint data.

A ``Sealer`` holds one or more named keys; the first one encrypts, every one of them decrypts
(so keys can be rotated: put the new key first, run ``rotate_keys``, then drop the old one).

In the store a sealed value is the JSON object ``{"$sealed": base64(nonce || ciphertext),
"kid": key id}`` in place of the plain one; the associated data binds it to its session id and
its field, so a sealed value copied to another session or field does not open. In Valkey a
sealed body is ``b"$" + kid + b"." + base64(nonce || ciphertext)`` (no newline, so the step
deltas of an entry still split exactly).

A record value (``bytes``) is stored as ``Sealer.seal_bytes`` of it, bound to its tenant, scope
and key, with a flag column beside it that says it is sealed (a plain value may hold any bytes,
so no marker inside the value could tell them apart).

Keys that a store adds in SQL beside a sealed envelope (the stale sweep's constant
``"failure_reason": "heartbeat_timeout"``) are laid over the opened value; the session's next
write seals them in. Every other change of a sealed value goes through Python under the row lock.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from typing import Any

import orjson

from agent_core.errors import ConfigurationError, DecryptionError

__all__ = [
    "ENVELOPE",
    "Sealer",
    "is_sealed",
    "open_checkpoints",
    "open_record",
    "open_session",
    "open_value",
    "seal_record",
    "seal_value",
    "sealer_from",
]

ENVELOPE = "$sealed"
_NONCE = 12
_KEY_SIZES = (16, 24, 32)


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from agent_core.errors import MissingDependency

        raise MissingDependency(
            "encryption needs the cryptography package: pip install 'agent-core[crypto]'"
        ) from exc
    return AESGCM


def is_sealed(value: Any) -> bool:
    """Whether a stored JSON value is a sealed envelope."""
    return (
        isinstance(value, dict)
        and isinstance(value.get(ENVELOPE), str)
        and isinstance(value.get("kid"), str)
    )


class Sealer:
    """AES-GCM with named keys: ``Sealer([("k2", new_key), ("k1", old_key)])``."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigurationError("encryption_keys needs at least one key")
        aesgcm = _aesgcm()
        self._ciphers: dict[str, Any] = {}
        for kid, key in keys:
            if not isinstance(kid, str) or not kid or any(c in kid for c in ":,.$ "):
                raise ConfigurationError(f"bad encryption key id {kid!r}")
            if not isinstance(key, bytes) or len(key) not in _KEY_SIZES:
                raise ConfigurationError(
                    f"encryption key {kid!r} must be 16, 24 or 32 bytes for AES-GCM"
                )
            if kid in self._ciphers:
                raise ConfigurationError(f"encryption key id {kid!r} given twice")
            self._ciphers[kid] = aesgcm(key)
        self.kid: str = keys[0][0]
        self._cipher = self._ciphers[self.kid]
        self._kid_bytes = self.kid.encode()

    @classmethod
    def parse(cls, spec: str) -> Sealer:
        """Keys from ``"k2:base64,k1:base64"`` (the form of AGENT_CORE_ENCRYPTION_KEYS)."""
        keys: list[tuple[str, bytes]] = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            kid, sep, b64 = part.partition(":")
            if not sep:
                raise ConfigurationError("encryption keys look like 'k2:base64,k1:base64'")
            try:
                key = base64.b64decode(b64.strip(), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigurationError(f"encryption key {kid!r} is not base64") from exc
            keys.append((kid.strip(), key))
        return cls(keys)

    @property
    def kids(self) -> list[str]:
        return list(self._ciphers)

    def __repr__(self) -> str:
        return f"Sealer(kids={self.kids!r})"  # never the keys

    def _cipher_for(self, kid: str) -> Any:
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"value sealed with key {kid!r}, which is not configured")
        return cipher

    # --- bytes (the Valkey bodies) -------------------------------------------------------

    def seal_bytes(self, plain: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._cipher.encrypt(nonce, plain, aad)
        return b"$" + self._kid_bytes + b"." + base64.b64encode(sealed)

    def open_bytes(self, blob: bytes, aad: bytes) -> bytes:
        kid, _, b64 = blob[1:].partition(b".")
        return self._decrypt(kid.decode(errors="replace"), b64, aad)

    def _decrypt(self, kid: str, b64: bytes | str, aad: bytes) -> bytes:
        cipher = self._cipher_for(kid)
        try:
            raw = base64.b64decode(b64, validate=True)
            plain: bytes = cipher.decrypt(raw[:_NONCE], raw[_NONCE:], aad)
        except Exception as exc:
            raise DecryptionError(
                f"a value sealed with key {kid!r} does not open (wrong key or tampered)"
            ) from exc
        return plain

    # --- JSON values (the store columns) -------------------------------------------------

    def seal(self, value: Any, aad: str) -> dict[str, str]:
        """The envelope of a JSON-able value."""
        sealed = self.seal_bytes(orjson.dumps(value), aad.encode())
        return {ENVELOPE: sealed[len(self._kid_bytes) + 2 :].decode(), "kid": self.kid}

    def open(self, envelope: dict[str, Any], aad: str) -> Any:
        value = orjson.loads(self._decrypt(envelope["kid"], envelope[ENVELOPE], aad.encode()))
        extra = {k: v for k, v in envelope.items() if k not in (ENVELOPE, "kid")}
        if extra and isinstance(value, dict):
            value.update(extra)
        return value


def open_value(sealer: Sealer | None, value: Any, aad: str) -> Any:
    """A stored JSON value opened if it is sealed; a plain one as it is.

    A sealed value without a sealer raises ``DecryptionError`` (never the envelope as data).
    """
    if not is_sealed(value):
        return value
    if sealer is None:
        raise DecryptionError(
            f"a value is encrypted (key {value['kid']!r}) but no encryption_keys are configured"
        )
    return sealer.open(value, aad)


def sealer_from(option: Any) -> Sealer | None:
    """The ``encryption_keys=`` option: ``None``, a ``Sealer``, ``"k2:b64,k1:b64"`` or a list
    of ``(kid, key_bytes)`` pairs."""
    if option is None:
        return None
    if isinstance(option, Sealer):
        return option
    if isinstance(option, str):
        return Sealer.parse(option)
    return Sealer([(kid, key) for kid, key in option])


def seal_value(sealer: Sealer | None, value: Any, session_id: str, field: str) -> Any:
    """What a store writes for ``value``: its envelope with a sealer, the value without."""
    return value if sealer is None else sealer.seal(value, f"{session_id}/{field}")


def open_checkpoints(sealer: Sealer | None, session_id: str, checkpoints: Any) -> Any:
    """Open the data of each checkpoint of ``session_id`` in place; returns ``checkpoints``."""
    aad = f"{session_id}/checkpoint"
    for cp in checkpoints:
        if type(cp.data) is dict and ENVELOPE in cp.data:
            cp.data = open_value(sealer, cp.data, aad)
    return checkpoints


def open_session(sealer: Sealer | None, session: Any) -> Any:
    """Open a session read from a store (context, metadata, its checkpoints) in place."""
    sid = session.session_id
    if type(session.context) is dict and ENVELOPE in session.context:
        session.context = open_value(sealer, session.context, f"{sid}/context")
    if type(session.metadata) is dict and ENVELOPE in session.metadata:
        session.metadata = open_value(sealer, session.metadata, f"{sid}/metadata")
    open_checkpoints(sealer, sid, session.checkpoints)
    return session


def _record_aad(tenant: str, scope: str, key: str) -> bytes:
    # A JSON array: unambiguous whatever characters the three strings hold.
    return orjson.dumps(["record", tenant, scope, key])


def seal_record(sealer: Sealer | None, value: bytes, tenant: str, scope: str, key: str) -> bytes:
    """What a store writes for a record value: sealed (bound to tenant, scope and key) with a
    sealer, the value itself without one. The store also keeps ``sealer is not None``."""
    if sealer is None:
        return value
    return sealer.seal_bytes(value, _record_aad(tenant, scope, key))


def open_record(
    sealer: Sealer | None, stored: bytes, sealed: bool, tenant: str, scope: str, key: str
) -> bytes:
    """A stored record value opened if ``sealed``; ``DecryptionError`` if it is sealed and no
    sealer is configured, or it does not open."""
    if not sealed:
        return stored
    if sealer is None:
        raise DecryptionError(
            f"record {key!r} of scope {scope!r} is encrypted but no encryption_keys are configured"
        )
    return sealer.open_bytes(stored, _record_aad(tenant, scope, key))
