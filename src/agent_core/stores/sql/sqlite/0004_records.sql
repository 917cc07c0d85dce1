-- agent-core schema 4 for SQLite: records.
--
-- Opaque byte values under (tenant, scope, key), for what the session model lacks (framework
-- checkpoints and blobs, items, app state, API keys). TEXT compares with the BINARY collation,
-- byte by byte in UTF-8: code point order, as Python sorts strings. An ordinary rowid table,
-- not WITHOUT ROWID: values may be large (framework blobs), and a WITHOUT ROWID table keeps
-- whole rows in its b-tree pages.
--
-- sealed: 1 when value is sealed with encryption_keys (the store's format of
-- Sealer.seal_bytes, bound to tenant, scope and key), 0 when it is the plain value.
-- A record attached to a session goes with it (purge, retention) through ON DELETE CASCADE.
-- updated_at: INTEGER microseconds since the Unix epoch, UTC, as in schema 1.

CREATE TABLE records (
    tenant      TEXT NOT NULL DEFAULT '',
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    sealed      INTEGER NOT NULL DEFAULT 0,
    session_id  TEXT REFERENCES sessions (session_id) ON DELETE CASCADE,
    user_id     TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, scope, key)
);

CREATE INDEX records_by_session ON records (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX records_by_user ON records (user_id) WHERE user_id IS NOT NULL;
