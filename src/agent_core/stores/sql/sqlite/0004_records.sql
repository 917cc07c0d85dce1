-- PLACEHOLDER on branch tenancy: main's 0004_records.sql (helper "records") replaces this file
-- at the merge. It only keeps the migrations numbered 1..n here.

CREATE TABLE records (
    tenant     TEXT NOT NULL DEFAULT '',
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    session_id TEXT,
    user_id    TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, scope, key)
) WITHOUT ROWID;
