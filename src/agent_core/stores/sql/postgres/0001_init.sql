-- agent-core schema, version 1.
--
-- Everything is keyed by session_id (the sessions primary key, the checkpoints primary key
-- prefix), so both tables can be sharded or partitioned by session_id.
-- session_id uses the "C" collation so ORDER BY session_id and the "after" cursor compare code
-- points, exactly as Python sorts strings, whatever the database's default collation is.

CREATE TABLE IF NOT EXISTS agent_core_schema (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    session_id        text COLLATE "C" PRIMARY KEY,
    agent_type        text        NOT NULL,
    user_id           text        NOT NULL DEFAULT '',
    state             text        NOT NULL
        CONSTRAINT sessions_state_check
        CHECK (state IN ('active', 'paused', 'completed', 'failed', 'deleted')),
    context           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metadata          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    last_heartbeat    timestamptz NOT NULL,
    version           bigint      NOT NULL DEFAULT 1,
    checkpoint_count  bigint      NOT NULL DEFAULT 0,
    lease_owner       text,
    lease_token       bigint      NOT NULL DEFAULT 0,
    lease_expires_at  timestamptz,
    -- The ttl of the last claim or renew, in microseconds: a fenced heartbeat extends the lease
    -- by it. Not an interval: adding a day-valued interval follows the session time zone's DST.
    lease_ttl_us      bigint
)
-- Appends only touch unindexed columns (version, checkpoint_count, updated_at): free space on
-- the page lets them be HOT updates, with no index maintenance.
WITH (fillfactor = 85);

CREATE TABLE checkpoints (
    session_id       text COLLATE "C" NOT NULL
        REFERENCES sessions (session_id) ON DELETE CASCADE,
    seq              bigint      NOT NULL,
    name             text        NOT NULL,
    data             jsonb       NOT NULL,
    ts               timestamptz NOT NULL,
    idempotency_key  text,
    PRIMARY KEY (session_id, seq)
);

CREATE UNIQUE INDEX checkpoints_idempotency_key
    ON checkpoints (session_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- list_sessions(user_id=..., state=active), the hot listing.
CREATE INDEX sessions_active_by_user
    ON sessions (user_id, session_id) WHERE state = 'active';
-- list_sessions(agent_type=..., state=active).
CREATE INDEX sessions_active_by_agent_type
    ON sessions (agent_type, session_id) WHERE state = 'active';
-- list_sessions(state=...) and every other listing by state.
CREATE INDEX sessions_by_state
    ON sessions (state, session_id);
-- purge(user_id=...) and listings of a user's sessions in any state.
CREATE INDEX sessions_by_user
    ON sessions (user_id, session_id);
-- sweep_stale: the oldest heartbeats of active sessions.
CREATE INDEX sessions_stale
    ON sessions (last_heartbeat) WHERE state = 'active';
-- expire_leases: held leases by expiry.
CREATE INDEX sessions_leases
    ON sessions (lease_expires_at) WHERE lease_owner IS NOT NULL;

-- RFC 7396 JSON merge patch, so patch_context is one atomic UPDATE (one round trip) instead of a
-- locked read-modify-write. Same rules as agent_core.codec.merge_patch: a null removes the key,
-- an object merges into the current value (or into {} when that is not an object), anything
-- else replaces it.
CREATE FUNCTION agent_core_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    result jsonb := CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}'::jsonb END;
    key text;
    value jsonb;
BEGIN
    FOR key, value IN SELECT e.key, e.value FROM jsonb_each(patch) AS e LOOP
        IF jsonb_typeof(value) = 'null' THEN
            result := result - key;
        ELSIF jsonb_typeof(value) = 'object' THEN
            result := result || jsonb_build_object(key, agent_core_merge_patch(result -> key, value));
        ELSE
            result := result || jsonb_build_object(key, value);
        END IF;
    END LOOP;
    RETURN result;
END
$$;
