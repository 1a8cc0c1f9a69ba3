-- Every statement tokend runs, by name, in SQL both backends speak. Parameters are named
-- (:name); a statement that really differs between dialects is defined in
-- sql/<backend>/queries.sql instead, and a `{{fragment}}` is spliced in where it is named.
-- Timestamps are timestamptz on PostgreSQL and REAL UTC epoch seconds on SQLite; lists
-- and objects are arrays/jsonb on PostgreSQL and JSON text on SQLite (the connector's codec).

-- fragment: due
-- The due rule, written once: active, its time has come, not leased, not paused, and the
-- access token expires soon or the last refresh is old (or there was none). A provider past
-- its daily budget's reserve line (:reserved) refreshes only healthy accounts whose access
-- token is about to expire. With demand-aware scheduling (:idle_providers, :idle_seconds)
-- an account no app has had a token of for that long is refreshed only when one asks. The expiry test
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
  AND (NOT {{provider_reserved}}
       OR (consecutive_failures = 0
           AND coalesce(access_expires_at, :far_future) <= :expiring_before))
  AND {{demanded}}

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

-- name: get_accounts
SELECT * FROM accounts WHERE {{account_id_in}}

-- name: account_versions
-- Every write that matters to a reader of the row bumps `version`: whether a kept copy of
-- the row is still current costs two small columns, not the row.
SELECT id, version FROM accounts WHERE {{account_id_in}}

-- name: list_accounts
SELECT * FROM accounts
WHERE CAST(:org AS text) IS NULL OR org = :org
ORDER BY org, provider, name

-- name: reauth_account
UPDATE accounts
SET refresh_token = :refresh_token, refresh_expires_at = :refresh_expires_at,
    state = 'active', refresh_expiry_notice_days = NULL,
    consecutive_failures = 0, last_error = NULL, next_attempt_at = :now,
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
-- `org` NULL: every org's.
SELECT provider, count(*) AS n FROM accounts
WHERE state = 'active' AND (CAST(:org AS text) IS NULL OR org = :org)
GROUP BY provider

-- name: claim_account
UPDATE accounts
SET lease_owner = :owner, lease_expires_at = :lease_until, next_attempt_at = :lease_until,
    version = version + 1, updated_at = :now
WHERE id = :id AND state = 'active'
  AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
RETURNING *

-- name: claim_account_version
-- A claim of the row exactly as it was read: a decision taken on that row (an app's
-- rejected-token report) holds only while nothing has changed it since.
UPDATE accounts
SET lease_owner = :owner, lease_expires_at = :lease_until, next_attempt_at = :lease_until,
    version = version + 1, updated_at = :now
WHERE id = :id AND version = :version AND state = 'active'
  AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
RETURNING *

-- name: release_claim
-- The rows of a claim whose answer never came (the connection died after its commit): only
-- that claim leased rows to this owner until this instant. Due again at once.
UPDATE accounts
SET lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = :now,
    version = version + 1, updated_at = :now
WHERE lease_owner = :owner AND lease_expires_at = :lease_until
RETURNING id

-- name: finish_successes
-- A batch of saves in one statement (rows: see the dialect's `success_rows`); each row keeps
-- its own guard, the version it claimed and its lease.
UPDATE accounts
SET access_token = r.access_token, access_expires_at = r.access_expires_at,
    refresh_token = coalesce(r.refresh_token, accounts.refresh_token),
    refresh_expires_at = coalesce(r.refresh_expires_at, accounts.refresh_expires_at),
    last_refresh_at = r.refreshed_at, consecutive_failures = 0, last_error = NULL,
    state_reason = NULL, next_attempt_at = r.next_attempt_at,
    lease_owner = NULL, lease_expires_at = NULL, version = accounts.version + 1,
    updated_at = r.now
FROM ({{success_rows}}) AS r
WHERE accounts.id = r.id AND accounts.version = r.version AND accounts.lease_owner = r.owner
RETURNING accounts.id

-- name: finish_failure
UPDATE accounts
SET consecutive_failures = consecutive_failures + 1, last_error = :error_code,
    next_attempt_at = :next_attempt_at, state = coalesce(:state, state),
    state_reason = CASE WHEN CAST(:state AS text) IS NULL THEN state_reason
                        ELSE :error_code END,
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
                                     reason = excluded.reason, resumed_at = NULL

-- name: paused_providers
SELECT provider, paused_until FROM provider_pauses WHERE paused_until > :now

-- name: insert_attempts
INSERT INTO refresh_log (account_id, source, started_at, finished_at, success, error_code,
                         error_message, save_id, applied, entry_id)
SELECT account_id, source, started_at, finished_at, success, error_code, error_message,
       save_id, applied, entry_id
FROM ({{attempt_rows}}) AS r

-- name: saved_attempt
-- Whether a save committed, and what it did (a retry asks before it writes again).
SELECT applied, entry_id FROM refresh_log WHERE save_id = :save_id

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

-- name: mark_recovered_workers
-- A stale worker finished a cycle again (the stale line, `stale_line`, is each dialect's).
UPDATE workers SET stale_at = NULL
WHERE stale_at IS NOT NULL
  AND coalesce(last_finished_at, last_started_at) >= {{stale_line}}
RETURNING name, instance, last_finished_at

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

-- name: app_tokens_to_rotate
-- The application-token cache: a row per provider and scope set, so a handful.
SELECT * FROM app_tokens WHERE substr(access_token, 1, length(:prefix)) <> :prefix ORDER BY id

-- name: reseal_app_token
-- Only if unchanged since it was read: a renewal meanwhile wrote a newer token.
UPDATE app_tokens SET access_token = :sealed WHERE id = :id AND access_token = :old
RETURNING id

-- name: connect_links_to_rotate
SELECT * FROM connect_links WHERE substr(code_verifier, 1, length(:prefix)) <> :prefix
ORDER BY id

-- name: reseal_code_verifier
UPDATE connect_links SET code_verifier = :sealed WHERE id = :id AND code_verifier = :old
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
SELECT account_id, source, started_at, finished_at, success, error_code, error_message,
       save_id
FROM refresh_log WHERE account_id = :account_id ORDER BY id DESC LIMIT :limit

-- name: list_events
SELECT id, type, data, created_at FROM events
WHERE id > :after_id ORDER BY id LIMIT :limit

-- name: failing_counts
-- Active accounts whose last attempts failed, by the last error's code.
SELECT coalesce(last_error, 'error') AS error_code, count(*) AS n FROM accounts
WHERE state = 'active' AND consecutive_failures > 0 GROUP BY coalesce(last_error, 'error')

-- -- application tokens and eBay notifications ------------------------------------------

-- name: get_app_token
SELECT * FROM app_tokens WHERE id = :id

-- name: claim_app_token
-- The row is created on first use; the lease is taken only when nobody else holds it.
INSERT INTO app_tokens (id, provider, scope, lease_owner, lease_expires_at, updated_at)
VALUES (:id, :provider, :scope, :owner, :lease_until, :now)
ON CONFLICT (id) DO UPDATE SET lease_owner = excluded.lease_owner,
                               lease_expires_at = excluded.lease_expires_at,
                               updated_at = excluded.updated_at
WHERE app_tokens.lease_expires_at IS NULL OR app_tokens.lease_expires_at <= :now
RETURNING *

-- name: finish_app_token
-- A new token (or none, after a failure) and the lease released, only by its holder.
UPDATE app_tokens
SET access_token = coalesce(:access_token, access_token),
    expires_at = coalesce(:expires_at, expires_at),
    issued_at = CASE WHEN CAST(:access_token AS text) IS NULL THEN issued_at ELSE :now END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id AND lease_owner = :owner
RETURNING id

-- name: record_ebay_notification
-- The first delivery of a notificationId wins; a replay inserts nothing and changes nothing.
INSERT INTO ebay_notifications (notification_id, topic, provider, outcome, account_ids,
                                received_at)
VALUES (:notification_id, :topic, :provider, 'received', :account_ids, :now)
ON CONFLICT (notification_id) DO NOTHING
RETURNING notification_id

-- name: finish_ebay_notification
UPDATE ebay_notifications SET outcome = :outcome, account_ids = :account_ids
WHERE notification_id = :notification_id

-- name: prune_connect_links
-- A link lives 15 minutes and its sign-in 15 more: past the log retention it is history.
WITH old AS (SELECT id FROM connect_links WHERE created_at < :before ORDER BY created_at
             LIMIT :limit)
DELETE FROM connect_links WHERE id IN (SELECT id FROM old) RETURNING id

-- name: prune_ebay_notifications
WITH old AS (SELECT notification_id FROM ebay_notifications WHERE received_at < :before
             ORDER BY received_at LIMIT :limit)
DELETE FROM ebay_notifications WHERE notification_id IN (SELECT notification_id FROM old)
RETURNING notification_id

-- name: accounts_of_provider_user
SELECT * FROM accounts
WHERE provider = :provider AND provider_user_id = :provider_user_id
ORDER BY id

-- name: purge_account
-- eBay's account deletion: tokens and personal fields gone, the row kept as a tombstone
-- under its own id, and any lease void (a refresh in flight finds the version moved on).
UPDATE accounts
SET refresh_token = NULL, access_token = NULL, access_expires_at = NULL,
    refresh_expires_at = NULL, provider_user_id = NULL, provider_user_name = NULL,
    name = '(deleted) ' || id, state = 'deleted', state_reason = :reason, last_error = NULL,
    lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = :now
WHERE id = :id
RETURNING *

-- name: purge_account_entries
-- What the HTTP log kept of a deleted seller's exchanges (identity answers carry the
-- username) goes too; the entries' ids, times, actions and errors stay for the audit.
UPDATE http_log
SET request = NULL, response = NULL, details = NULL,
    message = CASE WHEN source = 'connect' THEN NULL ELSE message END
WHERE account_id = :account_id
RETURNING id

-- name: forget_provider_user_links
-- eBay's account deletion: the links the seller signed in through go, whatever became of
-- them (connected, refused as already connected, a different user on a reconnect).
DELETE FROM connect_links WHERE provider = :provider AND provider_user_id = :provider_user_id
RETURNING id

-- name: purge_link_entries
-- The connect flow's entries of one such link name the seller before any account exists
-- (the identity answer, "signed in as", "already connected"): emptied like
-- purge_account_entries, their error keeping its code but not its description.
UPDATE http_log
SET request = NULL, response = NULL, details = NULL, message = NULL,
    error = {{error_without_description}}
WHERE source = 'connect' AND details ->> 'link_id' = :link_id
RETURNING id

-- name: revoke_account
UPDATE accounts
SET state = 'reauth_required', state_reason = :reason, lease_owner = NULL,
    lease_expires_at = NULL, version = version + 1, updated_at = :now
WHERE id = :id AND state <> 'deleted'
RETURNING *

-- name: set_provider_user
UPDATE accounts
SET provider_user_id = :provider_user_id, provider_user_name = :provider_user_name,
    version = version + 1, updated_at = :now
WHERE id = :id
RETURNING *

-- Connect and reconnect (the authorization-code grant) ---------------------------------

-- name: insert_connect_link
INSERT INTO connect_links (id, token_hash, provider, org, account_id, scopes, created_at,
                           expires_at)
VALUES (:id, :token_hash, :provider, :org, :account_id, :scopes, :now, :expires_at)
RETURNING *

-- name: open_connect_link
-- The link works once and only until it expires; opening it binds a fresh state to it.
UPDATE connect_links
SET opened_at = :now, state_hash = :state_hash, code_verifier = :code_verifier,
    state_expires_at = :state_expires_at
WHERE token_hash = :token_hash AND opened_at IS NULL AND expires_at > :now
RETURNING *

-- name: consume_connect_state
-- The state works once: whoever comes back first with it takes it, whatever follows.
UPDATE connect_links SET finished_at = :now, outcome = 'exchanging'
WHERE state_hash = :state_hash AND finished_at IS NULL AND state_expires_at > :now
RETURNING *

-- name: find_connect_link
SELECT * FROM connect_links
WHERE (CAST(:state_hash AS text) IS NOT NULL AND state_hash = :state_hash)
   OR (CAST(:token_hash AS text) IS NOT NULL AND token_hash = :token_hash)

-- name: set_connect_outcome
UPDATE connect_links SET outcome = :outcome WHERE id = :id

-- name: set_connect_user
UPDATE connect_links SET provider_user_id = :provider_user_id WHERE id = :id

-- name: insert_connected_account
INSERT INTO accounts (id, org, provider, name, scopes, refresh_token, refresh_expires_at,
                      access_token, access_expires_at, last_refresh_at, provider_user_id,
                      provider_user_name, next_attempt_at, created_at, updated_at)
VALUES (:id, :org, :provider, :name, :scopes, :refresh_token, :refresh_expires_at,
        :access_token, :access_expires_at, :now, :provider_user_id, :provider_user_name,
        :next_attempt_at, :now, :now)
RETURNING *

-- name: reconnect_account
-- Same id, fresh tokens, back to active; refused (no row) for a deleted account or when
-- another user of the provider signed in.
UPDATE accounts
SET refresh_token = :refresh_token, refresh_expires_at = :refresh_expires_at,
    access_token = :access_token, access_expires_at = :access_expires_at,
    last_refresh_at = :now, scopes = :scopes,
    provider_user_id = coalesce(:provider_user_id, provider_user_id),
    provider_user_name = coalesce(:provider_user_name, provider_user_name),
    state = 'active', state_reason = NULL, consecutive_failures = 0, last_error = NULL,
    refresh_expiry_notice_days = NULL, next_attempt_at = :next_attempt_at,
    lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = :now
WHERE id = :id AND state <> 'deleted'
  AND (provider_user_id IS NULL OR CAST(:provider_user_id AS text) IS NULL
       OR provider_user_id = :provider_user_id)
RETURNING *

-- Refresh-token expiry (each one indexed statement per cycle: accounts_refresh_expiry) --

-- fragment: notice_due
CASE WHEN refresh_expires_at <= :within_1 THEN 1
     WHEN refresh_expires_at <= :within_7 THEN 7
     ELSE 30 END

-- name: expire_refresh_tokens
UPDATE accounts {{by_refresh_expiry}}
SET state = 'reauth_required', state_reason = 'refresh_token_expired',
    last_error = 'refresh_token_expired', lease_owner = NULL, lease_expires_at = NULL,
    version = version + 1, updated_at = :now
WHERE state = 'active' AND refresh_expires_at IS NOT NULL AND refresh_expires_at <= :now
RETURNING *

-- name: note_refresh_expiry
-- The account crossed a notice threshold (30, 7 or 1 days) it has not been told about.
UPDATE accounts {{by_refresh_expiry}}
SET refresh_expiry_notice_days = {{notice_due}}, updated_at = :now
WHERE state = 'active' AND refresh_expires_at IS NOT NULL
  AND refresh_expires_at > :now AND refresh_expires_at <= :within_30
  AND coalesce(refresh_expiry_notice_days, 2147483647) > {{notice_due}}
RETURNING *

-- name: refresh_expiry_counts
SELECT coalesce(sum(CASE WHEN refresh_expires_at <= :within_1 THEN 1 ELSE 0 END), 0)
           AS within_1,
       coalesce(sum(CASE WHEN refresh_expires_at <= :within_7 THEN 1 ELSE 0 END), 0)
           AS within_7,
       count(*) AS within_30
FROM accounts {{by_refresh_expiry}}
WHERE state = 'active' AND refresh_expires_at IS NOT NULL AND refresh_expires_at <= :within_30

-- -- console: the accounts page, operator actions, provider overview ------------------
-- fragment: console_filter
-- The console's filters. `failing` is an active account with failures, so the filter is
-- a state plus a failure range; an absent filter is a NULL parameter; `pattern` is a
-- lower-case prefix (`abc%`), answered on PostgreSQL by the text_pattern_ops indexes.
(CAST(:org AS text) IS NULL OR org = :org)
  AND (CAST(:provider AS text) IS NULL OR provider = :provider)
  AND (CAST(:state AS text) IS NULL OR state = :state)
  AND consecutive_failures BETWEEN :min_failures AND :max_failures
  AND (CAST(:pattern AS text) IS NULL OR lower(id) LIKE :pattern ESCAPE '\'
       OR lower(name) LIKE :pattern ESCAPE '\'
       OR lower(provider_user_name) LIKE :pattern ESCAPE '\')

-- fragment: console_page
-- Keyset paging: every sort key is (key, id), with NULL expiries read as `never` so the
-- comparison is total; each key has its index (migration 0006_console).
SELECT * FROM accounts WHERE {{console_filter}}

-- name: console_page_name_asc
{{console_page}} AND (CAST(:after_id AS text) IS NULL OR (name, id) > (:after_key, :after_id))
ORDER BY name, id LIMIT :limit

-- name: console_page_name_desc
{{console_page}} AND (CAST(:after_id AS text) IS NULL OR (name, id) < (:after_key, :after_id))
ORDER BY name DESC, id DESC LIMIT :limit

-- name: console_page_next_attempt_asc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL OR (next_attempt_at, id) > (:after_key, :after_id))
ORDER BY next_attempt_at, id LIMIT :limit

-- name: console_page_next_attempt_desc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL OR (next_attempt_at, id) < (:after_key, :after_id))
ORDER BY next_attempt_at DESC, id DESC LIMIT :limit

-- name: console_page_failures_asc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL OR (consecutive_failures, id) > (:after_key, :after_id))
ORDER BY consecutive_failures, id LIMIT :limit

-- name: console_page_failures_desc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL OR (consecutive_failures, id) < (:after_key, :after_id))
ORDER BY consecutive_failures DESC, id DESC LIMIT :limit

-- name: console_page_access_expiry_asc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL
       OR (coalesce(access_expires_at, {{never}}), id) > (:after_key, :after_id))
ORDER BY coalesce(access_expires_at, {{never}}), id LIMIT :limit

-- name: console_page_access_expiry_desc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL
       OR (coalesce(access_expires_at, {{never}}), id) < (:after_key, :after_id))
ORDER BY coalesce(access_expires_at, {{never}}) DESC, id DESC LIMIT :limit

-- name: console_page_refresh_expiry_asc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL
       OR (coalesce(refresh_expires_at, {{never}}), id) > (:after_key, :after_id))
ORDER BY coalesce(refresh_expires_at, {{never}}), id LIMIT :limit

-- name: console_page_refresh_expiry_desc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL
       OR (coalesce(refresh_expires_at, {{never}}), id) < (:after_key, :after_id))
ORDER BY coalesce(refresh_expires_at, {{never}}) DESC, id DESC LIMIT :limit

-- name: console_page_last_refresh_asc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL
       OR (coalesce(last_refresh_at, {{never}}), id) > (:after_key, :after_id))
ORDER BY coalesce(last_refresh_at, {{never}}), id LIMIT :limit

-- name: console_page_last_refresh_desc
{{console_page}}
  AND (CAST(:after_id AS text) IS NULL
       OR (coalesce(last_refresh_at, {{never}}), id) < (:after_key, :after_id))
ORDER BY coalesce(last_refresh_at, {{never}}) DESC, id DESC LIMIT :limit

-- name: disable_account
-- A lease in flight loses its save (the version moves), so a disabled account stays so.
UPDATE accounts
SET state = 'disabled', state_reason = :reason, lease_owner = NULL, lease_expires_at = NULL,
    version = version + 1, updated_at = :now
WHERE id = :id AND state IN ('active', 'reauth_required', 'disabled')
RETURNING *

-- name: enable_account
UPDATE accounts
SET state = 'active', state_reason = NULL, next_attempt_at = :now,
    version = version + 1, updated_at = :now
WHERE id = :id AND state = 'disabled'
RETURNING *

-- name: clear_backoff
UPDATE accounts SET next_attempt_at = :now, version = version + 1, updated_at = :now
WHERE id = :id AND state = 'active'
  AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
RETURNING *

-- name: provider_pauses
SELECT provider, paused_until, reason FROM provider_pauses WHERE paused_until > :now

-- name: failing_by_error
SELECT provider, coalesce(last_error, 'unknown') AS error_code, count(*) AS n
FROM accounts
WHERE consecutive_failures > 0 AND state <> 'deleted'
  AND (CAST(:org AS text) IS NULL OR org = :org)
GROUP BY provider, coalesce(last_error, 'unknown')

-- -- webhooks: delivery of the outbox (tokend/webhooks.py) ---------------------------------

-- name: insert_delivery
INSERT INTO webhook_deliveries (event_id, endpoint, type, data, event_at, next_attempt_at,
                                created_at)
VALUES (:event_id, :endpoint, :type, :data, :event_at, :now, :now)
ON CONFLICT (event_id, endpoint) DO NOTHING

-- name: finish_delivery
-- Only while the lease is still ours: after a lease ran out somebody else owns the row.
UPDATE webhook_deliveries
SET state = :state, attempts = attempts + 1, next_attempt_at = :next_attempt_at,
    last_status = :status, last_error = :error, lease_owner = NULL, lease_expires_at = NULL,
    finished_at = :finished_at
WHERE id = :id AND lease_owner = :owner
RETURNING id

-- name: list_deliveries
SELECT * FROM webhook_deliveries
WHERE (CAST(:endpoint AS text) IS NULL OR endpoint = :endpoint)
  AND (CAST(:state AS text) IS NULL OR state = :state)
  AND (CAST(:type AS text) IS NULL OR type = :type)
  AND (CAST(:event_id AS bigint) IS NULL OR event_id = :event_id)
  AND (CAST(:before_id AS bigint) IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit

-- name: delivery_counts
SELECT endpoint, state, count(*) AS n FROM webhook_deliveries GROUP BY endpoint, state

-- name: prune_deliveries
WITH old AS (SELECT id FROM webhook_deliveries
             WHERE state <> 'pending' AND finished_at < :before ORDER BY id LIMIT :limit)
DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM old) RETURNING id

-- name: prune_events
WITH old AS (SELECT id FROM events WHERE dispatched_at < :before ORDER BY id LIMIT :limit)
DELETE FROM events WHERE id IN (SELECT id FROM old) RETURNING id

-- name: resume_providers
-- A pause whose time ran out, once: the row lock makes a second replica see resumed_at set.
UPDATE provider_pauses SET resumed_at = :now
WHERE paused_until <= :now AND resumed_at IS NULL
RETURNING provider, reason

-- name: clear_provider_pause
UPDATE provider_pauses SET paused_until = :now, resumed_at = :now
WHERE provider = :provider AND paused_until > :now AND resumed_at IS NULL
RETURNING provider, reason

-- -- the daily budget (tokend/budget.py) ------------------------------------------------

-- name: count_token_calls
INSERT INTO token_calls (provider, grant_type, day, calls)
VALUES (:provider, :grant_type, :day, :calls)
ON CONFLICT (provider, grant_type, day) DO UPDATE SET calls = token_calls.calls + excluded.calls
RETURNING calls

-- name: budget_usage
SELECT provider, grant_type, calls FROM token_calls WHERE day = :day

-- name: record_budget_warning
INSERT INTO budget_warnings (provider, day, created_at) VALUES (:provider, :day, :now)
ON CONFLICT (provider, day) DO NOTHING
RETURNING provider

-- name: provider_paused_until
SELECT paused_until FROM provider_pauses WHERE provider = :provider

-- name: touch_vended
-- A parked account (idle, see park_idle_accounts) is back on the schedule.
UPDATE accounts
SET last_vended_at = :now,
    next_attempt_at = CASE WHEN next_attempt_at = :parked THEN :now ELSE next_attempt_at END
WHERE id = :id

-- name: park_idle_accounts
-- Idle accounts that came due are moved out of the way (next_attempt_at = :parked), so the
-- due rule's index walk does not step over every one of them on every claim.
UPDATE accounts SET next_attempt_at = :parked
WHERE state = 'active' AND next_attempt_at <= :now
  AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
  AND NOT {{demanded}}

-- name: demand_split
-- Active accounts per provider, and how many of them the schedule refreshes (not idle).
SELECT provider, count(*) AS n, sum(CASE WHEN {{demanded}} THEN 1 ELSE 0 END) AS scheduled
FROM accounts WHERE state = 'active' AND (CAST(:org AS text) IS NULL OR org = :org)
GROUP BY provider

-- Scale (PgBouncer): the stream polls for new entry ids when it cannot LISTEN.

-- name: latest_entry_id
SELECT max(id) AS id FROM http_log

-- name: entry_ids_after
SELECT id FROM http_log WHERE id > :after_id ORDER BY id LIMIT :limit

-- eBay signing keys (tokend/store/signing_keys.py).

-- name: insert_signing_key
INSERT INTO signing_keys (id, provider, cipher, private_key, public_key, jwe, created_at,
                          expires_at, activated_at, stored_at)
VALUES (:id, :provider, :cipher, :private_key, :public_key, :jwe, :created_at, :expires_at,
        :activated_at, :now)
RETURNING *

-- name: list_signing_keys
SELECT * FROM signing_keys WHERE CAST(:provider AS text) IS NULL OR provider = :provider
ORDER BY provider, created_at, id

-- name: signing_key_in_use
-- The newest activated key of the provider: replicas agree on it without talking.
SELECT * FROM signing_keys WHERE provider = :provider AND activated_at IS NOT NULL
ORDER BY activated_at DESC, id DESC LIMIT 1

-- name: claim_signing_key_renewal
-- Only while this key is still the one in use and nobody else is renewing it.
UPDATE signing_keys SET renewal_owner = :owner, renewal_until = :until
WHERE id = :id AND (renewal_until IS NULL OR renewal_until <= :now)
  AND id = (SELECT id FROM signing_keys WHERE provider = :provider
            AND activated_at IS NOT NULL ORDER BY activated_at DESC, id DESC LIMIT 1)
RETURNING id

-- name: release_signing_key_renewal
UPDATE signing_keys SET renewal_owner = NULL, renewal_until = NULL
WHERE id = :id AND renewal_owner = :owner
RETURNING id

-- name: signing_keys_to_rotate
SELECT * FROM signing_keys WHERE substr(private_key, 1, length(:prefix)) <> :prefix
ORDER BY id

-- name: reseal_signing_key
UPDATE signing_keys SET private_key = :sealed WHERE id = :id AND private_key = :old
RETURNING id
