-- agent-core schema, version 3: data governance (retention policies and the audit log).
--
-- retention_policies: one row per namespace; NULL days keep those sessions for ever. The
-- reaper of a namespace purges soft-deleted sessions deleted_days after their deletion and
-- completed/failed sessions terminal_days after their last change (updated_at, by now()).
-- It finds them through sessions_by_state (state, session_id), so no index on updated_at is
-- added: one would make every write of a session (all of which move updated_at) a non-HOT
-- update.
--
-- audit_log: who purged or exported what, when, for which user, how many sessions; never the
-- content. Append-only; ids order the records.

CREATE TABLE retention_policies (
    namespace      text COLLATE "C" PRIMARY KEY,
    deleted_days   integer CONSTRAINT retention_deleted_days_check CHECK (deleted_days >= 0),
    terminal_days  integer CONSTRAINT retention_terminal_days_check CHECK (terminal_days >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text        NOT NULL DEFAULT ''
);

CREATE TABLE audit_log (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text        NOT NULL,
    action         text        NOT NULL,
    namespace      text        NOT NULL DEFAULT '',
    user_id        text,
    session_count  bigint      NOT NULL DEFAULT 0,
    details        jsonb       NOT NULL DEFAULT '{}'::jsonb
);

-- audit --user U: one user's records in id order.
CREATE INDEX audit_log_by_user ON audit_log (user_id, id);
