"""A random differential run of a store against MemoryStore, the reference backend.

Both stores get the same deterministic sequence of calls; every outcome (result or error type)
and the final stored state must agree. Used by the PostgreSQL and SQLite store suites.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from agent_core.errors import AgentCoreError
from agent_core.sessions.session_models import (
    AgentSession,
    Lease,
    SessionCheckpoint,
    SessionState,
    utcnow,
)
from agent_core.stores.base import AppendResult, SessionStore
from agent_core.stores.memory import MemoryStore

# Strings PostgreSQL cannot store as they are (U+0000) and the escape's own code points.
AWKWARD = ["nul\x00", "\x00", "\ufdd0", "\ufdd00", "\ufdd01\x00", "\\u0000", "x\ufdd0\ufdd0y"]


def normal(value: Any) -> Any:
    """Outcome of a store call with the fields that depend on the store's clock taken out."""
    if isinstance(value, AgentSession):
        out = asdict(value)
        for stamp in ("created_at", "updated_at", "last_heartbeat"):
            out.pop(stamp)
        out["checkpoints"] = [normal(cp) for cp in value.checkpoints]
        return ("session", out)
    if isinstance(value, SessionCheckpoint):
        return ("checkpoint", value.name, value.timestamp, value.data, value.seq)
    if isinstance(value, Lease):
        return ("lease", value.session_id, value.owner, value.token)
    if isinstance(value, AppendResult):
        return ("append", normal(value.checkpoint), normal(value.session), value.created)
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


async def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return ("ok", normal(await method(*args, **kwargs)))
    except AgentCoreError as exc:
        return ("error", type(exc).__name__)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randrange(-(2**40), 2**40)
    if kind == 3:
        return rng.choice([0.5, -1.25, 1e-7, 3.0, 1e20])
    if kind == 4:
        return rng.choice(["", "x", "ünïcødé", "emoji 🎉", "a\nb", *AWKWARD])
    if kind in (5, 6):
        return {rng.choice("abcde"): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(3))]


def random_object(rng: random.Random) -> dict[str, Any]:
    return {rng.choice("abcde"): random_json(rng, 1) for _ in range(rng.randrange(4))}


class World:
    """The shared, deterministic inputs of a differential run."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        base = utcnow().replace(microsecond=0) - timedelta(minutes=30)
        # Heartbeats and checkpoint times: stale, recent, and just ahead of the sweep cutoff.
        self.times = [base - timedelta(hours=2), base, base + timedelta(minutes=5)]
        self.ids = [str(uuid.UUID(int=self.rng.getrandbits(128), version=4)) for _ in range(6)]
        self.leases: list[Lease] = []
        self.views: dict[str, AgentSession] = {}
        self.namespaces = ["ns-a", "ns-b", "\x00ns"]

    def op(self, step: int) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """One random call: (method name, args, kwargs), the same for both stores."""
        rng = self.rng
        sid = rng.choice(self.ids)
        fence = rng.choice([None, None, *self.leases[-3:]]) if self.leases else None
        if fence is not None and fence.session_id != sid:
            fence = None
        window = rng.choice([0, 1, 3, 100])
        limit = rng.choice([1, 2, 50])
        ttl = rng.choice([timedelta(hours=1), timedelta(seconds=-1)])
        at = rng.choice(self.times)
        cps = [
            SessionCheckpoint(f"cp{step}-{i}", timestamp=at, data=random_object(rng))
            for i in range(rng.randrange(3))
        ]
        kind = rng.randrange(22)
        if kind == 0:
            session = AgentSession(
                agent_type=rng.choice(["planner", "coder"]),
                user_id=rng.choice(["u1", "u2"]),
                session_id=sid,
                created_at=self.times[0],
                last_heartbeat=at,
                context=random_object(rng),
                metadata=random_object(rng),
                checkpoints=cps,
            )
            return "create", (session,), {}
        if kind == 3 and sid in self.views:
            updated = AgentSession(
                **{
                    **asdict(self.views[sid]),
                    "checkpoints": [],
                    "state": rng.choice(list(SessionState)),
                    "context": random_object(rng),
                    "last_heartbeat": at,
                }
            )
            return "update", (updated, cps), {"fence": fence}
        if kind in (4, 5):
            cp = SessionCheckpoint("a", timestamp=at, data=random_object(rng))
            key = rng.choice([None, "k1", "k2"])
            return "append_checkpoint", (sid, cp), {"idempotency_key": key, "fence": fence}
        if kind == 6:
            return "heartbeat", (sid,), {"fence": fence}
        if kind == 7:
            return "patch_context", (sid, random_object(rng)), {"fence": fence}
        if kind == 8:
            state = rng.choice(list(SessionState))
            reason = rng.choice([None, "oops"])
            return "set_state", (sid, state), {"reason": reason, "fence": fence}
        if kind == 9:
            return "delete", (sid,), {}
        if kind == 10:
            return "list_checkpoints", (sid,), {"after_seq": window, "limit": limit}
        if kind == 11:
            filters = {
                "state": rng.choice([None, SessionState.ACTIVE, SessionState.FAILED]),
                "agent_type": rng.choice([None, "planner"]),
                "user_id": rng.choice([None, "u1"]),
                "after": rng.choice([None, *self.ids[:3]]),
            }
            return "list_sessions", (), {"limit": limit, **filters}
        if kind == 12:
            return "claim", (sid, rng.choice(["w1", "w2"]), ttl), {}
        if kind == 13 and fence is not None:
            return "renew", (fence, ttl), {}
        if kind == 14 and fence is not None:
            return "release", (fence,), {}
        if kind == 15:
            return "current_lease", (sid,), {}
        if kind == 16:
            # Heartbeats are stamped by each store's own clock: sweep all or none of them.
            max_age = rng.choice([timedelta(hours=1), timedelta(0)])
            return "sweep_stale", (max_age,), {"limit": 1000}
        if kind == 17:
            return "expire_leases", (), {"limit": 1000}
        if kind == 18 and rng.randrange(4) == 0:
            purge_by = rng.choice(
                [
                    {"session_id": sid},
                    {"user_id": rng.choice(["u1", "u2"])},
                    {"session_id": sid, "user_id": rng.choice(["u1", "u2"])},
                ]
            )
            return "purge", (), purge_by
        if kind == 19:
            return "describe", (rng.sample(self.ids, rng.randrange(len(self.ids) + 1)),), {}
        if kind == 20:
            return "tier_epoch", (rng.choice(self.namespaces),), {}
        if kind == 21:
            namespace = rng.choice([None, *self.namespaces])
            return "bump_tier_epoch", (namespace,), {"cache_id": rng.choice([None, "c1", "c2"])}
        if kind == 2:
            return "get_version", (sid,), {}
        return "get", (sid,), {"window": window}


async def check_against_memory(store: SessionStore, seed: int, steps: int = 400) -> None:
    """Run ``steps`` random calls on ``store`` and on a fresh MemoryStore; assert they agree."""
    world = World(seed)
    memory = MemoryStore()
    await memory.open()
    stores: list[SessionStore] = [memory, store]
    for step in range(steps):
        name, args, kwargs = world.op(step)
        outcomes = [await call(getattr(s, name), *args, **kwargs) for s in stores]
        if name in ("sweep_stale", "expire_leases") and outcomes[0][0] == "ok":
            # Both handle everything eligible; only the order within the batch may differ.
            outcomes = [(o[0], sorted(o[1], key=repr)) for o in outcomes]
        assert outcomes[0] == outcomes[1], f"step {step}: {name} {args} {kwargs}"
        sid = args[0] if args and args[0] in world.ids else None
        if name == "claim" and outcomes[0][0] == "ok" and sid is not None:
            lease = await store.current_lease(sid)
            if lease is not None:
                world.leases.append(lease)
        if sid is not None:
            fresh = await store.get(sid, window=0)
            if fresh is not None:
                world.views[sid] = fresh
            else:
                world.views.pop(sid, None)
    # The whole stored state agrees at the end.
    for sid in world.ids:
        for name, kwargs in (("get", {"window": 10_000}), ("current_lease", {})):
            final = [await call(getattr(s, name), sid, **kwargs) for s in stores]
            assert final[0] == final[1], f"{name} {sid}"
    for namespace in world.namespaces:
        epochs = [await s.tier_epoch(namespace) for s in stores]
        assert epochs[0] == epochs[1], namespace
