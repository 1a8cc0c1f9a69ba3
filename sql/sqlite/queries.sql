-- What SQLite says differently from sql/queries.sql. Lists arrive as JSON text.

-- fragment: source_in
source IN (SELECT value FROM json_each(:sources))

-- fragment: id_in
id IN (SELECT value FROM json_each(:ids))

-- fragment: error_without_description
json_set(error, '$.description', json('null'))

-- fragment: account_id_in
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

-- name: insert_entries
-- Ids are taken in the rows' order (`n`).
INSERT INTO http_log (created_at, action, source, account_id, org_id, provider,
                      environment, duration_ms, request, response, error, message, details)
SELECT created_at, action, source, account_id, org_id, provider, environment, duration_ms,
       request, response, error, message, details
FROM ({{entry_rows}}) AS r ORDER BY n
RETURNING id

-- Rows of a batch come as one JSON array (the store's `_rows`), timestamps as microseconds
-- since the epoch: divided by 1e6 they are the REAL epoch seconds stored everywhere else.

-- fragment: success_rows
SELECT value ->> 'id' AS id, value ->> 'version' AS version, value ->> 'owner' AS owner,
       value ->> 'access_token' AS access_token, value ->> 'refresh_token' AS refresh_token,
       (value ->> 'access_expires_at') / 1e6 AS access_expires_at,
       (value ->> 'refresh_expires_at') / 1e6 AS refresh_expires_at,
       (value ->> 'refreshed_at') / 1e6 AS refreshed_at,
       (value ->> 'next_attempt_at') / 1e6 AS next_attempt_at,
       (value ->> 'now') / 1e6 AS now
FROM json_each(:rows)

-- fragment: attempt_rows
SELECT value ->> 'account_id' AS account_id, value ->> 'source' AS source,
       value ->> 'success' AS success, value ->> 'error_code' AS error_code,
       value ->> 'error_message' AS error_message, value ->> 'save_id' AS save_id,
       value ->> 'applied' AS applied, value ->> 'entry_id' AS entry_id,
       (value ->> 'started_at') / 1e6 AS started_at,
       (value ->> 'finished_at') / 1e6 AS finished_at
FROM json_each(:rows)

-- fragment: entry_rows
SELECT value ->> 'n' AS n, value ->> 'action' AS action, value ->> 'source' AS source,
       value ->> 'account_id' AS account_id, value ->> 'org_id' AS org_id,
       value ->> 'provider' AS provider, value ->> 'environment' AS environment,
       value ->> 'duration_ms' AS duration_ms, value -> 'request' AS request,
       value -> 'response' AS response, value -> 'error' AS error,
       value ->> 'message' AS message, value -> 'details' AS details,
       (value ->> 'created_at') / 1e6 AS created_at
FROM json_each(:rows)

-- fragment: never
-- The console's sort value of an absent expiry: 9999-01-01 UTC in epoch seconds.
253370764800.0

-- name: console_custom_plan
-- SQLite plans every statement with its values already.
SELECT 1 AS planned

-- -- webhooks --------------------------------------------------------------------------

-- name: insert_event
INSERT INTO events (type, data, created_at) VALUES (:type, :data, :created_at)
RETURNING id

-- name: dispatch_events
UPDATE events SET dispatched_at = :now
WHERE id IN (SELECT id FROM events WHERE dispatched_at IS NULL ORDER BY id LIMIT :limit)
RETURNING id, type, data, created_at

-- name: claim_deliveries
UPDATE webhook_deliveries
SET lease_owner = :owner, lease_expires_at = :lease_until, next_attempt_at = :lease_until
WHERE id IN (SELECT id FROM webhook_deliveries
             WHERE endpoint = :endpoint AND state = 'pending' AND next_attempt_at <= :now
             ORDER BY next_attempt_at LIMIT :limit)
RETURNING *

-- fragment: stale_line
-- A cycle that finished before this is stale: model.STALE_AFTER_INTERVALS intervals ago.
:now - :stale_after_intervals * interval_seconds

-- name: mark_stale_workers
UPDATE workers SET stale_at = :now
WHERE stale_at IS NULL AND last_status IS NOT 'stopped'
  AND coalesce(last_finished_at, last_started_at) < {{stale_line}}
RETURNING name, instance, last_finished_at

-- -- the daily budget --------------------------------------------------------------------

-- fragment: provider_reserved
(provider IN (SELECT value FROM json_each(:reserved)))

-- fragment: demanded
(provider NOT IN (SELECT value FROM json_each(:idle_providers))
 OR coalesce(last_vended_at, created_at) >= :now
    - (SELECT json_extract(:idle_seconds, '$[' || j.key || ']')
       FROM json_each(:idle_providers) AS j WHERE j.value = accounts.provider))

-- fragment: by_refresh_expiry
-- SQLite plans without statistics and would prefer an equality index on state (the
-- console's), scanning every active account each cycle; name the partial index instead
-- (an error, not a slow plan, if it ever cannot serve).
INDEXED BY accounts_refresh_expiry
