-- Connect links (the authorization-code grant): a one-time link, then the `state` it hands
-- the provider. Only hashes of the link token and of the state are kept, and the PKCE
-- verifier is an ENC:v1 envelope bound to the link id: a copy of this table opens nothing.

CREATE TABLE connect_links (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    org TEXT NOT NULL,
    account_id TEXT,                -- a reconnect keeps this account's id
    scopes TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    opened_at REAL,                 -- the link works once
    state_hash TEXT UNIQUE,         -- set when the link is opened
    code_verifier TEXT CHECK (substr(code_verifier, 1, 7) = 'ENC:v1:'),
    state_expires_at REAL,
    finished_at REAL,               -- the state works once
    outcome TEXT
);

-- Refresh-token expiry: the loop finds expired and expiring accounts through this index.
CREATE INDEX accounts_refresh_expiry ON accounts (refresh_expires_at)
    WHERE state = 'active' AND refresh_expires_at IS NOT NULL;
