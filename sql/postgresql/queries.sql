-- What PostgreSQL says differently from sql/queries.sql.

-- fragment: source_in
source = ANY(CAST(:sources AS text[]))

-- fragment: id_in
id = ANY(CAST(:ids AS bigint[]))

-- fragment: error_without_description
jsonb_set(error, '{description}', 'null')

-- fragment: account_id_in
id = ANY(CAST(:ids AS text[]))

-- name: lock_migrations
-- Held until the migration's transaction ends, so concurrent `tokend migrate` runs take
-- turns (transaction-level: nothing survives on a pooled session).
SELECT pg_advisory_xact_lock(hashtext('tokend migrate'))

-- name: migrations_table_exists
SELECT to_regclass('schema_migrations') IS NOT NULL AS present


-- name: claim_due
-- One statement: pick due rows in scheduling order, skipping rows another claimer holds,
-- and lease them. next_attempt_at moves to the lease expiry, so the rows of an owner that
-- dies come due again when its lease runs out.
WITH due AS (
    SELECT id FROM accounts
    WHERE {{due}}
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE accounts a
SET lease_owner = :owner, lease_expires_at = :lease_until, next_attempt_at = :lease_until,
    version = a.version + 1, updated_at = :now
FROM due
WHERE a.id = due.id
RETURNING a.*

-- name: insert_entries
-- Ids are taken in the rows' order (`n`). The notifications go out on commit, so other
-- replicas' streams see only saved entries.
WITH entry AS (
    INSERT INTO http_log (created_at, action, source, account_id, org_id, provider,
                          environment, duration_ms, request, response, error, message, details)
    SELECT created_at, action, source, account_id, org_id, provider, environment,
           duration_ms, request, response, error, message, details
    FROM ({{entry_rows}}) AS r ORDER BY n
    RETURNING id
)
SELECT id, pg_notify('tokend_entries', id::text) FROM entry

-- Rows of a batch come as one JSON array (the store's `_rows`), timestamps as microseconds
-- since the epoch, so both dialects read exactly the instant that was written.

-- fragment: success_rows
SELECT id, version, owner, access_token, refresh_token,
       timestamptz 'epoch' + access_expires_at * interval '1 microsecond' AS access_expires_at,
       timestamptz 'epoch' + refresh_expires_at * interval '1 microsecond' AS refresh_expires_at,
       timestamptz 'epoch' + refreshed_at * interval '1 microsecond' AS refreshed_at,
       timestamptz 'epoch' + next_attempt_at * interval '1 microsecond' AS next_attempt_at,
       timestamptz 'epoch' + now * interval '1 microsecond' AS now
FROM jsonb_to_recordset(:rows) AS x(id text, version bigint, owner text, access_token text,
                                    refresh_token text, access_expires_at bigint,
                                    refresh_expires_at bigint, refreshed_at bigint,
                                    next_attempt_at bigint, now bigint)

-- fragment: attempt_rows
SELECT account_id, source, success, error_code, error_message, save_id, applied, entry_id,
       timestamptz 'epoch' + started_at * interval '1 microsecond' AS started_at,
       timestamptz 'epoch' + finished_at * interval '1 microsecond' AS finished_at
FROM jsonb_to_recordset(:rows) AS x(account_id text, source text, success boolean,
                                    error_code text, error_message text, save_id text,
                                    applied boolean, entry_id bigint, started_at bigint,
                                    finished_at bigint)

-- fragment: entry_rows
SELECT n, action, source, account_id, org_id, provider, environment, duration_ms, request,
       response, error, message, details,
       timestamptz 'epoch' + created_at * interval '1 microsecond' AS created_at
FROM jsonb_to_recordset(:rows) AS x(n int, action text, source text, account_id text,
                                    org_id text, provider text, environment text,
                                    duration_ms float8, request jsonb, response jsonb,
                                    error jsonb, message text, details jsonb, created_at bigint)

-- fragment: never
-- The console's sort value of an absent expiry (matches the 0006_console indexes).
CAST('9999-01-01 00:00:00+00' AS timestamptz)

-- name: console_custom_plan
-- A console page is planned for its own filters every time: after five runs PostgreSQL may
-- keep one generic plan, and the generic plan of `(:x IS NULL OR col = :x)` cannot use the
-- index the filter needs (an org's first page took 80 ms instead of 2 at 100,000 accounts).
SET LOCAL plan_cache_mode = force_custom_plan

-- -- webhooks --------------------------------------------------------------------------

-- name: insert_event
-- The notification goes out on commit and wakes every replica's delivery task.
WITH event AS (
    INSERT INTO events (type, data, created_at) VALUES (:type, :data, :created_at)
    RETURNING id
)
SELECT id, pg_notify('tokend_events', id::text) FROM event

-- name: dispatch_events
-- Take undispatched events a batch at a time; a replica skips what another is fanning out.
UPDATE events SET dispatched_at = :now
WHERE id IN (SELECT id FROM events WHERE dispatched_at IS NULL
             ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING id, type, data, created_at

-- name: claim_deliveries
-- Like claim_due: due rows of one endpoint, skipping rows another replica holds, leased.
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE endpoint = :endpoint AND state = 'pending' AND next_attempt_at <= :now
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET lease_owner = :owner, lease_expires_at = :lease_until, next_attempt_at = :lease_until
FROM due WHERE d.id = due.id
RETURNING d.*

-- fragment: stale_line
-- A cycle that finished before this is stale: model.STALE_AFTER_INTERVALS intervals ago.
CAST(:now AS timestamptz)
  - interval_seconds * CAST(:stale_after_intervals AS integer) * interval '1 second'

-- name: mark_stale_workers
-- No finished cycle within the stale line (model.Worker.stale), noticed once.
UPDATE workers SET stale_at = :now
WHERE stale_at IS NULL AND last_status IS DISTINCT FROM 'stopped'
  AND coalesce(last_finished_at, last_started_at) < {{stale_line}}
RETURNING name, instance, last_finished_at

-- -- the daily budget --------------------------------------------------------------------

-- fragment: provider_reserved
(provider = ANY(CAST(:reserved AS text[])))

-- fragment: demanded
-- Not idle: the provider is not demand-aware, or an app had a token recently enough.
(NOT (provider = ANY(CAST(:idle_providers AS text[])))
 OR coalesce(last_vended_at, created_at) >= CAST(:now AS timestamptz)
    - (SELECT c.seconds FROM unnest(CAST(:idle_providers AS text[]),
                                    CAST(:idle_seconds AS double precision[]))
                             AS c(provider, seconds)
       WHERE c.provider = accounts.provider) * interval '1 second')

-- fragment: by_refresh_expiry
-- Nothing: the planner has statistics and picks accounts_refresh_expiry by itself.
