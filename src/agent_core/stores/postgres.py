"""PostgreSQL store on asyncpg: the shared, durable backend for many processes.

Design notes:

* Every write is **one SQL statement** (data-modifying CTEs where a session row and its
  checkpoints change together), sent in autocommit mode: one round trip, one implicit
  transaction, and the row lock taken by the ``UPDATE`` serializes concurrent writers of a
  session. Only when a statement changes no row does a second, read-only query find out why
  (not found, lease lost, version conflict, invalid transition, idempotent replay).
* Checkpoint ``seq`` is ``checkpoint_count`` of the locked session row, so seqs are dense and an
  append never reads the trail. Reads take the last ``window`` checkpoints by primary-key range.
* JSON travels as text produced and parsed by orjson (asyncpg's built-in ``jsonb`` codec passes
  ``str`` through), so an injected pool needs no codec setup (it must not install a ``jsonb``
  codec of its own that expects Python objects).
* PostgreSQL cannot store U+0000 in text or jsonb; strings containing it are stored through a
  reversible escape (see ``_esc``), so every string round-trips as in the other stores.
* Every session write is a statement whose row lock on ``sessions`` orders it; sweeps and lease
  expiry lock with ``SKIP LOCKED``, so concurrent sweepers split the work.
* One clock: every instant the store stamps or compares (heartbeats, ``updated_at``, lease
  expiry, fence liveness, the sweep cutoff) is the server's ``now()``, computed inside the
  statement; no client clock takes part, so processes with skewed clocks agree.
* Driver errors never escape: connection failures and timeouts become ``StoreUnavailable``
  (``maybe_committed`` only when the write statement had been sent and no answer came back),
  and a connection that failed at the protocol level is terminated, never returned to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import orjson

from agent_core.codec import encode_patched, merge_patch
from agent_core.crypto import Sealer, open_record, open_value, seal_record
from agent_core.errors import (
    AgentCoreError,
    ConfigurationError,
    ConflictError,
    DecryptionError,
    LeaseHeld,
    LeaseLost,
    MissingDependency,
    NotOpenError,
    SessionNotFound,
    StoreUnavailable,
    ValidationError,
)
from agent_core.factory import hide_password
from agent_core.sessions.session_models import AgentSession, Lease, SessionCheckpoint, SessionState
from agent_core.stores.base import (
    SEQ_KEY_DIGITS,
    AppendResult,
    AuditRecord,
    RecordWrite,
    RetentionPolicy,
    SessionRef,
    SessionStore,
    StoredRecord,
    TierEpoch,
    bound_age,
    check_tenant,
    prefix_end,
)
from agent_core.stores.migrations import load_migrations

__all__ = ["PostgresStore"]

_T = TypeVar("_T")

# pg_advisory_xact_lock key serializing migrations across processes ("agentcor" in ASCII).
_MIGRATION_LOCK = 0x6167656E74636F72
_MIGRATION_TIMEOUT = 60.0
_BIGINT_MAX = 2**63 - 1
_MICROSECOND = timedelta(microseconds=1)
# A deadlock or serialization failure rolled the statement back: it is safe to run it again.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
_MAX_ATTEMPTS = 3
# admin_shutdown, crash_shutdown, cannot_connect_now: the backend is going away or not there.
_SERVER_GONE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_HEAD_COLUMNS = (
    "session_id",
    "agent_type",
    "user_id",
    "state",
    "context",
    "metadata",
    "created_at",
    "updated_at",
    "last_heartbeat",
    "version",
    "checkpoint_count",
    "tenant",
)
_HEAD = ", ".join(_HEAD_COLUMNS)
_S_HEAD = ", ".join(f"s.{c}" for c in _HEAD_COLUMNS)
_LEASE = "lease_owner, lease_token, lease_expires_at"

# $F is the fence token (NULL: unfenced). Liveness is judged by the server's clock, so every
# process agrees on it whatever its own clock says.
_FENCE = (
    "({f}::bigint IS NULL OR (lease_token = {f} AND lease_owner IS NOT NULL "
    "AND lease_expires_at > now()))"
)
# Whether the stored lease is live by the server's clock, for the probes that explain a miss.
_LEASE_LIVE = "coalesce(lease_expires_at > now(), false) AS lease_live"
# A ttl in microseconds as an interval with no day part (a day-valued interval added to a
# timestamptz follows the session time zone's DST).
_US_INTERVAL = "{}::bigint * interval '1 microsecond'"
# What delete, purge, describe and sweep_stale report.
_REF = "session_id, version, agent_type, user_id, state, tenant"

# Tenant filters: a tenant-bound store replaces these markers with "AND tenant = '<name>'"
# (on the table, or on its alias s); an untenanted store removes them (PostgresStore._q).
_TENANT = "/*T*/"
_S_TENANT = "/*S.T*/"

# Sources from which each state may be reached, passed as an array so the transition rule is
# checked against the stored state inside the UPDATE itself.
_SOURCES: dict[SessionState, list[str]] = {
    target: [s.value for s in SessionState if s.can_become(target)] for target in SessionState
}

# created_at, updated_at and last_heartbeat come from the server's clock.
_SQL_CREATE = f"""
INSERT INTO sessions (session_id, agent_type, user_id, state, context, metadata, created_at,
                      updated_at, last_heartbeat, version, checkpoint_count, tenant)
VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, now(), now(), now(), 1, 0, $7)
ON CONFLICT (session_id) DO NOTHING
RETURNING {_HEAD}
"""

_SQL_CREATE_WITH_CHECKPOINTS = f"""
WITH s AS (
    INSERT INTO sessions (session_id, agent_type, user_id, state, context, metadata, created_at,
                          updated_at, last_heartbeat, version, checkpoint_count, tenant)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, now(), now(), now(), 1,
            cardinality($8::text[]), $7)
    ON CONFLICT (session_id) DO NOTHING
    RETURNING {_HEAD}
), c AS (
    INSERT INTO checkpoints (session_id, seq, name, data, ts, tenant)
    SELECT s.session_id, u.ord, u.name, u.data, u.ts, s.tenant
    FROM s, unnest($8::text[], $9::jsonb[], $10::timestamptz[])
            WITH ORDINALITY AS u(name, data, ts, ord)
)
SELECT {_HEAD} FROM s
"""

_SQL_GET = f"""
SELECT {_S_HEAD},
       ARRAY(SELECT ROW(c.seq, c.name, c.data, c.ts)
             FROM checkpoints c
             WHERE c.session_id = s.session_id AND c.seq > s.checkpoint_count - $2
             ORDER BY c.seq) AS cps
FROM sessions s
WHERE s.session_id = $1 AND s.state <> 'deleted' /*S.T*/
"""

_SQL_GET_VERSION = "SELECT version FROM sessions WHERE session_id = $1 AND state <> 'deleted' /*T*/"

# ``sealed``: the context is encrypted, so a manager without the key may not merge into it.
_SQL_PROBE = (
    f"SELECT state, version, {_LEASE}, {_LEASE_LIVE}, context ? '$sealed' AS sealed"
    " FROM sessions WHERE session_id = $1 /*T*/"
)

# Moving to 'deleted' clears the lease, as delete does.
_UPDATE_SET = """
    UPDATE sessions
       SET state = $3, context = $4::jsonb, metadata = $5::jsonb, last_heartbeat = now(),
           checkpoint_count = checkpoint_count + $6, version = version + 1, updated_at = now(),
           lease_owner = CASE WHEN $3 = 'deleted' THEN NULL ELSE lease_owner END,
           lease_expires_at = CASE WHEN $3 = 'deleted' THEN NULL ELSE lease_expires_at END
     WHERE session_id = $1 AND version = $2 AND state <> 'deleted'
       AND (state = $3 OR state = ANY($7::text[]))
       AND {fence} /*T*/
""".format(fence=_FENCE.format(f="$8"))

_SQL_UPDATE = f"{_UPDATE_SET} RETURNING {_HEAD}"

_SQL_UPDATE_WITH_CHECKPOINTS = f"""
WITH s AS ({_UPDATE_SET} RETURNING {_HEAD}
), c AS (
    INSERT INTO checkpoints (session_id, seq, name, data, ts, tenant)
    SELECT s.session_id, s.checkpoint_count - $6 + u.ord, u.name, u.data, u.ts, s.tenant
    FROM s, unnest($9::text[], $10::jsonb[], $11::timestamptz[])
            WITH ORDINALITY AS u(name, data, ts, ord)
)
SELECT {_HEAD} FROM s
"""

# The common path of an append: bump the head and insert the checkpoint in one statement. A
# reused idempotency key or a lost fence makes it change nothing; a concurrent first use of the
# same key makes it fail on the unique index. Either way the caller then classifies.
_APPEND = """
WITH s AS (
    UPDATE sessions
       SET checkpoint_count = checkpoint_count + 1, version = version + 1, updated_at = now()
     WHERE session_id = $1 AND state <> 'deleted'
       AND {fence}
       AND ($5::text IS NULL OR NOT EXISTS (
               SELECT 1 FROM checkpoints k WHERE k.session_id = $1 AND k.idempotency_key = $5))
       /*T*/
    RETURNING {head}
), c AS (
    INSERT INTO checkpoints (session_id, seq, name, data, ts, idempotency_key, tenant)
    SELECT s.session_id, s.checkpoint_count, $2, $3::jsonb, $4, $5, s.tenant FROM s
){records}
SELECT {head} FROM s
"""
_SQL_APPEND = _APPEND.format(fence=_FENCE.format(f="$6"), head=_HEAD, records="")

# An append with records (RecordWrite) in the same statement: the records are inserted only
# when the head was bumped, so a replay, a lost fence or a missing session writes none (the
# UPDATE's row lock also holds off a purge until the commit). $7 tenant, $8 scope, $9 keys,
# $10 values, $11 sealed, $12 user_id, $13 whether keys get the new seq as a prefix.
_APPEND_RECORDS = """, w AS (
    INSERT INTO records AS r (tenant, scope, key, value, sealed, session_id, user_id, updated_at)
    SELECT $7, $8,
           CASE WHEN $13::boolean THEN lpad(s.checkpoint_count::text, {digits}, '0') || u.key
                ELSE u.key END,
           u.value, $11, s.session_id, $12, now()
      FROM s, unnest($9::text[], $10::bytea[]) AS u(key, value)
    ON CONFLICT (tenant, scope, key) {{conflict}}
)"""


def _append_records_sql(conflict: str) -> str:
    part = _APPEND_RECORDS.format(digits=SEQ_KEY_DIGITS).format(conflict=conflict)
    return _APPEND.format(fence=_FENCE.format(f="$6"), head=_HEAD, records=part)


_SQL_APPEND_PROBE = f"""
SELECT {_S_HEAD}, s.lease_owner, s.lease_token, s.lease_expires_at,
       coalesce(s.lease_expires_at > now(), false) AS lease_live,
       k.seq AS k_seq, k.name AS k_name, k.data AS k_data, k.ts AS k_ts
FROM sessions s
LEFT JOIN checkpoints k ON k.session_id = s.session_id AND k.idempotency_key = $2
WHERE s.session_id = $1 /*S.T*/
"""

_SQL_HEARTBEAT = """
UPDATE sessions
   SET last_heartbeat = now(), version = version + 1, updated_at = now(),
       lease_expires_at = CASE
           WHEN $2::bigint IS NOT NULL AND lease_ttl_us IS NOT NULL
           THEN now() + lease_ttl_us * interval '1 microsecond'
           ELSE lease_expires_at END
 WHERE session_id = $1 AND state <> 'deleted' AND {fence} /*T*/
RETURNING {head}
""".format(fence=_FENCE.format(f="$2"), head=_HEAD)

_SQL_PATCH_CONTEXT = """
UPDATE sessions
   SET context = agent_core_merge_patch(context, $2::jsonb), version = version + 1,
       updated_at = now()
 WHERE session_id = $1 AND state <> 'deleted' AND NOT context ? '$sealed' AND {fence} /*T*/
RETURNING {head}
""".format(fence=_FENCE.format(f="$3"), head=_HEAD)

# patch_context with a limit on the merged context ($4 bytes of compact JSON, as
# codec.encode_patched counts them), decided in the same statement as the write. The merged
# value's jsonb text is never shorter than its compact JSON, save for the U+0000 escapes ($5,
# 4 bytes against 6): so when this bound fits, the exact size fits too. One row always comes
# back: matched = 0 (not found or fence lost: probe), head columns NULL (the bound did not
# fit: decide exactly with _SQL_PATCH_MERGED), or the new head.
_SQL_PATCH_CONTEXT_BOUNDED = """
WITH cur AS MATERIALIZED (
    SELECT agent_core_merge_patch(context, $2::jsonb) AS merged
      FROM sessions
     WHERE session_id = $1 AND state <> 'deleted' AND NOT context ? '$sealed' AND {fence}
       /*T*/
       FOR NO KEY UPDATE
), sized AS MATERIALIZED (
    SELECT merged, merged::text AS t FROM cur
), s AS (
    UPDATE sessions
       SET context = sized.merged, version = version + 1, updated_at = now()
      FROM sized
     WHERE session_id = $1 /*T*/
       AND octet_length(sized.t)
           + 2 * ((octet_length(sized.t) - octet_length(replace(sized.t, $5::text, ''))) / 4)
           <= $4::bigint
    RETURNING {head}
)
SELECT (SELECT count(*) FROM cur) AS matched, {s_head} FROM (SELECT 1) AS one LEFT JOIN s ON true
""".format(fence=_FENCE.format(f="$3"), head=_HEAD, s_head=_S_HEAD)

# The exact decision when the bound did not fit, in one transaction: the merged context
# (row locked), measured in Python, then written as it is or refused.
_SQL_PATCH_MERGED = """
SELECT agent_core_merge_patch(context, $2::jsonb) AS merged
  FROM sessions
 WHERE session_id = $1 AND state <> 'deleted' AND NOT context ? '$sealed' AND {fence} /*T*/
   FOR NO KEY UPDATE
""".format(fence=_FENCE.format(f="$3"))

_SQL_SET_CONTEXT = f"""
UPDATE sessions SET context = $2::jsonb, version = version + 1, updated_at = now()
 WHERE session_id = $1 /*T*/
RETURNING {_HEAD}
"""

# patch_context with a sealer: the context is read under the row lock, merged in Python and
# written back sealed (_SQL_SET_CONTEXT), in one transaction.
_SQL_LOCK_CONTEXT = """
SELECT context FROM sessions
 WHERE session_id = $1 AND state <> 'deleted' AND {fence} /*T*/
   FOR NO KEY UPDATE
""".format(fence=_FENCE.format(f="$2"))

# Key rotation: the next rows whose values are not all sealed with the first key, locked, then
# written back re-sealed. The version does not move: the value it names is the same.
_NOT_CURRENT = "NOT ({c} ? '$sealed' AND {c}->>'kid' = $1)"
_SQL_RESEAL_SESSIONS_PICK = f"""
SELECT session_id, context, metadata FROM sessions
 WHERE session_id > $2
   AND ({_NOT_CURRENT.format(c="context")} OR {_NOT_CURRENT.format(c="metadata")}) /*T*/
 ORDER BY session_id
 LIMIT $3
   FOR NO KEY UPDATE
"""
_SQL_RESEAL_SESSION = (
    "UPDATE sessions SET context = $2::jsonb, metadata = $3::jsonb WHERE session_id = $1 /*T*/"
)
_SQL_RESEAL_CHECKPOINTS_PICK = f"""
SELECT session_id, seq, data FROM checkpoints
 WHERE (session_id, seq) > ($2, $3) AND {_NOT_CURRENT.format(c="data")} /*T*/
 ORDER BY session_id, seq
 LIMIT $4
   FOR UPDATE
"""
_SQL_RESEAL_RECORDS_PICK = """
SELECT tenant, scope, key, value, sealed FROM records
 WHERE (tenant, scope, key) > ($1, $2, $3)
   AND NOT (sealed AND substring(value from 1 for $4) = $5) /*T*/
 ORDER BY tenant, scope, key
 LIMIT $6
   FOR UPDATE
"""
_SQL_RESEAL_RECORD = (
    "UPDATE records SET value = $4, sealed = true WHERE tenant = $1 AND scope = $2 AND key = $3"
)
_SQL_RESEAL_CHECKPOINT = (
    "UPDATE checkpoints SET data = $3::jsonb WHERE session_id = $1 AND seq = $2 /*T*/"
)

_SQL_SET_STATE = """
UPDATE sessions
   SET state = $2,
       context = CASE WHEN $6::jsonb IS NOT NULL THEN $6::jsonb
                      WHEN $3::text IS NULL THEN context
                      ELSE context || jsonb_build_object('failure_reason', $3::text) END,
       lease_owner = CASE WHEN $2 = 'deleted' THEN NULL ELSE lease_owner END,
       lease_expires_at = CASE WHEN $2 = 'deleted' THEN NULL ELSE lease_expires_at END,
       version = version + 1, updated_at = now()
 WHERE session_id = $1 AND state <> 'deleted' AND state = ANY($4::text[]) AND {fence} /*T*/
RETURNING {head}
""".format(fence=_FENCE.format(f="$5"), head=_HEAD)

_SQL_DELETE = f"""
UPDATE sessions
   SET state = 'deleted', lease_owner = NULL, lease_expires_at = NULL,
       version = version + 1, updated_at = now()
 WHERE session_id = $1 AND state <> 'deleted' /*T*/
RETURNING {_REF}
"""

# RETURNING reports each removed row as it was before the DELETE.
_SQL_PURGE_SESSION = f"DELETE FROM sessions WHERE session_id = $1 /*T*/ RETURNING {_REF}"
_SQL_PURGE_USER = f"DELETE FROM sessions WHERE user_id = $1 /*T*/ RETURNING {_REF}"
_SQL_PURGE_BOTH = (
    f"DELETE FROM sessions WHERE session_id = $1 AND user_id = $2 /*T*/ RETURNING {_REF}"
)
# Records of the removed sessions go through ON DELETE CASCADE; those of the user ($2: the
# tenant, NULL for every tenant) in the same statement.
_SQL_PURGE_USER_AND_RECORDS = f"""
WITH r AS (
    DELETE FROM records WHERE user_id = $1 AND ($2::text IS NULL OR tenant = $2)
)
{_SQL_PURGE_USER}
"""

_SQL_DESCRIBE = f"""
SELECT {_REF} FROM sessions
 WHERE session_id = ANY($1::text[]) AND state <> 'deleted' /*T*/
 ORDER BY session_id
"""

_SQL_LIST_CHECKPOINTS = """
SELECT ARRAY(SELECT ROW(c.seq, c.name, c.data, c.ts)
             FROM checkpoints c
             WHERE c.session_id = s.session_id AND c.seq > $2
             ORDER BY c.seq
             LIMIT $3) AS cps
FROM sessions s
WHERE s.session_id = $1 AND s.state <> 'deleted' /*S.T*/
"""

# SKIP LOCKED: a session another sweeper (or writer) holds is left for the next sweep, so two
# sweepers never fail the same session. The locking read re-checks the WHERE clause against the
# newest row version, so a heartbeat that commits first saves its session. The cutoff is the
# server's now minus the max age.
_SQL_SWEEP = """
WITH doomed AS (
    SELECT session_id FROM sessions
     WHERE state = 'active' AND last_heartbeat < now() - {max_age} /*T*/
     ORDER BY last_heartbeat
     LIMIT $2
       FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE sessions s
   SET state = 'failed',
       context = s.context || '{{"failure_reason": "heartbeat_timeout"}}'::jsonb,
       version = s.version + 1, updated_at = now()
  FROM doomed
 WHERE s.session_id = doomed.session_id
RETURNING s.session_id, s.version, s.agent_type, s.user_id, s.state, s.tenant
""".format(max_age=_US_INTERVAL.format("$1"))

_SQL_EXPIRE_LEASES = """
WITH doomed AS (
    SELECT session_id, lease_owner, lease_token, lease_expires_at FROM sessions
     WHERE lease_owner IS NOT NULL AND lease_expires_at <= now() /*T*/
     ORDER BY lease_expires_at
     LIMIT $1
       FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE sessions s
   SET lease_owner = NULL, lease_expires_at = NULL
  FROM doomed
 WHERE s.session_id = doomed.session_id
RETURNING doomed.session_id, doomed.lease_owner, doomed.lease_token, doomed.lease_expires_at
"""

_SQL_CLAIM = """
UPDATE sessions
   SET lease_token = lease_token + 1, lease_owner = $2, lease_expires_at = now() + {ttl},
       lease_ttl_us = $3
 WHERE session_id = $1 AND state <> 'deleted'
   AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= now()
        OR lease_owner = $2) /*T*/
RETURNING lease_token, lease_expires_at
""".format(ttl=_US_INTERVAL.format("$3"))

_SQL_RENEW = """
UPDATE sessions
   SET lease_expires_at = now() + {ttl}, lease_ttl_us = $3
 WHERE session_id = $1 AND state <> 'deleted' AND {fence} /*T*/
RETURNING lease_token, lease_expires_at
""".format(ttl=_US_INTERVAL.format("$3"), fence=_FENCE.format(f="$2"))

_SQL_RELEASE = """
UPDATE sessions
   SET lease_owner = NULL, lease_expires_at = NULL
 WHERE session_id = $1 AND state <> 'deleted' AND {fence} /*T*/
RETURNING lease_token
""".format(fence=_FENCE.format(f="$2"))

_SQL_CURRENT_LEASE = (
    f"SELECT state, {_LEASE}, {_LEASE_LIVE} FROM sessions WHERE session_id = $1 /*T*/"
)

_SQL_TIER_EPOCH = "SELECT epoch, cache_id FROM tier_epochs WHERE namespace = $1"
_SQL_CACHES_IN_USE = "SELECT EXISTS (SELECT 1 FROM tier_epochs WHERE cache_id <> '')"

# Insert-if-absent that always returns the row: DO UPDATE (a no-op) locks and returns a row a
# concurrent creator committed after this statement's snapshot, which DO NOTHING would hide.
_SQL_CREATE_TIER_EPOCH = """
INSERT INTO tier_epochs AS t (namespace) VALUES ($1)
ON CONFLICT (namespace) DO UPDATE SET epoch = t.epoch
RETURNING epoch, cache_id
"""

# The row lock taken by ON CONFLICT DO UPDATE serializes concurrent bumps; none is lost.
_SQL_BUMP_TIER_EPOCH = """
INSERT INTO tier_epochs AS t (namespace, epoch, cache_id) VALUES ($1, 1, coalesce($2::text, ''))
ON CONFLICT (namespace) DO UPDATE
    SET epoch = t.epoch + 1, cache_id = coalesce($2::text, t.cache_id)
"""

# Rows are locked in namespace order, so concurrent bumps of every row cannot deadlock.
_SQL_BUMP_ALL_TIER_EPOCHS = """
WITH locked AS (
    SELECT namespace FROM tier_epochs ORDER BY namespace FOR NO KEY UPDATE
)
UPDATE tier_epochs t
   SET epoch = t.epoch + 1, cache_id = coalesce($1::text, t.cache_id)
  FROM locked
 WHERE t.namespace = locked.namespace
"""

# The tables whose rows belong to a tenant: row-level security confines the tenant role to
# the rows of its tenant (schema 5 enables it; see 0005_tenants.sql).
_TENANT_TABLES = ("sessions", "checkpoints", "audit_log", "retention_policies", "records")
# ... and every table a tenant-bound store's statements touch.
_TENANT_ROLE_TABLES = (*_TENANT_TABLES, "tier_epochs")

# Idempotent, under the migration lock (one schema at a time) and race-safe across databases
# (roles are cluster-wide: a concurrent CREATE ROLE or GRANT fails on a unique index, and the
# loser finds the role in place). Statements run only for what is missing, so opening a
# tenant-bound store again writes nothing. {role} is a checked plain identifier.
_SQL_SETUP_TENANCY = """
DO $setup$
DECLARE
    t text;
    qualified text;
    policy text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        BEGIN
            CREATE ROLE "{role}" NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('role %s does not exist, and %s may not create it'
                                     ' (it lacks CREATEROLE)', '{role}', current_user),
                    HINT = format('as an administrator: CREATE ROLE "{role}" NOLOGIN;'
                                  ' GRANT "{role}" TO %I;', current_user);
        END;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, '{role}',
                           CASE WHEN current_setting('server_version_num')::int >= 160000
                                THEN 'SET' ELSE 'MEMBER' END) THEN
        BEGIN
            IF current_setting('server_version_num')::int >= 160000 THEN
                EXECUTE format('GRANT "{role}" TO %I WITH SET TRUE, INHERIT FALSE',
                               current_user);
            ELSE
                EXECUTE format('GRANT "{role}" TO %I', current_user);
            END IF;
        EXCEPTION
            WHEN unique_violation THEN NULL;
            WHEN insufficient_privilege OR invalid_grant_operation THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('%s may not SET ROLE to %s', current_user, '{role}'),
                    HINT = format('as an administrator: GRANT "{role}" TO %I;', current_user);
        END;
    END IF;
    IF NOT has_schema_privilege('{role}', current_schema(), 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO "{role}"', current_schema());
    END IF;
    FOREACH t IN ARRAY ARRAY[{tables}] LOOP
        qualified := format('%I.%I', current_schema(), t);
        CONTINUE WHEN to_regclass(qualified) IS NULL;
        IF NOT (has_table_privilege('{role}', qualified, 'SELECT')
                AND has_table_privilege('{role}', qualified, 'INSERT')
                AND has_table_privilege('{role}', qualified, 'UPDATE')
                AND has_table_privilege('{role}', qualified, 'DELETE')) THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO "{role}"', qualified);
        END IF;
    END LOOP;
    qualified := pg_get_serial_sequence(format('%I.audit_log', current_schema()), 'id');
    IF NOT has_sequence_privilege('{role}', qualified, 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO "{role}"', qualified);
    END IF;
    policy := 'agent_core_tenant_' || '{role}';
    FOREACH t IN ARRAY ARRAY[{rls_tables}] LOOP
        qualified := format('%I.%I', current_schema(), t);
        CONTINUE WHEN to_regclass(qualified) IS NULL;
        IF NOT EXISTS (SELECT 1 FROM pg_policy
                        WHERE polrelid = qualified::regclass AND polname = policy) THEN
            EXECUTE format(
                'CREATE POLICY %I ON %s AS RESTRICTIVE TO "{role}"'
                ' USING (tenant <> '''' AND tenant = current_setting(''agent_core.tenant'', true))'
                ' WITH CHECK (tenant <> '''' AND'
                '             tenant = current_setting(''agent_core.tenant'', true))',
                policy, qualified);
        END IF;
    END LOOP;
END
$setup$
"""

# Records. With a session ($6), the write takes a KEY SHARE lock on its live row, which holds
# off a purge until the commit (the purge's cascade then removes these records too); a
# session that is gone or deleted makes the insert write nothing and ``live`` false.
_PUT_RECORDS = """
WITH live AS (
    SELECT 1 FROM sessions WHERE session_id = $6 AND state <> 'deleted' /*T*/ FOR KEY SHARE
), w AS (
    INSERT INTO records AS r (tenant, scope, key, value, sealed, session_id, user_id, updated_at)
    SELECT $1, $2, u.key, u.value, $5, $6, $7, now()
      FROM unnest($3::text[], $4::bytea[]) AS u(key, value)
     WHERE $6::text IS NULL OR EXISTS (SELECT 1 FROM live)
    ON CONFLICT (tenant, scope, key) {conflict}
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM live) AS live, (SELECT count(*) FROM w) AS written
"""
_REPLACE_RECORD = (
    "DO UPDATE SET value = excluded.value, sealed = excluded.sealed,"
    " session_id = excluded.session_id, user_id = excluded.user_id, updated_at = now()"
)
_SQL_PUT_RECORDS = _PUT_RECORDS.format(conflict=_REPLACE_RECORD)
_SQL_PUT_RECORDS_KEEP = _PUT_RECORDS.format(conflict="DO NOTHING")
_SQL_APPEND_RECORDS = _append_records_sql(_REPLACE_RECORD)
_SQL_APPEND_RECORDS_KEEP = _append_records_sql("DO NOTHING")
_SQL_GET_RECORDS = (
    "SELECT key, value, sealed FROM records"
    " WHERE tenant = $1 AND scope = $2 AND key = ANY($3::text[])"
)


def _key_range(
    prefix: str, after: str | None, before: str | None, *, first: int
) -> tuple[str, tuple[str, ...]]:
    """The ``AND key ...`` conditions of a prefix and two cursors, as key ranges the primary
    key serves, numbering their parameters from ``$first``; and the parameters."""
    bounds: list[tuple[str, str]] = []
    if prefix:
        bounds.append((">=", prefix))
        end = prefix_end(prefix)
        if end is not None:
            bounds.append(("<", end))
    if after is not None:
        bounds.append((">", after))
    if before is not None:
        bounds.append(("<", before))
    where = "".join(f" AND key {op} ${first + i}" for i, (op, _) in enumerate(bounds))
    return where, tuple(value for _, value in bounds)


_SQL_SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS agent_core_schema (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise MissingDependency(
            "PostgresStore needs the asyncpg driver: pip install 'agent-core[postgres]'"
        ) from exc
    return asyncpg


# PostgreSQL text and jsonb cannot hold U+0000, which Python and JSON strings may. Strings pass
# through an injective escape that removes it: U+FDD0 (a noncharacter, reserved for internal
# use) becomes U+FDD0 "1" and U+0000 becomes U+FDD0 "0". Strings with neither character, that is
# practically all of them, are stored unchanged, and a substring test is all they cost.
_ESC = "\ufdd0"
_ESC_NUL = _ESC + "0"
_ESC_ESC = _ESC + "1"


def _esc(text: str) -> str:
    if "\x00" not in text and _ESC not in text:
        return text
    return text.replace(_ESC, _ESC_ESC).replace("\x00", _ESC_NUL)


def _unesc(text: str) -> str:
    if _ESC not in text:
        return text
    return text.replace(_ESC_NUL, "\x00").replace(_ESC_ESC, _ESC)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {fn(k): _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


# jsonb keeps numbers as numeric, which has no float type: a float written with a positive
# exponent (orjson's form from 1e16 up) would come back as an integer. Floats from 2**53 up
# (all integral) are therefore written as plain decimals with a fraction ("1e16" as
# "10000000000000000.0"), which numeric keeps, so they read back as the same floats. Floats
# with a negative exponent keep their fraction in numeric as they are. A digit, "e" and a
# digit anywhere in the text (in a string too) sends the value the slow way.
_POSITIVE_EXPONENT = re.compile(rb"[0-9][eE]\+?[0-9]")
_PLAIN_FROM = 2.0**53


def _plain_floats(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        if abs(value) >= _PLAIN_FROM:
            return orjson.Fragment(f"{int(value)}.0")
        return value
    if kind is dict:
        return {k: _plain_floats(v) for k, v in value.items()}
    if kind is list:
        return [_plain_floats(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    raw = orjson.dumps(value)
    if _POSITIVE_EXPONENT.search(raw) is not None:
        value = _plain_floats(value)
        raw = orjson.dumps(value)
    text = raw.decode()
    # orjson writes U+0000 as the escape \u0000 and U+FDD0 as itself.
    if "\\u0000" in text or _ESC in text:
        text = orjson.dumps(_map_strings(value, _esc)).decode()
    return text


def _loads(value: Any) -> Any:
    if not isinstance(value, str):
        # An injected pool with its own jsonb codec hands values over decoded.
        return value
    decoded = orjson.loads(value)
    return _map_strings(decoded, _unesc) if _ESC in value else decoded


def _opt_esc(text: str | None) -> str | None:
    return None if text is None else _esc(text)


def _opt_unesc(text: str | None) -> str | None:
    return None if text is None else _unesc(text)


def _micros(ttl: timedelta) -> int:
    return ttl // _MICROSECOND


def _clamp(value: int) -> int:
    return max(-_BIGINT_MAX, min(value, _BIGINT_MAX))


def _row_head(row: Any) -> AgentSession:
    return AgentSession(
        agent_type=_unesc(row["agent_type"]),
        user_id=_unesc(row["user_id"]),
        session_id=row["session_id"],
        state=SessionState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_heartbeat=row["last_heartbeat"],
        context=_loads(row["context"]),
        checkpoints=[],
        metadata=_loads(row["metadata"]),
        version=row["version"],
        checkpoint_count=row["checkpoint_count"],
        tenant=row["tenant"],
    )


def _row_checkpoints(items: Any) -> list[SessionCheckpoint]:
    return [
        SessionCheckpoint(name=_unesc(name), timestamp=ts, data=_loads(data), seq=seq)
        for seq, name, data, ts in items
    ]


def _seal(sealer: Sealer | None, value: Any, session_id: str, field: str) -> str:
    """The column text of a JSON value: sealed (bound to its session and field) with a
    sealer, plain without one."""
    if sealer is None:
        return _dumps(value)
    return _dumps(sealer.seal(value, f"{session_id}/{field}"))


def _sealed_context(session_id: str) -> DecryptionError:
    return DecryptionError(
        f"the context of session {session_id} is encrypted but no encryption_keys are configured"
    )


def _fence_is_live(row: Any, fence: Lease | None) -> bool:
    """Whether ``fence`` is live in a probe row (``lease_live`` is judged by the server)."""
    if fence is None:
        return True
    return bool(
        row["lease_token"] == fence.token and row["lease_owner"] is not None and row["lease_live"]
    )


def _ref(row: Any) -> SessionRef:
    """A ``SessionRef`` from a row of ``_REF`` columns."""
    session_id, version, agent_type, user_id, state, tenant = row
    return SessionRef(
        session_id, version, _unesc(agent_type), _unesc(user_id), SessionState(state), tenant
    )


async def _live_probe(conn: Any, probe_sql: str, session_id: str, fence: Lease | None) -> Any:
    """After a guarded write matched no row: the session's probe row (``probe_sql``: the
    store's ``_SQL_PROBE``), once it is known that the session is live and ``fence`` (if any)
    still holds; else the error that explains it."""
    probe = await conn.fetchrow(probe_sql, session_id)
    if probe is None or probe["state"] == SessionState.DELETED.value:
        raise SessionNotFound(session_id)
    if fence is not None and not _fence_is_live(probe, fence):
        raise _lease_lost(fence)
    return probe


def _lease_lost(fence: Lease) -> LeaseLost:
    return LeaseLost(f"lease token {fence.token} on session {fence.session_id} is no longer live")


def _checkpoint_arrays(
    checkpoints: Sequence[SessionCheckpoint], sealer: Sealer | None, session_id: str
) -> tuple[list[str], list[str], list[datetime]]:
    return (
        [_esc(cp.name) for cp in checkpoints],
        [_seal(sealer, cp.data, session_id, "checkpoint") for cp in checkpoints],
        [cp.timestamp for cp in checkpoints],
    )


def _terminate(conn: Any) -> None:
    """Drop a pooled connection's socket so the pool reconnects instead of reusing it."""
    # A connection the server closed has already gone back to the pool as closed; its proxy
    # refuses further calls, and nothing is left to drop.
    with contextlib.suppress(Exception):
        conn.terminate()


async def _no_reset(connection: Any) -> None:
    """Skip asyncpg's per-release reset query (a round trip on every operation): this store
    leaves no session state behind, and asyncpg still rolls back a transaction left open."""


class _Attempt:
    """What one attempt of an operation has done, to tell a lost request from a lost reply."""

    __slots__ = ("write_sent",)

    def __init__(self) -> None:
        self.write_sent = False


class PostgresStore(SessionStore):
    """Sessions in PostgreSQL through an asyncpg pool.

    ``PostgresStore(dsn, ...)`` creates (and ``close()`` closes) its own pool;
    ``PostgresStore.with_pool(pool)`` uses an existing pool and leaves it open on ``close()``.
    Every operation, pool acquisition included, is bounded by ``command_timeout`` seconds.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        create_schema: bool = True,
        schema: str | None = None,
        tenant_role: str = "agent_core_tenant",
    ) -> None:
        self._asyncpg = _import_asyncpg()
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(f"schema name {schema!r} is not a plain SQL identifier")
        if not _SCHEMA_NAME.match(tenant_role):
            raise ConfigurationError(f"tenant_role {tenant_role!r} is not a plain SQL identifier")
        if command_timeout <= 0 or connect_timeout <= 0:
            raise ConfigurationError("command_timeout and connect_timeout must be positive")
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ConfigurationError(f"bad pool sizes: min_size={min_size}, max_size={max_size}")
        # SQLAlchemy-style URLs (postgresql+asyncpg://) name the driver; asyncpg wants it gone.
        self._dsn = re.sub(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://", r"\1://", dsn)
        self.url = hide_password(dsn)
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = float(command_timeout)
        self._connect_timeout = float(connect_timeout)
        self._create_schema = create_schema
        self._schema = schema
        self._injected: Any = None
        self._open_lock = asyncio.Lock()
        self._pool: Any = None
        self._list_sql: dict[tuple[SessionState | None, bool, bool, bool], str] = {}
        self._tenant_role = tenant_role
        # Statements with their tenant markers filled in (see _q), by their template.
        self._sql: dict[tuple[str | None, str], str] = {}
        # Set once the tenant role is in place: from then on new connections take it.
        self._tenant_ready = False

    @classmethod
    def with_pool(
        cls, pool: Any, *, create_schema: bool = True, command_timeout: float = 5.0
    ) -> PostgresStore:
        """A store on an existing asyncpg pool, which ``close()`` leaves open. It cannot be
        bound to a tenant (its connections are not this store's to set up)."""
        connect_args = getattr(pool, "_connect_args", None) or [None]
        dsn = connect_args[0] if isinstance(connect_args[0], str) else "postgresql://"
        store = cls(dsn, create_schema=create_schema, command_timeout=command_timeout)
        store._injected = pool
        return store

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # --- lifecycle -------------------------------------------------------------------------

    def _q(self, sql: str) -> str:
        """``sql`` with its tenant markers filled in: ``AND tenant = '<name>'`` for a
        tenant-bound store (the name is checked, so it can be a literal, which also lets the
        planner use the tenant's indexes), nothing for an untenanted one."""
        tenant = self.tenant
        done = self._sql.get((tenant, sql))
        if done is None:
            if tenant:  # "" (the rows of no tenant) needs no check
                check_tenant(tenant)
            mine = "" if tenant is None else f"AND tenant = '{tenant}'"
            theirs = "" if tenant is None else f"AND s.tenant = '{tenant}'"
            done = sql.replace(_S_TENANT, theirs).replace(_TENANT, mine)
            self._sql[tenant, sql] = done
        return done

    async def open(self) -> None:
        # Two tasks opening at once must not each create a pool (one would leak).
        async with self._open_lock:
            if self._pool is not None:
                return
            if self.tenant is not None:
                check_tenant(self.tenant)
                if self._injected is not None:
                    raise ConfigurationError(
                        "a tenant-bound PostgresStore needs a pool of its own (from a URL),"
                        " not an injected one: it sets up every connection for its tenant"
                    )
            self._sql.clear()
            self._tenant_ready = False
            if self._injected is not None:
                self._pool = self._injected
            else:
                self._pool = await self._create_pool()
            try:
                if self._create_schema:
                    await self.migrate()
                if self.tenant is not None:
                    await self._setup_tenancy()
            except BaseException:
                await self.close()
                raise

    async def _setup_tenancy(self) -> None:
        """Make sure the tenant role exists, may be taken on, may use the tables and is bound
        by the tenant policy; then have every connection of the pool take it on."""
        sql = _SQL_SETUP_TENANCY.format(
            role=self._tenant_role,
            tables=", ".join(f"'{t}'" for t in _TENANT_ROLE_TABLES),
            rls_tables=", ".join(f"'{t}'" for t in _TENANT_TABLES),
        )
        denied = self._asyncpg.InsufficientPrivilegeError

        async def body(conn: Any, attempt: _Attempt) -> None:
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL statement_timeout = 0")
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1)",
                        _MIGRATION_LOCK,
                        timeout=_MIGRATION_TIMEOUT,
                    )
                    await conn.execute(sql, timeout=_MIGRATION_TIMEOUT)
            except denied as exc:
                hint = getattr(exc, "hint", None)
                raise ConfigurationError(
                    f"PostgreSQL ({self.url}): a store bound to tenant {self.tenant!r} sets up"
                    f" row-level security for the role {self._tenant_role} (the role, its"
                    f" grants and a policy per table, which needs the tables' owner): {exc}"
                    + (f" ({hint})" if hint else "")
                ) from exc

        await self._run(body, "tenant setup", timeout=max(self._command_timeout, 30.0))
        self._tenant_ready = True
        # Connections opened before the role was ready are replaced on their next use.
        await self._pool.expire_connections()

    async def _init_connection(self, conn: Any) -> None:
        """A new pooled connection of a tenant-bound store takes on the tenant role: row-level
        security then confines it to the rows of ``agent_core.tenant`` (set at connect)."""
        if self._tenant_ready:
            await conn.execute(f'SET ROLE "{self._tenant_role}"')

    async def _create_pool(self) -> Any:
        settings = {
            "application_name": "agent-core",
            # The server gives up when the client does, so a statement abandoned on timeout does
            # not go on holding row locks.
            "statement_timeout": str(max(1, round(self._command_timeout * 1000))),
        }
        if self._schema is not None:
            settings["search_path"] = f'"{self._schema}"'
        if self.tenant is not None:
            # A startup setting: RESET ALL keeps it, and it is in place before any statement.
            settings["agent_core.tenant"] = self.tenant
        options: dict[str, Any] = {
            "min_size": self._min_size,
            "max_size": self._max_size,
            "command_timeout": self._command_timeout,
            "timeout": self._connect_timeout,
            "server_settings": settings,
        }
        if "reset" in inspect.signature(self._asyncpg.create_pool).parameters:
            options["reset"] = _no_reset
        if self.tenant is not None:
            options["init"] = self._init_connection
        attempt = _Attempt()
        try:
            async with asyncio.timeout(self._connect_timeout + self._command_timeout):
                return await self._asyncpg.create_pool(self._dsn, **options)
        except Exception as exc:
            raise self._translate(exc, attempt, "connect") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None or pool is self._injected:
            return
        try:
            async with asyncio.timeout(self._command_timeout):
                await pool.close()
        except Exception:
            # A dead server cannot take a graceful goodbye; drop the sockets instead.
            pool.terminate()

    async def migrate(self) -> int:
        migrations = load_migrations("postgres")
        schema = self._schema

        async def body(conn: Any, attempt: _Attempt) -> int:
            while True:
                attempt.write_sent = False
                async with conn.transaction():
                    if self._tenant_ready:
                        # Migrations are the owner's work, not the tenant role's.
                        await conn.execute("SET LOCAL ROLE NONE")
                    # A migration may outlast the per-statement timeout of ordinary operations.
                    await conn.execute("SET LOCAL statement_timeout = 0")
                    # Serializes concurrent migrators; the version is read under the lock, so
                    # each migration is applied exactly once.
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1)",
                        _MIGRATION_LOCK,
                        timeout=_MIGRATION_TIMEOUT,
                    )
                    if schema is not None:
                        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                    await conn.execute(_SQL_SCHEMA_TABLE)
                    current = int(
                        await conn.fetchval(
                            "SELECT coalesce(max(version), 0) FROM agent_core_schema"
                        )
                    )
                    pending = [m for m in migrations if m.version > current]
                    if not pending:
                        return current
                    migration = pending[0]
                    await conn.execute(migration.sql, timeout=_MIGRATION_TIMEOUT)
                    await conn.execute(
                        "INSERT INTO agent_core_schema (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                    # Leaving the block sends COMMIT: from here on a lost reply leaves the
                    # outcome unknown.
                    attempt.write_sent = True

        return await self._run(
            body, "migrate", timeout=max(self._command_timeout, _MIGRATION_TIMEOUT)
        )

    # --- plumbing --------------------------------------------------------------------------

    async def _run(
        self,
        body: Callable[[Any, _Attempt], Awaitable[_T]],
        what: str,
        *,
        timeout: float | None = None,
    ) -> _T:
        pool = self._pool
        if pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self._command_timeout)
        tries = 0
        while True:
            tries += 1
            attempt = _Attempt()
            conn: Any = None
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await pool.acquire()
                    result = await body(conn, attempt)
            except AgentCoreError:
                if conn is not None:
                    await self._release(pool, conn)
                raise
            except Exception as exc:
                if conn is not None:
                    if self._breaks_connection(exc):
                        _terminate(conn)
                        if not isinstance(exc, TimeoutError):
                            # A lost connection usually means a restarted or failed-over server:
                            # its idle siblings are dead too, so have the pool replace them all
                            # on their next use instead of failing one operation per socket.
                            await pool.expire_connections()
                    await self._release(pool, conn)
                if tries < _MAX_ATTEMPTS and self._retryable(exc, attempt):
                    continue
                raise self._translate(exc, attempt, what) from exc
            except BaseException:
                # Cancelled from outside: the connection may be mid-protocol.
                if conn is not None:
                    _terminate(conn)
                    await self._release(pool, conn)
                raise
            await self._release(pool, conn)
            return result

    async def _release(self, pool: Any, conn: Any) -> None:
        try:
            await pool.release(conn, timeout=self._command_timeout)
        except Exception:
            # asyncpg terminates a connection it fails to reset; nothing is left to undo.
            _terminate(conn)

    def _breaks_connection(self, exc: BaseException) -> bool:
        """Whether the connection can no longer be trusted to be idle and in sync."""
        pg = self._asyncpg
        if isinstance(exc, pg.PostgresConnectionError):
            return True
        if getattr(exc, "sqlstate", None) in _SERVER_GONE_SQLSTATES:
            return True
        # A server error response leaves the connection in a known state; anything else
        # (a timeout, a dropped socket, a driver fault) may leave it mid-protocol.
        return not isinstance(exc, pg.PostgresError)

    def _retryable(self, exc: BaseException, attempt: _Attempt) -> bool:
        pg = self._asyncpg
        if getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES:
            return True
        if attempt.write_sent or isinstance(exc, TimeoutError):
            return False
        if isinstance(exc, OSError | pg.ClientConfigurationError):
            # Refused or misconfigured at connect time: another try would fail the same way.
            return False
        # A pooled connection the server closed while it sat idle fails on first use; nothing
        # was written, so a fresh connection may succeed.
        return self._breaks_connection(exc)

    def _translate(self, exc: BaseException, attempt: _Attempt, what: str) -> AgentCoreError:
        pg = self._asyncpg
        where = f"PostgreSQL {what} ({self.url})"
        if isinstance(exc, TimeoutError):
            limit = self._connect_timeout if what == "connect" else self._command_timeout
            return StoreUnavailable(
                f"{where}: no answer within {limit:g}s", maybe_committed=attempt.write_sent
            )
        if isinstance(exc, pg.ClientConfigurationError):
            return ConfigurationError(f"{where}: {exc}")
        if isinstance(exc, OSError | pg.PostgresConnectionError | pg.InterfaceError):
            return StoreUnavailable(
                f"{where}: connection failed: {exc}", maybe_committed=attempt.write_sent
            )
        if isinstance(exc, pg.PostgresError):
            sqlstate = getattr(exc, "sqlstate", "") or ""
            if sqlstate in ("57P01", "57P02"):
                # The server was shutting down: it may have committed before telling us.
                return StoreUnavailable(
                    f"{where}: server shut down: {exc}", maybe_committed=attempt.write_sent
                )
            if sqlstate.startswith("22"):
                return ValidationError(f"{where}: PostgreSQL cannot store this value: {exc}")
            if sqlstate == "23505":
                return ConflictError(f"{where}: {exc}")
            if sqlstate.startswith("42") or sqlstate.startswith("3F"):
                return ConfigurationError(
                    f"{where}: {exc} (is the schema migrated? see PostgresStore.migrate())"
                )
            # Every other error response means the statement, and so the write, was rejected.
            return StoreUnavailable(f"{where}: {exc}")
        return StoreUnavailable(
            f"{where}: unexpected driver error: {exc!r}", maybe_committed=attempt.write_sent
        )

    # --- encryption at rest -----------------------------------------------------------------

    def _head(self, row: Any) -> AgentSession:
        head = _row_head(row)
        sid = head.session_id
        head.context = open_value(self.sealer, head.context, f"{sid}/context")
        head.metadata = open_value(self.sealer, head.metadata, f"{sid}/metadata")
        return head

    def _checkpoints(self, session_id: str, items: Any) -> list[SessionCheckpoint]:
        checkpoints = _row_checkpoints(items)
        for cp in checkpoints:
            cp.data = open_value(self.sealer, cp.data, f"{session_id}/checkpoint")
        return checkpoints

    # --- sessions --------------------------------------------------------------------------

    async def create(self, session: AgentSession) -> AgentSession:
        args: list[Any] = [
            session.session_id,
            _esc(session.agent_type),
            _esc(session.user_id),
            session.state.value,
            _seal(self.sealer, session.context, session.session_id, "context"),
            _seal(self.sealer, session.metadata, session.session_id, "metadata"),
            session.tenant if self.tenant is None else self.tenant,
        ]
        if session.checkpoints:
            sql = _SQL_CREATE_WITH_CHECKPOINTS
            args.extend(_checkpoint_arrays(session.checkpoints, self.sealer, session.session_id))
        else:
            sql = _SQL_CREATE

        async def body(conn: Any, attempt: _Attempt) -> AgentSession:
            attempt.write_sent = True
            row = await conn.fetchrow(self._q(sql), *args)
            if row is None:
                raise ConflictError(f"session {session.session_id} already exists")
            return self._head(row)

        return await self._run(body, "create")

    async def get(self, session_id: str, *, window: int) -> AgentSession | None:
        async def body(conn: Any, attempt: _Attempt) -> AgentSession | None:
            # Bounded so that checkpoint_count - window cannot overflow a bigint.
            row = await conn.fetchrow(
                self._q(_SQL_GET), session_id, min(max(window, 0), _BIGINT_MAX // 2)
            )
            if row is None:
                return None
            session = self._head(row)
            session.checkpoints = self._checkpoints(session_id, row["cps"]) if window > 0 else []
            return session

        return await self._run(body, "get")

    async def get_version(self, session_id: str) -> int | None:
        async def body(conn: Any, attempt: _Attempt) -> int | None:
            version = await conn.fetchval(self._q(_SQL_GET_VERSION), session_id)
            return None if version is None else int(version)

        return await self._run(body, "get_version")

    async def update(
        self,
        session: AgentSession,
        new_checkpoints: Sequence[SessionCheckpoint],
        *,
        fence: Lease | None = None,
    ) -> AgentSession:
        args: list[Any] = [
            session.session_id,
            session.version,
            session.state.value,
            _seal(self.sealer, session.context, session.session_id, "context"),
            _seal(self.sealer, session.metadata, session.session_id, "metadata"),
            len(new_checkpoints),
            _SOURCES[session.state],
            None if fence is None else fence.token,
        ]
        if new_checkpoints:
            sql = _SQL_UPDATE_WITH_CHECKPOINTS
            args.extend(_checkpoint_arrays(new_checkpoints, self.sealer, session.session_id))
        else:
            sql = _SQL_UPDATE

        async def body(conn: Any, attempt: _Attempt) -> AgentSession:
            attempt.write_sent = True
            row = await conn.fetchrow(self._q(sql), *args)
            attempt.write_sent = False
            if row is not None:
                return self._head(row)
            probe = await _live_probe(conn, self._q(_SQL_PROBE), session.session_id, fence)
            if probe["version"] != session.version:
                raise ConflictError(
                    f"session {session.session_id} is at version {probe['version']}, "
                    f"the update was based on version {session.version}"
                )
            stored = SessionState(probe["state"])
            if stored is not session.state:
                stored.check_transition(session.state)
            # Nothing explains the miss but a change that has come and gone meanwhile.
            raise ConflictError(f"session {session.session_id} changed during the update")

        return await self._run(body, "update")

    async def append_checkpoint(
        self,
        session_id: str,
        checkpoint: SessionCheckpoint,
        *,
        idempotency_key: str | None = None,
        fence: Lease | None = None,
        records: RecordWrite | None = None,
    ) -> AppendResult:
        data = _seal(self.sealer, checkpoint.data, session_id, "checkpoint")
        name = _esc(checkpoint.name)
        key = _opt_esc(idempotency_key)
        token = None if fence is None else fence.token
        unique_violation = self._asyncpg.UniqueViolationError
        args: tuple[Any, ...] = (session_id, name, data, checkpoint.timestamp, key, token)
        sql = _SQL_APPEND
        # A sealed value is bound to its key: with seq-prefixed keys, it can only be sealed
        # once the seq is known, so the records follow the append in the same transaction.
        after = records if records is not None and records.key_prefix_seq and self.sealer else None
        if records is not None and after is None:
            tenant = self._record_tenant()
            # Sorted, so concurrent writers of overlapping keys lock them in one order.
            ordered = sorted(records.items)
            args += (
                tenant,
                records.scope,
                [k for k, _ in ordered],
                [seal_record(self.sealer, v, tenant, records.scope, k) for k, v in ordered],
                self.sealer is not None,
                _opt_esc(records.user_id),
                records.key_prefix_seq,
            )
            sql = _SQL_APPEND_RECORDS_KEEP if records.keep_existing else _SQL_APPEND_RECORDS

        async def append(conn: Any) -> Any:
            if after is None:
                return await conn.fetchrow(self._q(sql), *args)
            async with conn.transaction():
                row = await conn.fetchrow(self._q(sql), *args)
                if row is not None:
                    tenant = self._record_tenant()
                    ordered = sorted(after.stored_items(row["checkpoint_count"]))
                    await conn.fetchrow(
                        self._q(_SQL_PUT_RECORDS_KEEP if after.keep_existing else _SQL_PUT_RECORDS),
                        tenant,
                        after.scope,
                        [k for k, _ in ordered],
                        [seal_record(self.sealer, v, tenant, after.scope, k) for k, v in ordered],
                        True,
                        session_id,
                        _opt_esc(after.user_id),
                    )
                return row

        async def body(conn: Any, attempt: _Attempt) -> AppendResult:
            for _ in range(_MAX_ATTEMPTS):
                attempt.write_sent = True
                try:
                    row = await append(conn)
                except unique_violation:
                    # A concurrent append with the same key won the race; it is now a replay.
                    row = None
                attempt.write_sent = False
                if row is not None:
                    head = self._head(row)
                    stored = SessionCheckpoint(
                        name=checkpoint.name,
                        timestamp=checkpoint.timestamp,
                        data=_loads(data)
                        if self.sealer is None
                        else orjson.loads(orjson.dumps(checkpoint.data)),
                        seq=head.checkpoint_count,
                    )
                    return AppendResult(stored, head, created=True)
                probe = await conn.fetchrow(self._q(_SQL_APPEND_PROBE), session_id, key)
                if probe is None or probe["state"] == SessionState.DELETED.value:
                    raise SessionNotFound(session_id)
                if fence is not None and not _fence_is_live(probe, fence):
                    raise _lease_lost(fence)
                if probe["k_seq"] is not None:
                    replay = SessionCheckpoint(
                        name=_unesc(probe["k_name"]),
                        timestamp=probe["k_ts"],
                        data=open_value(
                            self.sealer,
                            _loads(probe["k_data"]),
                            f"{session_id}/checkpoint",
                        ),
                        seq=probe["k_seq"],
                    )
                    return AppendResult(replay, self._head(probe), created=False)
                # The session was replaced between the two statements: append again.
            raise ConflictError(f"session {session_id} kept changing during the append")

        return await self._run(body, "append_checkpoint")

    async def heartbeat(self, session_id: str, *, fence: Lease | None = None) -> AgentSession:
        return await self._write_head(
            "heartbeat",
            _SQL_HEARTBEAT,
            (session_id, None if fence is None else fence.token),
            session_id,
            fence,
        )

    async def patch_context(
        self,
        session_id: str,
        changes: dict[str, Any],
        *,
        fence: Lease | None = None,
        max_bytes: int | None = None,
    ) -> AgentSession:
        token = None if fence is None else fence.token
        if self.sealer is not None:
            return await self._patch_sealed(session_id, changes, token, fence, max_bytes)
        patch = _dumps(changes)
        if max_bytes is None:
            return await self._write_head(
                "patch_context", _SQL_PATCH_CONTEXT, (session_id, patch, token), session_id, fence
            )
        limit = _clamp(max_bytes)

        async def exactly(conn: Any, attempt: _Attempt) -> AgentSession | None:
            # The bound did not fit: merge under the row lock, measure as codec does, and write
            # or refuse (PayloadTooLarge rolls the transaction back: nothing written).
            async with conn.transaction():
                merged = await conn.fetchval(self._q(_SQL_PATCH_MERGED), session_id, patch, token)
                if merged is None:
                    return None
                encode_patched(_loads(merged), max_bytes)
                attempt.write_sent = True
                row = await conn.fetchrow(self._q(_SQL_SET_CONTEXT), session_id, merged)
            return self._head(row)

        async def body(conn: Any, attempt: _Attempt) -> AgentSession:
            for _ in range(_MAX_ATTEMPTS):
                attempt.write_sent = True
                row = await conn.fetchrow(
                    self._q(_SQL_PATCH_CONTEXT_BOUNDED), session_id, patch, token, limit, _ESC_NUL
                )
                attempt.write_sent = False
                if row["version"] is not None:
                    return self._head(row)
                if row["matched"]:
                    head = await exactly(conn, attempt)
                    if head is not None:
                        return head
                probe = await _live_probe(conn, self._q(_SQL_PROBE), session_id, fence)
                if probe["sealed"]:
                    raise _sealed_context(session_id)
                # The row changed hands between the statements: try again.
            raise ConflictError(f"session {session_id} kept changing during patch_context")

        return await self._run(body, "patch_context")

    async def _patch_sealed(
        self,
        session_id: str,
        changes: dict[str, Any],
        token: int | None,
        fence: Lease | None,
        max_bytes: int | None,
    ) -> AgentSession:
        sealer = self.sealer
        assert sealer is not None

        async def body(conn: Any, attempt: _Attempt) -> AgentSession:
            async with conn.transaction():
                stored = await conn.fetchval(self._q(_SQL_LOCK_CONTEXT), session_id, token)
                if stored is not None:
                    current = open_value(sealer, _loads(stored), f"{session_id}/context")
                    merged = merge_patch(current, orjson.loads(orjson.dumps(changes)))
                    if max_bytes is not None:
                        encode_patched(merged, max_bytes)
                    attempt.write_sent = True
                    row = await conn.fetchrow(
                        self._q(_SQL_SET_CONTEXT),
                        session_id,
                        _seal(sealer, merged, session_id, "context"),
                    )
                    return self._head(row)
            await _live_probe(conn, self._q(_SQL_PROBE), session_id, fence)
            raise ConflictError(f"session {session_id} changed during patch_context")

        return await self._run(body, "patch_context")

    async def reseal_sessions(self, after: str, limit: int) -> tuple[int, str | None]:
        sealer = self.sealer
        if sealer is None:
            raise ConfigurationError("rotate_keys needs encryption_keys")

        async def body(conn: Any, attempt: _Attempt) -> tuple[int, str | None]:
            async with conn.transaction():
                rows = await conn.fetch(
                    self._q(_SQL_RESEAL_SESSIONS_PICK), sealer.kid, after, limit
                )
                for row in rows:
                    sid = row["session_id"]
                    context = open_value(sealer, _loads(row["context"]), f"{sid}/context")
                    metadata = open_value(sealer, _loads(row["metadata"]), f"{sid}/metadata")
                    attempt.write_sent = True
                    await conn.execute(
                        self._q(_SQL_RESEAL_SESSION),
                        sid,
                        _seal(sealer, context, sid, "context"),
                        _seal(sealer, metadata, sid, "metadata"),
                    )
            nxt = rows[-1]["session_id"] if len(rows) == limit else None
            return len(rows), nxt

        return await self._run(body, "rotate_keys")

    async def reseal_checkpoints(
        self, after: tuple[str, int], limit: int
    ) -> tuple[int, tuple[str, int] | None]:
        sealer = self.sealer
        if sealer is None:
            raise ConfigurationError("rotate_keys needs encryption_keys")

        async def body(conn: Any, attempt: _Attempt) -> tuple[int, tuple[str, int] | None]:
            async with conn.transaction():
                rows = await conn.fetch(
                    self._q(_SQL_RESEAL_CHECKPOINTS_PICK), sealer.kid, after[0], after[1], limit
                )
                for row in rows:
                    sid = row["session_id"]
                    data = open_value(sealer, _loads(row["data"]), f"{sid}/checkpoint")
                    attempt.write_sent = True
                    await conn.execute(
                        self._q(_SQL_RESEAL_CHECKPOINT),
                        sid,
                        row["seq"],
                        _seal(sealer, data, sid, "checkpoint"),
                    )
            if len(rows) < limit:
                return len(rows), None
            return len(rows), (rows[-1]["session_id"], rows[-1]["seq"])

        return await self._run(body, "rotate_keys")

    async def reseal_records(
        self, after: tuple[str, str, str], limit: int
    ) -> tuple[int, tuple[str, str, str] | None]:
        sealer = self.sealer
        if sealer is None:
            raise ConfigurationError("rotate_keys needs encryption_keys")
        # Sealer.seal_bytes output starts with "$<kid>.": the rows that do not are picked.
        mark = b"$" + sealer.kid.encode() + b"."

        async def body(conn: Any, attempt: _Attempt) -> tuple[int, tuple[str, str, str] | None]:
            async with conn.transaction():
                rows = await conn.fetch(
                    self._q(_SQL_RESEAL_RECORDS_PICK), *after, len(mark), mark, _clamp(limit)
                )
                for row in rows:
                    tenant, scope, key = row["tenant"], row["scope"], row["key"]
                    plain = open_record(sealer, row["value"], row["sealed"], tenant, scope, key)
                    attempt.write_sent = True
                    await conn.execute(
                        self._q(_SQL_RESEAL_RECORD),
                        tenant,
                        scope,
                        key,
                        seal_record(sealer, plain, tenant, scope, key),
                    )
            if len(rows) < limit:
                return len(rows), None
            last = rows[-1]
            return len(rows), (last["tenant"], last["scope"], last["key"])

        return await self._run(body, "rotate_keys")

    async def set_state(
        self,
        session_id: str,
        state: SessionState,
        *,
        reason: str | None = None,
        fence: Lease | None = None,
    ) -> AgentSession:
        failure_reason = reason if state is SessionState.FAILED else None
        return await self._write_head(
            "set_state",
            _SQL_SET_STATE,
            (
                session_id,
                state.value,
                _opt_esc(failure_reason),
                _SOURCES[state],
                None if fence is None else fence.token,
                None,
            ),
            session_id,
            fence,
            target=state,
            reason=failure_reason if self.sealer is not None else None,
        )

    async def _write_head(
        self,
        what: str,
        sql: str,
        args: Sequence[Any],
        session_id: str,
        fence: Lease | None,
        *,
        target: SessionState | None = None,
        reason: str | None = None,
    ) -> AgentSession:
        """Run a one-row ``UPDATE ... RETURNING head``; explain a miss with a second read.

        ``reason`` (set_state to failed with a sealer): the context is read under the row lock,
        given its ``failure_reason`` and sealed again, in the transaction of the update (its
        last argument), so the reason is never stored in the clear."""

        async def write(conn: Any, attempt: _Attempt) -> Any:
            if reason is None:
                attempt.write_sent = True
                return await conn.fetchrow(self._q(sql), *args)
            sealer = self.sealer
            assert sealer is not None
            async with conn.transaction():
                stored = await conn.fetchval(self._q(_SQL_LOCK_CONTEXT), session_id, args[4])
                if stored is None:
                    return None
                context = open_value(sealer, _loads(stored), f"{session_id}/context")
                context["failure_reason"] = reason
                sealed = _seal(sealer, context, session_id, "context")
                attempt.write_sent = True
                return await conn.fetchrow(self._q(sql), *args[:-1], sealed)

        async def body(conn: Any, attempt: _Attempt) -> AgentSession:
            for _ in range(_MAX_ATTEMPTS):
                row = await write(conn, attempt)
                attempt.write_sent = False
                if row is not None:
                    return self._head(row)
                probe = await _live_probe(conn, self._q(_SQL_PROBE), session_id, fence)
                if what == "patch_context" and probe["sealed"]:
                    raise _sealed_context(session_id)
                if target is not None:
                    SessionState(probe["state"]).check_transition(target)
                # Another writer changed the row between the statement and the probe (the
                # state we could not leave is gone): an atomic write tries again.
            raise ConflictError(f"session {session_id} kept changing during {what}")

        return await self._run(body, what)

    async def delete(self, session_id: str) -> SessionRef | None:
        async def body(conn: Any, attempt: _Attempt) -> SessionRef | None:
            attempt.write_sent = True
            row = await conn.fetchrow(self._q(_SQL_DELETE), session_id)
            return None if row is None else _ref(row)

        return await self._run(body, "delete")

    async def purge(
        self, *, session_id: str | None = None, user_id: str | None = None
    ) -> list[SessionRef]:
        if session_id is None and user_id is None:
            if self._pool is None:
                raise NotOpenError("PostgresStore used before open() or after close()")
            return []
        args: tuple[Any, ...]
        if session_id is not None and user_id is not None:
            sql, args = _SQL_PURGE_BOTH, (session_id, _esc(user_id))
        elif session_id is not None:
            sql, args = _SQL_PURGE_SESSION, (session_id,)
        else:
            # Purging a user alone also removes the records with that user_id (of this tenant).
            sql, args = _SQL_PURGE_USER_AND_RECORDS, (_opt_esc(user_id), self.tenant)

        async def body(conn: Any, attempt: _Attempt) -> list[SessionRef]:
            attempt.write_sent = True
            rows = await conn.fetch(self._q(sql), *args)
            return sorted(_ref(row) for row in rows)

        return await self._run(body, "purge")

    async def describe(self, session_ids: Sequence[str]) -> list[SessionRef]:
        ids = sorted(set(session_ids))

        async def body(conn: Any, attempt: _Attempt) -> list[SessionRef]:
            return [_ref(row) for row in await conn.fetch(self._q(_SQL_DESCRIBE), ids)]

        if not ids:
            if self._pool is None:
                raise NotOpenError("PostgresStore used before open() or after close()")
            return []
        return await self._run(body, "describe")

    # --- listing ---------------------------------------------------------------------------

    async def list_checkpoints(
        self, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        async def body(conn: Any, attempt: _Attempt) -> list[SessionCheckpoint]:
            row = await conn.fetchrow(
                self._q(_SQL_LIST_CHECKPOINTS),
                session_id,
                _clamp(max(after_seq, 0)),
                _clamp(max(limit, 0)),
            )
            if row is None:
                raise SessionNotFound(session_id)
            return self._checkpoints(session_id, row["cps"])

        return await self._run(body, "list_checkpoints")

    def _list_query(
        self, state: SessionState | None, agent_type: bool, user_id: bool, after: bool
    ) -> str:
        key = (state, agent_type, user_id, after)
        sql = self._list_sql.get(key)
        if sql is None:
            # The state is spelled out, not a parameter, so the planner can match the partial
            # indexes (WHERE state = 'active') even with a cached generic plan.
            where = [
                "state <> 'deleted'" if state is None else f"state = '{state.value}'",
            ]
            args = 1
            if agent_type:
                where.append(f"agent_type = ${args}")
                args += 1
            if user_id:
                where.append(f"user_id = ${args}")
                args += 1
            if after:
                where.append(f"session_id > ${args}")
                args += 1
            sql = (
                f"SELECT {_HEAD} FROM sessions WHERE {' AND '.join(where)} {_TENANT} "
                f"ORDER BY session_id LIMIT ${args}"
            )
            self._list_sql[key] = sql
        return sql

    async def list_sessions(
        self,
        *,
        state: SessionState | None = SessionState.ACTIVE,
        agent_type: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[AgentSession]:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        if state is SessionState.DELETED or limit <= 0:
            return []
        sql = self._list_query(
            state, agent_type is not None, user_id is not None, after is not None
        )
        args: list[Any] = [_esc(v) for v in (agent_type, user_id) if v is not None]
        if after is not None:
            args.append(after)
        args.append(_clamp(limit))

        async def body(conn: Any, attempt: _Attempt) -> list[AgentSession]:
            rows = await conn.fetch(self._q(sql), *args)
            return [self._head(row) for row in rows]

        return await self._run(body, "list_sessions")

    # --- liveness --------------------------------------------------------------------------

    async def sweep_stale(self, max_age: timedelta, *, limit: int) -> list[SessionRef]:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        if limit <= 0:
            return []
        max_age_us = _micros(bound_age(max_age))

        async def body(conn: Any, attempt: _Attempt) -> list[SessionRef]:
            attempt.write_sent = True
            rows = await conn.fetch(self._q(_SQL_SWEEP), max_age_us, _clamp(limit))
            return [_ref(row) for row in rows]

        return await self._run(body, "sweep_stale")

    async def claim(self, session_id: str, owner: str, ttl: timedelta) -> Lease:
        async def body(conn: Any, attempt: _Attempt) -> Lease:
            for _ in range(_MAX_ATTEMPTS):
                attempt.write_sent = True
                row = await conn.fetchrow(
                    self._q(_SQL_CLAIM), session_id, _esc(owner), _micros(ttl)
                )
                attempt.write_sent = False
                if row is not None:
                    return Lease(session_id, owner, int(row[0]), row[1])
                probe = await conn.fetchrow(self._q(_SQL_CURRENT_LEASE), session_id)
                if probe is None or probe["state"] == SessionState.DELETED.value:
                    raise SessionNotFound(session_id)
                holder = _opt_unesc(probe["lease_owner"])
                if holder is not None and holder != owner and probe["lease_live"]:
                    raise LeaseHeld(f"session {session_id} is leased to {holder!r}")
                # The lease was released or expired between the two statements: claim again.
            raise LeaseHeld(f"session {session_id} kept changing hands during the claim")

        return await self._run(body, "claim")

    async def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        async def body(conn: Any, attempt: _Attempt) -> Lease:
            attempt.write_sent = True
            row = await conn.fetchrow(
                self._q(_SQL_RENEW), lease.session_id, lease.token, _micros(ttl)
            )
            attempt.write_sent = False
            if row is not None:
                return Lease(lease.session_id, lease.owner, lease.token, row[1])
            await self._raise_not_live(conn, lease)

        return await self._run(body, "renew")

    async def release(self, lease: Lease) -> None:
        async def body(conn: Any, attempt: _Attempt) -> None:
            attempt.write_sent = True
            token = await conn.fetchval(self._q(_SQL_RELEASE), lease.session_id, lease.token)
            attempt.write_sent = False
            if token is None:
                await self._raise_not_live(conn, lease)

        await self._run(body, "release")

    async def _raise_not_live(self, conn: Any, lease: Lease) -> NoReturn:
        probe = await conn.fetchrow(self._q(_SQL_CURRENT_LEASE), lease.session_id)
        if probe is None or probe["state"] == SessionState.DELETED.value:
            raise SessionNotFound(lease.session_id)
        raise _lease_lost(lease)

    async def expire_leases(self, *, limit: int) -> list[Lease]:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        if limit <= 0:
            return []

        async def body(conn: Any, attempt: _Attempt) -> list[Lease]:
            attempt.write_sent = True
            rows = await conn.fetch(self._q(_SQL_EXPIRE_LEASES), _clamp(limit))
            return [
                Lease(
                    r["session_id"],
                    _unesc(r["lease_owner"]),
                    r["lease_token"],
                    r["lease_expires_at"],
                )
                for r in rows
            ]

        return await self._run(body, "expire_leases")

    async def current_lease(self, session_id: str) -> Lease | None:
        async def body(conn: Any, attempt: _Attempt) -> Lease | None:
            row = await conn.fetchrow(self._q(_SQL_CURRENT_LEASE), session_id)
            if row is None or row["state"] == SessionState.DELETED.value:
                raise SessionNotFound(session_id)
            owner = _opt_unesc(row["lease_owner"])
            if owner is None or not row["lease_live"]:
                return None
            return Lease(session_id, owner, row["lease_token"], row["lease_expires_at"])

        return await self._run(body, "current_lease")

    # --- tier epochs -----------------------------------------------------------------------

    async def caches_in_use(self) -> bool:
        async def body(conn: Any, attempt: _Attempt) -> bool:
            return bool(await conn.fetchval(self._q(_SQL_CACHES_IN_USE)))

        return await self._run(body, "caches_in_use")

    async def tier_epoch(self, namespace: str) -> TierEpoch:
        name = _esc(namespace)

        async def body(conn: Any, attempt: _Attempt) -> TierEpoch:
            # The row almost always exists: a plain read, and a write only the first time.
            row = await conn.fetchrow(self._q(_SQL_TIER_EPOCH), name)
            if row is None:
                attempt.write_sent = True
                row = await conn.fetchrow(self._q(_SQL_CREATE_TIER_EPOCH), name)
            return TierEpoch(int(row["epoch"]), _unesc(row["cache_id"]))

        return await self._run(body, "tier_epoch")

    async def bump_tier_epoch(
        self, namespace: str | None = None, *, cache_id: str | None = None
    ) -> None:
        args: tuple[Any, ...]
        if namespace is None:
            sql, args = _SQL_BUMP_ALL_TIER_EPOCHS, (_opt_esc(cache_id),)
        else:
            sql, args = _SQL_BUMP_TIER_EPOCH, (_esc(namespace), _opt_esc(cache_id))

        async def body(conn: Any, attempt: _Attempt) -> None:
            attempt.write_sent = True
            await conn.execute(self._q(sql), *args)

        await self._run(body, "bump_tier_epoch")

    # --- data governance -------------------------------------------------------------------

    async def purge_aged(
        self,
        states: Sequence[SessionState],
        max_age: timedelta,
        *,
        limit: int,
        after: str | None = None,
    ) -> list[SessionRef]:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        wanted = sorted({state.value for state in states})
        if not wanted or limit <= 0:
            return []
        # Literals, so the planner can match sessions_by_state; SKIP LOCKED: concurrent
        # reapers split the work and never remove a session twice. The cutoff is the server's.
        marks = ", ".join(f"'{value}'" for value in wanted)
        max_age_sql = _US_INTERVAL.format("$1")
        sql = f"""
            WITH doomed AS (
                SELECT session_id FROM sessions
                 WHERE state IN ({marks}) AND session_id > $3
                   AND updated_at < now() - {max_age_sql} {_TENANT}
                 ORDER BY session_id
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED
            )
            DELETE FROM sessions s USING doomed
             WHERE s.session_id = doomed.session_id
            RETURNING s.session_id, s.version, s.agent_type, s.user_id, s.state, s.tenant
        """
        max_age_us = _micros(bound_age(max_age))

        async def body(conn: Any, attempt: _Attempt) -> list[SessionRef]:
            attempt.write_sent = True
            rows = await conn.fetch(self._q(sql), max_age_us, _clamp(limit), after or "")
            return sorted(_ref(row) for row in rows)

        return await self._run(body, "purge_aged")

    async def list_user_sessions(
        self, user_id: str, *, limit: int = 100, after: str | None = None
    ) -> list[AgentSession]:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        if limit <= 0:
            return []
        sql = (
            f"SELECT {_HEAD} FROM sessions WHERE user_id = $1 AND session_id > $2 {_TENANT}"
            " ORDER BY session_id LIMIT $3"
        )

        async def body(conn: Any, attempt: _Attempt) -> list[AgentSession]:
            rows = await conn.fetch(self._q(sql), _esc(user_id), after or "", _clamp(limit))
            return [self._head(row) for row in rows]

        return await self._run(body, "list_user_sessions")

    async def list_trail(
        self, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[SessionCheckpoint]:
        sql = (
            "SELECT seq, name, data, ts FROM checkpoints WHERE session_id = $1 AND seq > $2"
            f" {_TENANT} ORDER BY seq LIMIT $3"
        )

        async def body(conn: Any, attempt: _Attempt) -> list[SessionCheckpoint]:
            rows = await conn.fetch(
                self._q(sql), session_id, _clamp(max(after_seq, 0)), _clamp(max(limit, 0))
            )
            return self._checkpoints(session_id, [tuple(row) for row in rows])

        return await self._run(body, "list_trail")

    async def retention_policies(self, namespace: str | None = None) -> list[RetentionPolicy]:
        sql = (
            "SELECT namespace, deleted_days, terminal_days, updated_at, updated_by"
            " FROM retention_policies WHERE tenant = $2 AND ($1::text IS NULL OR namespace = $1)"
            " ORDER BY namespace"
        )

        async def body(conn: Any, attempt: _Attempt) -> list[RetentionPolicy]:
            # Each tenant has its own policies; an untenanted store the tenant '' ones.
            rows = await conn.fetch(self._q(sql), _opt_esc(namespace), self.tenant or "")
            return [
                RetentionPolicy(
                    _unesc(row["namespace"]),
                    row["deleted_days"],
                    row["terminal_days"],
                    row["updated_at"],
                    _unesc(row["updated_by"]),
                )
                for row in rows
            ]

        return await self._run(body, "retention_policies")

    async def set_retention_policy(
        self,
        namespace: str,
        *,
        deleted_days: int | None,
        terminal_days: int | None,
        actor: str,
    ) -> RetentionPolicy:
        sql = """
            INSERT INTO retention_policies AS p
                   (namespace, deleted_days, terminal_days, updated_at, updated_by, tenant)
            VALUES ($1, $2, $3, now(), $4, $5)
            ON CONFLICT (tenant, namespace) DO UPDATE
               SET deleted_days = $2, terminal_days = $3, updated_at = now(), updated_by = $4
            RETURNING updated_at
        """

        async def body(conn: Any, attempt: _Attempt) -> RetentionPolicy:
            attempt.write_sent = True
            stamp = await conn.fetchval(
                self._q(sql),
                _esc(namespace),
                deleted_days,
                terminal_days,
                _esc(actor),
                self.tenant or "",
            )
            return RetentionPolicy(namespace, deleted_days, terminal_days, stamp, actor)

        return await self._run(body, "set_retention_policy")

    async def append_audit(
        self,
        *,
        actor: str,
        action: str,
        namespace: str,
        user_id: str | None,
        session_count: int,
        details: dict[str, Any],
    ) -> AuditRecord:
        sql = """
            INSERT INTO audit_log
                   (actor, action, namespace, user_id, session_count, details, tenant)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
            RETURNING id, at
        """
        text = _dumps(details)

        async def body(conn: Any, attempt: _Attempt) -> AuditRecord:
            attempt.write_sent = True
            row = await conn.fetchrow(
                self._q(sql),
                _esc(actor),
                _esc(action),
                _esc(namespace),
                _opt_esc(user_id),
                session_count,
                text,
                self.tenant or "",
            )
            return AuditRecord(
                int(row["id"]),
                row["at"],
                actor,
                action,
                namespace,
                user_id,
                session_count,
                _loads(text),
                self.tenant or "",
            )

        return await self._run(body, "append_audit")

    async def list_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        sql = """
            SELECT id, at, actor, action, namespace, user_id, session_count, details, tenant
              FROM audit_log
             WHERE id > $1 AND ($2::text IS NULL OR user_id = $2)
               AND ($3::text IS NULL OR action = $3) /*T*/
             ORDER BY id
             LIMIT $4
        """

        async def body(conn: Any, attempt: _Attempt) -> list[AuditRecord]:
            rows = await conn.fetch(
                self._q(sql),
                _clamp(max(after_id, 0)),
                _opt_esc(user_id),
                _opt_esc(action),
                _clamp(max(limit, 0)),
            )
            return [
                AuditRecord(
                    int(row["id"]),
                    row["at"],
                    _unesc(row["actor"]),
                    _unesc(row["action"]),
                    _unesc(row["namespace"]),
                    _opt_unesc(row["user_id"]),
                    int(row["session_count"]),
                    _loads(row["details"]),
                    row["tenant"],
                )
                for row in rows
            ]

        return await self._run(body, "list_audit")

    # --- records ---------------------------------------------------------------------------

    def _record_tenant(self) -> str:
        return self.tenant or ""

    def _open_record(self, tenant: str, scope: str, key: str, value: bytes, sealed: bool) -> bytes:
        return open_record(self.sealer, bytes(value), sealed, tenant, scope, key)

    async def put_records(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        keep_existing: bool = False,
    ) -> int:
        tenant = self._record_tenant()
        sealer = self.sealer
        # Sorted, so concurrent writers of overlapping keys lock them in one order.
        ordered = sorted(items)
        keys = [key for key, _ in ordered]
        values = [seal_record(sealer, value, tenant, scope, key) for key, value in ordered]
        sql = _SQL_PUT_RECORDS_KEEP if keep_existing else _SQL_PUT_RECORDS
        args = (tenant, scope, keys, values, sealer is not None, session_id, _opt_esc(user_id))

        async def body(conn: Any, attempt: _Attempt) -> int:
            attempt.write_sent = True
            row = await conn.fetchrow(self._q(sql), *args)
            if session_id is not None and not row["live"]:
                raise SessionNotFound(session_id)
            return int(row["written"])

        return await self._run(body, "put_records")

    async def get_records(self, scope: str, keys: Sequence[str]) -> dict[str, bytes]:
        tenant = self._record_tenant()
        wanted = sorted(set(keys))

        async def body(conn: Any, attempt: _Attempt) -> list[Any]:
            return list(await conn.fetch(self._q(_SQL_GET_RECORDS), tenant, scope, wanted))

        if not wanted:
            if self._pool is None:
                raise NotOpenError("PostgresStore used before open() or after close()")
            return {}
        rows = await self._run(body, "get_records")
        return {
            row["key"]: self._open_record(tenant, scope, row["key"], row["value"], row["sealed"])
            for row in rows
        }

    async def list_records(
        self,
        scope: str,
        *,
        prefix: str = "",
        after: str | None = None,
        before: str | None = None,
        limit: int = 1000,
        descending: bool = False,
    ) -> list[tuple[str, bytes]]:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        if limit <= 0:
            return []
        tenant = self._record_tenant()
        where, params = _key_range(prefix, after, before, first=3)
        order = "DESC" if descending else "ASC"
        sql = (
            f"SELECT key, value, sealed FROM records WHERE tenant = $1 AND scope = $2{where}"
            f" ORDER BY key {order} LIMIT ${3 + len(params)}"
        )

        async def body(conn: Any, attempt: _Attempt) -> list[Any]:
            return list(await conn.fetch(self._q(sql), tenant, scope, *params, _clamp(limit)))

        rows = await self._run(body, "list_records")
        return [
            (row["key"], self._open_record(tenant, scope, row["key"], row["value"], row["sealed"]))
            for row in rows
        ]

    async def delete_records(
        self,
        scope: str,
        *,
        keys: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> int:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        tenant = self._record_tenant()
        args: tuple[Any, ...]
        if keys is not None:
            if not keys:
                return 0
            where, args = " AND key = ANY($3::text[])", (sorted(set(keys)),)
        else:
            where, args = _key_range(prefix or "", None, None, first=3)
        # A concurrent deleter of the same row waits for the row lock, then finds it gone:
        # exactly one of them counts it.
        sql = (
            f"WITH d AS (DELETE FROM records WHERE tenant = $1 AND scope = $2{where} RETURNING 1)"
            " SELECT count(*) FROM d"
        )

        async def body(conn: Any, attempt: _Attempt) -> int:
            attempt.write_sent = True
            return int(await conn.fetchval(self._q(sql), tenant, scope, *args))

        return await self._run(body, "delete_records")

    async def list_scopes(
        self, prefix: str, *, limit: int = 1000, after: str | None = None
    ) -> list[str]:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        if limit <= 0:
            return []
        end = prefix_end(prefix)
        args: list[Any] = [self._record_tenant(), prefix]
        start = ""
        if after is not None:
            args.append(after)
            start = f" AND scope > ${len(args)}"
        stop = stop_r = ""
        if end is not None:
            args.append(end)
            stop, stop_r = f" AND scope < ${len(args)}", f" AND r.scope < ${len(args)}"
        args.append(_clamp(limit))
        # A skip scan over the primary key: one index probe per distinct scope. PostgreSQL
        # evaluates the recursive query only as far as the LIMIT reads it.
        sql = f"""
            WITH RECURSIVE s(scope) AS (
                (SELECT scope FROM records WHERE tenant = $1 AND scope >= $2{start}{stop}
                  ORDER BY scope LIMIT 1)
                UNION ALL
                SELECT (SELECT r.scope FROM records r
                         WHERE r.tenant = $1 AND r.scope > s.scope{stop_r}
                         ORDER BY r.scope LIMIT 1)
                  FROM s WHERE s.scope IS NOT NULL
            )
            SELECT scope FROM s WHERE scope IS NOT NULL LIMIT ${len(args)}
        """

        async def body(conn: Any, attempt: _Attempt) -> list[str]:
            return [row[0] for row in await conn.fetch(self._q(sql), *args)]

        return await self._run(body, "list_scopes")

    async def _export_records(
        self, where: str, param: str, limit: int, after: tuple[str, str, str] | None
    ) -> list[StoredRecord]:
        if self._pool is None:
            raise NotOpenError("PostgresStore used before open() or after close()")
        if limit <= 0:
            return []
        tenant = self.tenant
        sql = f"""
            SELECT r.tenant, r.scope, r.key, r.value, r.sealed, r.session_id, r.user_id
              FROM records r
             WHERE {where} AND ($2::text IS NULL OR r.tenant = $2)
               AND (r.tenant, r.scope, r.key) > ($3, $4, $5)
             ORDER BY r.tenant, r.scope, r.key
             LIMIT $6
        """
        # Every stored triple is after ("", "", ""): keys are never empty.
        cursor = after if after is not None else ("", "", "")

        async def body(conn: Any, attempt: _Attempt) -> list[Any]:
            return list(await conn.fetch(self._q(sql), param, tenant, *cursor, _clamp(limit)))

        rows = await self._run(body, "export")
        return [
            StoredRecord(
                row["tenant"],
                row["scope"],
                row["key"],
                self._open_record(
                    row["tenant"], row["scope"], row["key"], row["value"], row["sealed"]
                ),
                row["session_id"],
                _opt_unesc(row["user_id"]),
            )
            for row in rows
        ]

    async def list_session_records(
        self, session_id: str, *, limit: int = 100, after: tuple[str, str, str] | None = None
    ) -> list[StoredRecord]:
        return await self._export_records("r.session_id = $1", session_id, limit, after)

    async def list_user_records(
        self, user_id: str, *, limit: int = 100, after: tuple[str, str, str] | None = None
    ) -> list[StoredRecord]:
        return await self._export_records(
            "r.user_id = $1 AND NOT EXISTS (SELECT 1 FROM sessions s"
            " WHERE s.session_id = r.session_id AND s.user_id = r.user_id)",
            _esc(user_id),
            limit,
            after,
        )
