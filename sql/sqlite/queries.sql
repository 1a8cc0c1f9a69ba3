-- What SQLite says differently from sql/queries.sql. Lists arrive as JSON text.

-- fragment: source_in
source IN (SELECT value FROM json_each(:sources))

-- fragment: id_in
id IN (SELECT value FROM json_each(:ids))

-- name: lock_migrations
-- Nothing to take: a SQLite transaction is BEGIN IMMEDIATE, which holds the write lock.
SELECT 1

-- name: migrations_table_exists
SELECT count(*) > 0 AS present FROM sqlite_master
WHERE type = 'table' AND name = 'schema_migrations'


-- name: claim_due
-- One statement under the write lock: pick due rows in scheduling order and lease them.
UPDATE accounts
SET lease_owner = :owner, lease_expires_at = :lease_until, next_attempt_at = :lease_until,
    version = version + 1, updated_at = :now
WHERE id IN (
    SELECT id FROM accounts
    WHERE {{due}}
    ORDER BY next_attempt_at
    LIMIT :limit
)
RETURNING *

-- name: insert_entry
INSERT INTO http_log (created_at, action, source, account_id, org_id, provider,
                      environment, duration_ms, request, response, error, message, details)
VALUES (:created_at, :action, :source, :account_id, :org_id, :provider, :environment,
        :duration_ms, :request, :response, :error, :message, :details)
RETURNING id

-- fragment: never
-- The console's sort value of an absent expiry: 9999-01-01 UTC in epoch seconds.
253370764800.0

-- name: console_custom_plan
-- SQLite plans every statement with its values already.
SELECT 1 AS planned
