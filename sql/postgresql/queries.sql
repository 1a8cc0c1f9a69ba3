-- What PostgreSQL says differently from sql/queries.sql.

-- fragment: source_in
source = ANY(CAST(:sources AS text[]))

-- fragment: id_in
id = ANY(CAST(:ids AS bigint[]))

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

-- name: insert_entry
-- The notification goes out on commit, so other replicas' streams see only saved entries.
WITH entry AS (
    INSERT INTO http_log (created_at, action, source, account_id, org_id, provider,
                          environment, duration_ms, request, response, error, message, details)
    VALUES (:created_at, :action, :source, :account_id, :org_id, :provider, :environment,
            :duration_ms, :request, :response, :error, :message, :details)
    RETURNING id
)
SELECT id, pg_notify('tokend_entries', id::text) FROM entry

-- fragment: never
-- The console's sort value of an absent expiry (matches the 0006_console indexes).
CAST('9999-01-01 00:00:00+00' AS timestamptz)

-- name: console_custom_plan
-- A console page is planned for its own filters every time: after five runs PostgreSQL may
-- keep one generic plan, and the generic plan of `(:x IS NULL OR col = :x)` cannot use the
-- index the filter needs (an org's first page took 80 ms instead of 2 at 100,000 accounts).
SET LOCAL plan_cache_mode = force_custom_plan
