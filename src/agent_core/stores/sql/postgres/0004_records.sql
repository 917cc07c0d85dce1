-- PLACEHOLDER on branch tenancy: main's 0004_records.sql (helper "records") replaces this file
-- at the merge. It only keeps the migrations numbered 1..n here.

CREATE TABLE records (
    tenant      text COLLATE "C" NOT NULL DEFAULT '',
    scope       text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    value       bytea       NOT NULL,
    session_id  text COLLATE "C",
    user_id     text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, scope, key)
);
