"""Every error agent-core raises, in one tree.

Backends translate driver errors at their boundary (``raise StoreUnavailable(...) from exc``), so
callers only ever catch these. Domain errors carry no HTTP status; the HTTP layer maps them.
"""

from __future__ import annotations

__all__ = [
    "AgentCoreError",
    "CacheUnavailable",
    "ConfigurationError",
    "ConflictError",
    "DecryptionError",
    "InvalidSessionId",
    "InvalidTransition",
    "InvalidValue",
    "LeaseHeld",
    "LeaseLost",
    "MissingDependency",
    "NotOpenError",
    "PayloadTooLarge",
    "SessionNotFound",
    "StoreUnavailable",
    "ValidationError",
]


class AgentCoreError(Exception):
    """Base class of every error raised by agent-core."""


class ValidationError(AgentCoreError, ValueError):
    """Bad input: nothing was written."""


class InvalidSessionId(ValidationError):
    """A session id that is not a canonical UUID string."""


class InvalidValue(ValidationError):
    """A value outside the input rules (``agent_core.codec``): not plain JSON, nested too deep,
    a string that is not valid Unicode, an integer outside 64 bits, a float that some backend
    could not give back exactly. The message names the field and the path inside it."""


class PayloadTooLarge(ValidationError):
    """A context or checkpoint payload over the configured size limit."""


class SessionNotFound(AgentCoreError, LookupError):
    """No live (non-deleted) session has this id."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found")
        self.session_id = session_id


class ConflictError(AgentCoreError):
    """A compare-and-set lost: the stored session changed since the caller read it."""


class InvalidTransition(AgentCoreError):
    """A lifecycle change the state machine does not allow."""


class LeaseHeld(AgentCoreError):
    """Another owner holds a live lease on this session."""


class LeaseLost(AgentCoreError):
    """A write carried a fencing token that is no longer the session's newest."""


class StoreUnavailable(AgentCoreError):
    """The durable store could not be reached or did not answer in time.

    The operation may or may not have been committed only when ``maybe_committed`` is true
    (the connection broke after the commit was sent); otherwise it was not.
    """

    def __init__(self, message: str, *, maybe_committed: bool = False) -> None:
        super().__init__(message)
        self.maybe_committed = maybe_committed


class CacheUnavailable(AgentCoreError):
    """A cache tier failed. The manager never lets this escape: it logs, counts and reads on."""


class ConfigurationError(AgentCoreError, ValueError):
    """A URL or option that agent-core cannot use."""


class MissingDependency(ConfigurationError, ImportError):
    """An optional driver is not installed; the message names the extra to install."""


class NotOpenError(AgentCoreError, RuntimeError):
    """A store or cache used before ``open()`` or after ``close()``."""


class DecryptionError(AgentCoreError):
    """An encrypted value could not be opened: its key is not configured, the key is wrong,
    or the value was tampered with. Nothing is returned in its place."""
