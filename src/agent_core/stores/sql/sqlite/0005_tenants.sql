-- agent-core schema 5 for SQLite: tenants.
--
-- Every session belongs to a tenant ('' for none). A tenant-bound store adds
-- "AND tenant = '<name>'" to every statement it runs, so another tenant's rows are, to it, rows
-- that do not exist; an untenanted store adds nothing and keeps the plans of schema 1-4.
-- Checkpoints carry their session's tenant too, so that trail reads, which never join
-- sessions, filter as well. Retention policies are per tenant and namespace; audit records
-- name the tenant whose manager wrote them.

ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE checkpoints ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN tenant TEXT NOT NULL DEFAULT '';

-- A tenant's listings: the same shapes as schema 1's indexes, with the tenant first. Partial
-- (tenant <> ''): untenanted rows cost no entry in them, and the planner never picks them for
-- an untenanted statement. A tenant-bound store's filter therefore spells out both terms,
-- "tenant = '<name>' AND tenant <> ''", since SQLite matches a partial index's terms
-- literally.
CREATE INDEX sessions_tenant_active_by_user
    ON sessions (tenant, user_id, session_id) WHERE state = 'active' AND tenant <> '';
CREATE INDEX sessions_tenant_active_by_agent_type
    ON sessions (tenant, agent_type, session_id) WHERE state = 'active' AND tenant <> '';
CREATE INDEX sessions_tenant_by_user
    ON sessions (tenant, user_id, session_id) WHERE tenant <> '';
CREATE INDEX sessions_tenant_by_state
    ON sessions (tenant, state, session_id) WHERE tenant <> '';
CREATE INDEX sessions_tenant_stale_sweep
    ON sessions (tenant, last_heartbeat) WHERE state = 'active' AND tenant <> '';
CREATE INDEX sessions_tenant_lease_expiry
    ON sessions (tenant, lease_expires_at) WHERE lease_owner IS NOT NULL AND tenant <> '';
CREATE INDEX audit_log_by_tenant ON audit_log (tenant, id) WHERE tenant <> '';

-- Retention policies keyed by (tenant, namespace): SQLite cannot change a primary key in
-- place, so the table is rebuilt.
CREATE TABLE retention_policies_v5 (
    tenant        TEXT NOT NULL DEFAULT '',
    namespace     TEXT NOT NULL,
    deleted_days  INTEGER CHECK (deleted_days >= 0),
    terminal_days INTEGER CHECK (terminal_days >= 0),
    updated_at    INTEGER NOT NULL,
    updated_by    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, namespace)
) WITHOUT ROWID;
INSERT INTO retention_policies_v5
       (tenant, namespace, deleted_days, terminal_days, updated_at, updated_by)
SELECT '', namespace, deleted_days, terminal_days, updated_at, updated_by
  FROM retention_policies;
DROP TABLE retention_policies;
ALTER TABLE retention_policies_v5 RENAME TO retention_policies;
