-- Every statement tokend runs on SQLite, by name. Parameters are positional (?1, ?2, ...)
-- and come in the same order as in sql/postgresql/queries.sql. Timestamps are REAL UTC
-- epoch seconds; lists and objects are JSON text.

-- name: ping
SELECT 1

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at REAL NOT NULL
)

-- name: migrations_table_exists
SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'

-- name: applied_migrations
SELECT name FROM schema_migrations

-- name: record_migration
INSERT INTO schema_migrations (name, applied_at) VALUES (?1, ?2)

-- name: insert_account
INSERT INTO accounts (id, org, provider, name, scopes, refresh_token, refresh_expires_at,
                      next_attempt_at, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)
RETURNING *

-- name: get_account
SELECT * FROM accounts WHERE id = ?1

-- name: list_accounts
SELECT * FROM accounts
WHERE ?1 IS NULL OR org = ?1
ORDER BY org, provider, name

-- name: reauth_account
UPDATE accounts
SET refresh_token = ?2, refresh_expires_at = ?3, state = 'active', consecutive_failures = 0,
    last_error = NULL, next_attempt_at = ?4, lease_owner = NULL, lease_expires_at = NULL,
    version = version + 1, updated_at = ?4
WHERE id = ?1
RETURNING *

-- name: set_state
UPDATE accounts SET state = ?2, version = version + 1, updated_at = ?3
WHERE id = ?1
RETURNING *

-- name: account_counts
SELECT state, count(*) AS n FROM accounts GROUP BY state

-- name: active_by_provider
SELECT provider, count(*) AS n FROM accounts WHERE state = 'active' GROUP BY provider

-- name: failing_counts
-- Active accounts whose last attempts failed, by the last error's code.
SELECT coalesce(last_error, 'error') AS error_code, count(*) AS n FROM accounts
WHERE state = 'active' AND consecutive_failures > 0 GROUP BY coalesce(last_error, 'error')

-- name: claim_due
-- One statement under BEGIN IMMEDIATE (the write lock): pick due rows in scheduling order
-- and lease them. next_attempt_at moves to the lease expiry, so the rows of an owner that
-- dies come due again when its lease runs out.
UPDATE accounts
SET lease_owner = ?1, lease_expires_at = ?4, next_attempt_at = ?4,
    version = version + 1, updated_at = ?2
WHERE id IN (
    SELECT id FROM accounts
    WHERE state = 'active'
      AND next_attempt_at <= ?2
      AND (lease_expires_at IS NULL OR lease_expires_at <= ?2)
      AND (access_expires_at <= ?5 OR last_refresh_at IS NULL OR last_refresh_at <= ?6)
      AND NOT EXISTS (SELECT 1 FROM provider_pauses p
                      WHERE p.provider = accounts.provider AND p.paused_until > ?2)
    ORDER BY next_attempt_at
    LIMIT ?3
)
RETURNING *

-- name: claim_account
UPDATE accounts
SET lease_owner = ?2, lease_expires_at = ?4, next_attempt_at = ?4,
    version = version + 1, updated_at = ?3
WHERE id = ?1 AND state = 'active' AND (lease_expires_at IS NULL OR lease_expires_at <= ?3)
RETURNING *

-- name: finish_success
UPDATE accounts
SET access_token = ?4, access_expires_at = ?5,
    refresh_token = COALESCE(?6, refresh_token),
    refresh_expires_at = COALESCE(?7, refresh_expires_at),
    last_refresh_at = ?8, consecutive_failures = 0, last_error = NULL, next_attempt_at = ?9,
    lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = ?10
WHERE id = ?1 AND version = ?2 AND lease_owner = ?3
RETURNING id

-- name: finish_failure
UPDATE accounts
SET consecutive_failures = consecutive_failures + 1, last_error = ?4, next_attempt_at = ?5,
    state = COALESCE(?6, state),
    lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = ?7
WHERE id = ?1 AND version = ?2 AND lease_owner = ?3
RETURNING id

-- name: release
UPDATE accounts
SET lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = ?4,
    version = version + 1, updated_at = ?4
WHERE id = ?1 AND version = ?2 AND lease_owner = ?3
RETURNING id

-- name: next_due_at
SELECT next_attempt_at FROM accounts
WHERE state = 'active'
  AND NOT EXISTS (SELECT 1 FROM provider_pauses p
                  WHERE p.provider = accounts.provider AND p.paused_until > ?1)
ORDER BY next_attempt_at
LIMIT 1

-- name: count_due
SELECT count(*) FROM accounts
WHERE state = 'active'
  AND next_attempt_at <= ?1
  AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)
  AND (access_expires_at <= ?2 OR last_refresh_at IS NULL OR last_refresh_at <= ?3)
  AND NOT EXISTS (SELECT 1 FROM provider_pauses p
                  WHERE p.provider = accounts.provider AND p.paused_until > ?1)

-- name: pause_provider
INSERT INTO provider_pauses (provider, paused_until, reason) VALUES (?1, ?2, ?3)
ON CONFLICT (provider) DO UPDATE SET paused_until = excluded.paused_until,
                                     reason = excluded.reason

-- name: paused_providers
SELECT provider, paused_until FROM provider_pauses WHERE paused_until > ?1

-- name: insert_attempt
INSERT INTO refresh_log (account_id, source, started_at, finished_at, success, error_code,
                         error_message)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)

-- name: insert_entry
INSERT INTO http_log (created_at, action, source, account_id, org_id, provider,
                      environment, duration_ms, request, response, error, message, details)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
RETURNING id

-- name: list_entries_before
SELECT * FROM http_log
WHERE (?1 IS NULL OR source IN (SELECT value FROM json_each(?1)))
  AND (?2 IS NULL OR action = ?2)
  AND (?3 IS NULL OR account_id = ?3)
  AND (?4 IS NULL OR org_id = ?4)
  AND (?5 IS NULL OR id < ?5)
ORDER BY id DESC
LIMIT ?6

-- name: list_entries_after
SELECT * FROM http_log
WHERE (?1 IS NULL OR source IN (SELECT value FROM json_each(?1)))
  AND (?2 IS NULL OR action = ?2)
  AND (?3 IS NULL OR account_id = ?3)
  AND (?4 IS NULL OR org_id = ?4)
  AND id > ?5
ORDER BY id
LIMIT ?6

-- name: get_entries
SELECT * FROM http_log WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id

-- name: list_attempts
SELECT account_id, source, started_at, finished_at, success, error_code, error_message
FROM refresh_log WHERE account_id = ?1 ORDER BY id DESC LIMIT ?2

-- name: worker_started
INSERT INTO workers (name, instance, interval_seconds, last_started_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?4)
ON CONFLICT (name, instance) DO UPDATE SET interval_seconds = excluded.interval_seconds,
                                           last_started_at = excluded.last_started_at,
                                           updated_at = excluded.updated_at

-- name: worker_finished
UPDATE workers
SET last_finished_at = ?3, last_status = ?4, last_summary = ?5, updated_at = ?3
WHERE name = ?1 AND instance = ?2

-- name: list_workers
SELECT name, instance, interval_seconds, last_started_at, last_finished_at, last_status,
       last_summary
FROM workers ORDER BY name, instance

-- name: accounts_to_rotate
SELECT * FROM accounts
WHERE (?3 IS NULL OR id > ?3)
  AND (substr(refresh_token, 1, length(?1)) <> ?1
       OR substr(access_token, 1, length(?1)) <> ?1)
ORDER BY id
LIMIT ?2

-- name: replace_secrets
-- Never under a live lease: the lease holder may be about to save a rotated refresh token.
UPDATE accounts
SET refresh_token = ?3, access_token = ?4, version = version + 1
WHERE id = ?1 AND version = ?2
  AND (lease_expires_at IS NULL
       OR lease_expires_at <= (julianday('now') - 2440587.5) * 86400.0)
RETURNING id

-- name: prune_http_log
-- Oldest first by id, a batch at a time, so a long backlog never holds a long lock.
WITH old AS (SELECT id FROM http_log WHERE created_at < ?1 ORDER BY id LIMIT ?2)
DELETE FROM http_log WHERE id IN (SELECT id FROM old) RETURNING id

-- name: prune_refresh_log
WITH old AS (SELECT id FROM refresh_log WHERE started_at < ?1 ORDER BY id LIMIT ?2)
DELETE FROM refresh_log WHERE id IN (SELECT id FROM old) RETURNING id
