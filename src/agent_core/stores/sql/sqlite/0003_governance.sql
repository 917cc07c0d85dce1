-- agent-core schema 3 for SQLite: data governance (retention policies and the audit log).
--
-- retention_policies: one row per namespace; NULL days keep those sessions for ever.
-- Timestamps are INTEGER microseconds since the Unix epoch, UTC, as in schema 1. Retention
-- finds old sessions through sessions_by_state (state, session_id).
--
-- audit_log: who purged or exported what, when, for which user, how many sessions; never the
-- content. Append-only; ids order the records.

CREATE TABLE retention_policies (
    namespace     TEXT PRIMARY KEY,
    deleted_days  INTEGER CHECK (deleted_days >= 0),
    terminal_days INTEGER CHECK (terminal_days >= 0),
    updated_at    INTEGER NOT NULL,
    updated_by    TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    namespace     TEXT NOT NULL DEFAULT '',
    user_id       TEXT,
    session_count INTEGER NOT NULL DEFAULT 0,
    details       TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_by_user ON audit_log (user_id, id);
