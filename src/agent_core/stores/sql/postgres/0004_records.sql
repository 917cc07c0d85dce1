-- agent-core schema, version 4: records.
--
-- Opaque byte values under (tenant, scope, key), for what the session model lacks (framework
-- checkpoints and blobs, items, app state, API keys). Scopes and keys use the "C" collation,
-- so ORDER BY, the after/before cursors and prefix ranges compare code points, exactly as
-- Python sorts strings, whatever the database's default collation is.
--
-- sealed: true when value is sealed with encryption_keys (the format of Sealer.seal_bytes,
-- bound to tenant, scope and key), false when it is the plain value.
-- A record attached to a session goes with it (purge, retention) through ON DELETE CASCADE;
-- a write that attaches records takes a KEY SHARE lock on the session row, so a concurrent
-- purge either waits for it (and then removes its records) or wins (and the write fails).

CREATE TABLE records (
    tenant      text COLLATE "C" NOT NULL DEFAULT '',
    scope       text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    value       bytea       NOT NULL,
    sealed      boolean     NOT NULL DEFAULT false,
    session_id  text COLLATE "C"
        REFERENCES sessions (session_id) ON DELETE CASCADE,
    user_id     text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, scope, key)
);

-- purge(session_id=...) (the cascade) and export.
CREATE INDEX records_by_session ON records (session_id) WHERE session_id IS NOT NULL;
-- purge(user_id=...) and export.
CREATE INDEX records_by_user ON records (user_id) WHERE user_id IS NOT NULL;
