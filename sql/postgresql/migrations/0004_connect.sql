-- Connect links (the authorization-code grant): a one-time link, then the `state` it hands
-- the provider. Only hashes of the link token and of the state are kept, and the PKCE
-- verifier is an ENC:v1 envelope bound to the link id: a copy of this table opens nothing.

CREATE TABLE connect_links (
    id text PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,
    provider text NOT NULL,
    org text NOT NULL,
    account_id text,                -- a reconnect keeps this account's id
    scopes text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    opened_at timestamptz,          -- the link works once
    state_hash text UNIQUE,         -- set when the link is opened
    code_verifier text CHECK (substr(code_verifier, 1, 7) = 'ENC:v1:'),
    state_expires_at timestamptz,
    finished_at timestamptz,        -- the state works once
    outcome text
);

-- Refresh-token expiry: the loop finds expired and expiring accounts through this index.
CREATE INDEX accounts_refresh_expiry ON accounts (refresh_expires_at)
    WHERE state = 'active' AND refresh_expires_at IS NOT NULL;
