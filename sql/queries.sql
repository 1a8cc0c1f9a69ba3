-- Every statement tokend runs, by name, in SQL both backends speak. Parameters are named
-- (:name); a statement that really differs between dialects is defined in
-- sql/<backend>/queries.sql instead, and a `{{fragment}}` is spliced in where it is named.
-- Timestamps are timestamptz on PostgreSQL and REAL UTC epoch seconds on SQLite; lists
-- and objects are arrays/jsonb on PostgreSQL and JSON text on SQLite (the connector's codec).

-- fragment: due
-- The due rule, written once: active, its time has come, not leased, not paused, and the
-- access token expires soon or the last refresh is old (or there was none). The expiry test
-- uses coalesce with far-off bounds (same truth table as `x <= :expiring_before` and
-- `y IS NULL OR y <= :refreshed_before`) so PostgreSQL's planner cannot estimate it: it is
-- correlated with next_attempt_at, and the plain form gets estimated ~100x too selective,
-- which makes PostgreSQL sort every due row instead of walking accounts_due in order and
-- stopping at the limit (~20 ms against ~2 ms at 1,000,000 accounts; see BENCHMARKS.md).
state = 'active'
  AND next_attempt_at <= :now
  AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
  AND (coalesce(access_expires_at, :far_future) <= :expiring_before
       OR coalesce(last_refresh_at, :far_past) <= :refreshed_before)
  AND NOT EXISTS (SELECT 1 FROM provider_pauses p
                  WHERE p.provider = accounts.provider AND p.paused_until > :now)

-- name: ping
SELECT 1

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL
)

-- name: applied_migrations
SELECT name FROM schema_migrations

-- name: record_migration
INSERT INTO schema_migrations (name, applied_at) VALUES (:name, :now)

-- name: insert_account
INSERT INTO accounts (id, org, provider, name, scopes, refresh_token, refresh_expires_at,
                      next_attempt_at, created_at, updated_at)
VALUES (:id, :org, :provider, :name, :scopes, :refresh_token, :refresh_expires_at,
        :now, :now, :now)
RETURNING *

-- name: get_account
SELECT * FROM accounts WHERE id = :id

-- name: list_accounts
SELECT * FROM accounts
WHERE CAST(:org AS text) IS NULL OR org = :org
ORDER BY org, provider, name

-- name: reauth_account
UPDATE accounts
SET refresh_token = :refresh_token, refresh_expires_at = :refresh_expires_at,
    state = 'active', consecutive_failures = 0, last_error = NULL, next_attempt_at = :now,
    lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = :now
WHERE id = :id
RETURNING *

-- name: set_state
UPDATE accounts SET state = :state, version = version + 1, updated_at = :now
WHERE id = :id
RETURNING *

-- name: account_counts
SELECT state, count(*) AS n FROM accounts GROUP BY state

-- name: active_by_provider
SELECT provider, count(*) AS n FROM accounts WHERE state = 'active' GROUP BY provider

-- name: claim_account
UPDATE accounts
SET lease_owner = :owner, lease_expires_at = :lease_until, next_attempt_at = :lease_until,
    version = version + 1, updated_at = :now
WHERE id = :id AND state = 'active'
  AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
RETURNING *

-- name: finish_success
UPDATE accounts
SET access_token = :access_token, access_expires_at = :access_expires_at,
    refresh_token = coalesce(:refresh_token, refresh_token),
    refresh_expires_at = coalesce(:refresh_expires_at, refresh_expires_at),
    last_refresh_at = :refreshed_at, consecutive_failures = 0, last_error = NULL,
    next_attempt_at = :next_attempt_at,
    lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = :now
WHERE id = :id AND version = :version AND lease_owner = :owner
RETURNING id

-- name: finish_failure
UPDATE accounts
SET consecutive_failures = consecutive_failures + 1, last_error = :error_code,
    next_attempt_at = :next_attempt_at, state = coalesce(:state, state),
    lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = :now
WHERE id = :id AND version = :version AND lease_owner = :owner
RETURNING id

-- name: next_due_at
SELECT next_attempt_at FROM accounts
WHERE state = 'active'
  AND NOT EXISTS (SELECT 1 FROM provider_pauses p
                  WHERE p.provider = accounts.provider AND p.paused_until > :now)
ORDER BY next_attempt_at
LIMIT 1

-- name: count_due
SELECT count(*) AS n FROM accounts WHERE {{due}}

-- name: pause_provider
INSERT INTO provider_pauses (provider, paused_until, reason)
VALUES (:provider, :until, :reason)
ON CONFLICT (provider) DO UPDATE SET paused_until = excluded.paused_until,
                                     reason = excluded.reason

-- name: paused_providers
SELECT provider, paused_until FROM provider_pauses WHERE paused_until > :now

-- name: insert_attempt
INSERT INTO refresh_log (account_id, source, started_at, finished_at, success, error_code,
                         error_message)
VALUES (:account_id, :source, :started_at, :finished_at, :success, :error_code,
        :error_message)

-- name: worker_started
INSERT INTO workers (name, instance, interval_seconds, last_started_at, updated_at)
VALUES (:name, :instance, :interval_seconds, :now, :now)
ON CONFLICT (name, instance) DO UPDATE SET interval_seconds = excluded.interval_seconds,
                                           last_started_at = excluded.last_started_at,
                                           updated_at = excluded.updated_at

-- name: worker_finished
UPDATE workers
SET last_finished_at = :now, last_status = :status, last_summary = :summary, updated_at = :now
WHERE name = :name AND instance = :instance

-- name: list_workers
SELECT name, instance, interval_seconds, last_started_at, last_finished_at, last_status,
       last_summary
FROM workers ORDER BY name, instance

-- name: accounts_to_rotate
SELECT * FROM accounts
WHERE (CAST(:after_id AS text) IS NULL OR id > :after_id)
  AND (substr(refresh_token, 1, length(:prefix)) <> :prefix
       OR substr(access_token, 1, length(:prefix)) <> :prefix)
ORDER BY id
LIMIT :limit

-- name: replace_secrets
-- Never under a live lease: the lease holder may be about to save a rotated refresh token.
UPDATE accounts
SET refresh_token = :refresh_token, access_token = :access_token, version = version + 1
WHERE id = :id AND version = :version
  AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
RETURNING id

-- name: prune_http_log
-- Oldest first by id, a batch at a time, so a long backlog never holds a long lock.
WITH old AS (SELECT id FROM http_log WHERE created_at < :before ORDER BY id LIMIT :limit)
DELETE FROM http_log WHERE id IN (SELECT id FROM old) RETURNING id

-- name: prune_refresh_log
WITH old AS (SELECT id FROM refresh_log WHERE started_at < :before ORDER BY id LIMIT :limit)
DELETE FROM refresh_log WHERE id IN (SELECT id FROM old) RETURNING id

-- fragment: entry_filter
(CAST(:action AS text) IS NULL OR action = :action)
  AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
  AND (CAST(:org AS text) IS NULL OR org_id = :org)
  AND (:all_sources OR {{source_in}})

-- name: list_entries_before
SELECT * FROM http_log
WHERE {{entry_filter}}
  AND (CAST(:before_id AS bigint) IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit

-- name: list_entries_after
SELECT * FROM http_log
WHERE {{entry_filter}} AND id > :after_id
ORDER BY id
LIMIT :limit

-- name: get_entries
SELECT * FROM http_log WHERE {{id_in}} ORDER BY id

-- name: list_attempts
SELECT account_id, source, started_at, finished_at, success, error_code, error_message
FROM refresh_log WHERE account_id = :account_id ORDER BY id DESC LIMIT :limit

-- Scale (PgBouncer): the stream polls for new entry ids when it cannot LISTEN.

-- name: latest_entry_id
SELECT max(id) AS id FROM http_log

-- name: entry_ids_after
SELECT id FROM http_log WHERE id > :after_id ORDER BY id LIMIT :limit
