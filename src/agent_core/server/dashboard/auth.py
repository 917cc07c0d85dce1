"""The dashboard's browser session: one signed cookie, and the CSRF token that lives in it.

The cookie holds no API key. At sign-in the key is checked by the hub; the cookie then keeps the
key's SHA-256 digest (the form the key is stored in anyway), the key id, a random CSRF token and
when it was issued, signed with HMAC-SHA256. Every request checks the signature and the age,
then asks the hub again by digest, so a revoked key stops working at its next request, not
when the cookie expires.

CSRF: every form carries the token of the cookie (a synchronizer token kept in the signed
cookie, so a page of another site can neither read nor forge it); every POST compares the two
in constant time. A visitor who is not signed in gets a cookie with only a token, so the
sign-in form is protected too. The cookie is HttpOnly, SameSite=Strict, and Secure when the
request came over https.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from agent_core import codec
from agent_core.server.keys import hash_key

__all__ = [
    "COOKIE_NAME",
    "CookieSigner",
    "DashSession",
    "key_digest",
    "secret_from_env",
]

COOKIE_NAME = "agent_core_dash"
#: How long a sign-in lasts, in seconds (the cookie's Max-Age and the signed age limit).
MAX_AGE = 12 * 3600
_CONTEXT = b"agent-core dashboard session v1:"


def key_digest(key: str) -> str:
    """The SHA-256 of an API key, hex: what the cookie keeps instead of the key (the key
    store's own digest, so the hub can check it)."""
    return hash_key(key)


def secret_from_env(configured: str | None = None) -> bytes:
    """The signing secret: the configured one, else ``AGENT_CORE_SECRET``, else random.

    A random secret lives as long as the process: signing in again after a restart is the
    price, and nothing signed by another process is ever accepted.
    """
    value = configured or os.environ.get("AGENT_CORE_SECRET")
    if value:
        return value.encode()
    return secrets.token_bytes(32)


@dataclass(frozen=True)
class DashSession:
    """What one browser's cookie says: its CSRF token and, once signed in, whose key it was."""

    csrf: str
    digest: str = ""
    key_id: str = ""
    issued_at: float = 0.0

    @property
    def signed_in(self) -> bool:
        return bool(self.digest)

    @classmethod
    def anonymous(cls) -> DashSession:
        return cls(csrf=secrets.token_urlsafe(32), issued_at=time.time())

    def signed_in_as(self, digest: str, key_id: str) -> DashSession:
        # A new CSRF token at sign-in: a token seen before sign-in is worth nothing after.
        return DashSession(
            csrf=secrets.token_urlsafe(32), digest=digest, key_id=key_id, issued_at=time.time()
        )

    def csrf_matches(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), (token or "").encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    """Signs and checks the session cookie (HMAC-SHA256 over the base64 payload)."""

    def __init__(self, secret: bytes, *, max_age: int = MAX_AGE) -> None:
        self._secret = secret
        self.max_age = max_age

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, _CONTEXT + payload.encode(), hashlib.sha256).digest())

    def dumps(self, session: DashSession) -> str:
        body: dict[str, Any] = {"c": session.csrf, "t": session.issued_at}
        if session.digest:
            body["d"] = session.digest
            body["k"] = session.key_id
        payload = _b64(codec.dumps(body))
        return f"{payload}.{self._mac(payload)}"

    def loads(self, value: str | None, *, now: float | None = None) -> DashSession | None:
        """The session in a cookie value, or ``None`` if it is missing, forged or too old."""
        if not value or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            body = codec.loads(_unb64(payload))
            session = DashSession(
                csrf=str(body["c"]),
                digest=str(body.get("d", "")),
                key_id=str(body.get("k", "")),
                issued_at=float(body["t"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        age = (time.time() if now is None else now) - session.issued_at
        if age < -60 or age > self.max_age or len(session.csrf) < 32:
            return None
        return session
