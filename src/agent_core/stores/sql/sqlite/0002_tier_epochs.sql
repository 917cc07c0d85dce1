-- agent-core schema 2 for SQLite: tier epochs.
--
-- One row per cache namespace. A bump raises ``epoch``, which invalidates every shared-cache
-- entry stamped with an older epoch at once; ``cache_id`` names the cache that set it last
-- ('' when none did). Rows are created on first read, as (0, '').

CREATE TABLE tier_epochs (
    namespace TEXT PRIMARY KEY,
    epoch     INTEGER NOT NULL DEFAULT 0,
    cache_id  TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
