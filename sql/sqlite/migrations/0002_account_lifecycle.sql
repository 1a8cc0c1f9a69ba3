-- The account lifecycle: who the account is at the provider, why it left `active`, which
-- refresh-token expiry notice it has had, and a `deleted` tombstone whose tokens are gone.
-- SQLite cannot alter a CHECK, so the table is rebuilt (foreign keys are off while a
-- migration runs; see the connector).

CREATE TABLE accounts_new (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'reauth_required', 'disabled', 'deleted')),
    refresh_token TEXT CHECK (substr(refresh_token, 1, 7) = 'ENC:v1:'),
    access_token TEXT CHECK (substr(access_token, 1, 7) = 'ENC:v1:'),
    access_expires_at REAL,
    refresh_expires_at REAL,
    last_refresh_at REAL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_expires_at REAL,
    version INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    provider_user_id TEXT,
    provider_user_name TEXT,
    state_reason TEXT,
    refresh_expiry_notice_days INTEGER,
    UNIQUE (provider, org, name),
    -- Only a deleted account may be without a refresh token.
    CHECK (refresh_token IS NOT NULL OR state = 'deleted')
);

INSERT INTO accounts_new (id, org, provider, name, scopes, state, refresh_token, access_token,
                          access_expires_at, refresh_expires_at, last_refresh_at,
                          consecutive_failures, next_attempt_at, lease_owner, lease_expires_at,
                          version, last_error, created_at, updated_at)
SELECT id, org, provider, name, scopes, state, refresh_token, access_token, access_expires_at,
       refresh_expires_at, last_refresh_at, consecutive_failures, next_attempt_at, lease_owner,
       lease_expires_at, version, last_error, created_at, updated_at
FROM accounts;

DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;

CREATE INDEX accounts_due ON accounts (next_attempt_at) WHERE state = 'active';
CREATE INDEX accounts_provider_user ON accounts (provider, provider_user_id)
    WHERE provider_user_id IS NOT NULL;
