-- agent-core schema 1 for SQLite.
--
-- Timestamps are INTEGER microseconds since the Unix epoch, UTC: they compare correctly in SQL
-- and round-trip a Python datetime exactly. JSON columns hold orjson-encoded TEXT, readable with
-- the sqlite3 shell and SQLite's json functions.

CREATE TABLE IF NOT EXISTS agent_core_schema (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

CREATE TABLE sessions (
    session_id       TEXT PRIMARY KEY,
    agent_type       TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    state            TEXT NOT NULL
        CHECK (state IN ('active', 'paused', 'completed', 'failed', 'deleted')),
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_heartbeat   INTEGER NOT NULL,
    version          INTEGER NOT NULL,
    checkpoint_count INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    -- Microseconds rather than milliseconds, so a heartbeat extends a lease by exactly the
    -- timedelta it was granted for.
    lease_ttl_us     INTEGER,
    -- The JSON columns come last: the small columns every write changes stay in the row's
    -- first page, and SQLite leaves unchanged overflow pages of a large context unwritten.
    context          TEXT NOT NULL,
    metadata         TEXT NOT NULL
);

-- Clustered by (session_id, seq): a session's trail is contiguous, and both the recent window
-- and cursor pages are one primary-key range read.
CREATE TABLE checkpoints (
    session_id      TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    name            TEXT NOT NULL,
    data            TEXT NOT NULL,
    timestamp       INTEGER NOT NULL,
    idempotency_key TEXT,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;

CREATE UNIQUE INDEX checkpoints_idempotency_key
    ON checkpoints (session_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Listing active sessions (the hot path) touches only active rows.
CREATE INDEX sessions_active_by_user
    ON sessions (user_id, session_id) WHERE state = 'active';
CREATE INDEX sessions_active_by_agent_type
    ON sessions (agent_type, session_id) WHERE state = 'active';

-- user_id and agent_type never change after insert, so these cost one index write per session;
-- they serve listings of other states and purge by user.
CREATE INDEX sessions_by_user ON sessions (user_id, session_id);
CREATE INDEX sessions_by_agent_type ON sessions (agent_type, session_id);
CREATE INDEX sessions_by_state ON sessions (state, session_id);

CREATE INDEX sessions_stale_sweep
    ON sessions (last_heartbeat) WHERE state = 'active';
CREATE INDEX sessions_lease_expiry
    ON sessions (lease_expires_at) WHERE lease_owner IS NOT NULL;
