"""New API the coherence fixes bring: a byte bound on the in-process tier (item 15) and a
lease-fenced ``update_session`` (item 16)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from agent_core.cache.local import LocalCache
from agent_core.errors import ConflictError, LeaseHeld, LeaseLost
from tests.conftest import MakeManager


def test_f15_local_tier_has_a_byte_bound_by_default() -> None:
    tier = LocalCache()
    assert isinstance(tier.max_bytes, int)
    assert 0 < tier.max_bytes < 2**30
    assert tier.nbytes == 0


@pytest.mark.parametrize("backend", ["sqlite+local", "postgres+valkey+local"])
async def test_f15_local_tier_stays_within_its_byte_bound(make_manager: MakeManager) -> None:
    bound = 4 * 2**20
    writer = await make_manager(local_cache=False)
    blob = "x" * 900_000  # ~0.9 MB of JSON per session, under the 1 MiB payload limit
    ids = [
        (await writer.create_session("big", "u", {"blob": blob, "i": i})).session_id
        for i in range(20)
    ]
    tier = LocalCache(max_bytes=bound)
    reader = await make_manager(local_cache=tier)
    assert reader.local is tier
    peak = 0
    for sid in ids:
        got = await reader.get_session(sid)
        assert got is not None and len(got.context["blob"]) == len(blob)
        peak = max(peak, tier.nbytes)
        assert tier.nbytes <= bound, f"the tier holds {tier.nbytes} bytes, bound {bound}"
    assert peak > 0, "the tier kept nothing: test is void"
    # Still served correctly once entries were pushed out.
    got = await reader.get_session(ids[0])
    assert got is not None and got.context["i"] == 0


async def test_f16_update_session_with_a_lost_lease_raises_lease_lost(
    make_manager: MakeManager,
) -> None:
    a = await make_manager()
    b = await make_manager()
    sid = (await a.create_session("pipeline", "u", {"step": 0})).session_id
    a_lease = await a.claim(sid, "worker-a", timedelta(milliseconds=300))
    await asyncio.sleep(0.4)
    b_lease = await b.claim(sid, "worker-b", timedelta(seconds=30))
    assert b_lease.token > a_lease.token
    before = await b.store.get(sid, window=10)
    assert before is not None

    # Worker A does what the README says on a conflict: re-read and retry.
    outcome: object = None
    for _ in range(5):
        s = await a.get_session(sid)
        assert s is not None
        s.context["step"] = "a-was-here"
        s.checkpoint("a-step")
        try:
            await a.update_session(s, lease=a_lease)
        except ConflictError:
            continue
        except LeaseLost as exc:
            outcome = exc
            break
        outcome = "stored"
        break
    assert isinstance(outcome, LeaseLost), f"a fenced-out update_session gave {outcome!r}"
    after = await b.store.get(sid, window=10)
    assert after is not None
    assert after.version == before.version and after.context == {"step": 0}
    assert [cp.name for cp in after.checkpoints] == [cp.name for cp in before.checkpoints]
    # B still holds the session, and its own fenced update goes through.
    with pytest.raises(LeaseHeld):
        await a.claim(sid, "worker-a", timedelta(seconds=30))
    s = await b.get_session(sid)
    assert s is not None
    s.context["step"] = "b"
    await b.update_session(s, lease=b_lease)
