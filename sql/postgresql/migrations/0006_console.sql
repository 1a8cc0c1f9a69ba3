-- The console's accounts page pages by keyset, (sort key, id), one index per sort key so a
-- page is one index range scan at any depth. An absent expiry sorts as 9999-01-01 (the
-- `never` fragment in sql/postgresql/queries.sql; the expressions must match it).
CREATE INDEX accounts_console_name ON accounts (name, id);
CREATE INDEX accounts_console_next_attempt ON accounts (next_attempt_at, id);
CREATE INDEX accounts_console_failures ON accounts (consecutive_failures, id);
CREATE INDEX accounts_console_access_expiry
    ON accounts ((coalesce(access_expires_at, CAST('9999-01-01 00:00:00+00' AS timestamptz))), id);
CREATE INDEX accounts_console_refresh_expiry
    ON accounts ((coalesce(refresh_expires_at, CAST('9999-01-01 00:00:00+00' AS timestamptz))), id);
CREATE INDEX accounts_console_last_refresh
    ON accounts ((coalesce(last_refresh_at, CAST('9999-01-01 00:00:00+00' AS timestamptz))), id);
-- Today's token-endpoint calls per provider count the day's refresh-log rows.
CREATE INDEX refresh_log_started ON refresh_log (started_at);
-- Filters: an org token's view (and its default sort), the states that need attention, and
-- the search, a case-blind prefix of the id, the name or the provider's user name.
CREATE INDEX accounts_console_org ON accounts (org, name, id);
CREATE INDEX accounts_console_state ON accounts (state, consecutive_failures);
CREATE INDEX accounts_console_search_id ON accounts (lower(id) text_pattern_ops);
CREATE INDEX accounts_console_search_name ON accounts (lower(name) text_pattern_ops);
CREATE INDEX accounts_console_search_user ON accounts (lower(provider_user_name) text_pattern_ops);
