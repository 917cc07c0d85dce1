-- agent-core schema, version 2: tier epochs.
--
-- One row per cache namespace. A bump raises epoch, which invalidates every shared-cache entry
-- stamped with an older epoch at once; cache_id names the cache that set it last ('' when none
-- did). Rows are created on first read, as (0, ''). The table stays tiny (one row per
-- namespace), so bumping every row is a short statement.

CREATE TABLE tier_epochs (
    namespace  text COLLATE "C" PRIMARY KEY,
    epoch      bigint NOT NULL DEFAULT 0,
    cache_id   text   NOT NULL DEFAULT ''
);
