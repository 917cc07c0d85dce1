-- agent-core schema, version 5: tenants.
--
-- Every session belongs to a tenant ('' for none). Two rules keep a tenant to its own rows:
--
-- 1. A tenant-bound store adds "AND tenant = '<name>'" to every statement it runs; an
--    untenanted store adds nothing, so its statements and plans are those of schemas 1-4.
-- 2. Row-level security: a tenant-bound store's connections SET ROLE to a NOLOGIN role
--    (agent_core_tenant by default) and set agent_core.tenant to their tenant. Rows of these
--    tables are then visible and writable only where tenant = current_setting('agent_core.tenant')
--    (a restrictive policy on that role), so a statement that forgot rule 1 still sees nothing
--    of another tenant. The role, its grants and that policy are created by the first
--    tenant-bound store that opens the schema (PostgresStore._setup_tenancy), not here: roles
--    are cluster-wide and need CREATEROLE, which an untenanted deployment never needs.
--
-- Tables stay owned by the migrating user, without FORCE ROW LEVEL SECURITY: the owner (every
-- untenanted store) bypasses the policies and pays nothing. Other roles get the permissive
-- policy below, which lets them see what their grants allow, as before this schema.
--
-- Checkpoints and audit records carry the tenant too, so the statements that read them
-- without joining sessions (trail pages, key rotation, the audit log) filter by rule 1 and 2
-- alike. Retention policies are per tenant and namespace.

ALTER TABLE sessions ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE checkpoints ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE retention_policies ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE retention_policies
    DROP CONSTRAINT retention_policies_pkey,
    ADD CONSTRAINT retention_policies_pkey PRIMARY KEY (tenant, namespace);

-- A tenant's listings: the shapes of schema 1's indexes with the tenant first. Partial
-- (tenant <> ''): untenanted rows cost no entry in them, and the planner never picks them for
-- an untenanted statement (tenant = '<name>' implies the predicate, even in a generic plan,
-- because a tenant-bound store writes its name as a literal).
CREATE INDEX sessions_tenant_active_by_user
    ON sessions (tenant, user_id, session_id) WHERE state = 'active' AND tenant <> '';
CREATE INDEX sessions_tenant_active_by_agent_type
    ON sessions (tenant, agent_type, session_id) WHERE state = 'active' AND tenant <> '';
CREATE INDEX sessions_tenant_by_state
    ON sessions (tenant, state, session_id) WHERE tenant <> '';
CREATE INDEX sessions_tenant_by_user
    ON sessions (tenant, user_id, session_id) WHERE tenant <> '';
CREATE INDEX sessions_tenant_stale
    ON sessions (tenant, last_heartbeat) WHERE state = 'active' AND tenant <> '';
CREATE INDEX sessions_tenant_leases
    ON sessions (tenant, lease_expires_at) WHERE lease_owner IS NOT NULL AND tenant <> '';
CREATE INDEX audit_log_by_tenant ON audit_log (tenant, id) WHERE tenant <> '';

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE records ENABLE ROW LEVEL SECURITY;

CREATE POLICY agent_core_open ON sessions USING (true) WITH CHECK (true);
CREATE POLICY agent_core_open ON checkpoints USING (true) WITH CHECK (true);
CREATE POLICY agent_core_open ON audit_log USING (true) WITH CHECK (true);
CREATE POLICY agent_core_open ON retention_policies USING (true) WITH CHECK (true);
CREATE POLICY agent_core_open ON records USING (true) WITH CHECK (true);
