-- The console's accounts page pages by keyset, (sort key, id), one index per sort key. An
-- absent expiry sorts as 9999-01-01 UTC (the `never` fragment in sql/sqlite/queries.sql).
CREATE INDEX accounts_console_name ON accounts (name, id);
CREATE INDEX accounts_console_next_attempt ON accounts (next_attempt_at, id);
CREATE INDEX accounts_console_failures ON accounts (consecutive_failures, id);
CREATE INDEX accounts_console_access_expiry
    ON accounts (coalesce(access_expires_at, 253370764800.0), id);
CREATE INDEX accounts_console_refresh_expiry
    ON accounts (coalesce(refresh_expires_at, 253370764800.0), id);
CREATE INDEX accounts_console_last_refresh
    ON accounts (coalesce(last_refresh_at, 253370764800.0), id);
-- Today's token-endpoint calls per provider count the day's refresh-log rows.
CREATE INDEX refresh_log_started ON refresh_log (started_at);
-- Filters: an org token's view (and its default sort), the states that need attention.
CREATE INDEX accounts_console_org ON accounts (org, name, id);
CREATE INDEX accounts_console_state ON accounts (state, consecutive_failures);
