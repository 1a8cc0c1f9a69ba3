-- tokend schema, SQLite. Timestamps are REAL UTC epoch seconds, JSON is TEXT.
-- Secrets are ENC:v1 envelopes; a CHECK keeps plaintext out.

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'reauth_required', 'disabled')),
    refresh_token TEXT NOT NULL CHECK (substr(refresh_token, 1, 7) = 'ENC:v1:'),
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
    UNIQUE (provider, org, name)
);

-- The scheduling key: due selection reads only the active rows whose time has come.
CREATE INDEX accounts_due ON accounts (next_attempt_at) WHERE state = 'active';

CREATE TABLE refresh_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    success INTEGER NOT NULL,
    error_code TEXT,
    error_message TEXT
);

CREATE INDEX refresh_log_account ON refresh_log (account_id, id);

-- AUTOINCREMENT: ids never come back after a delete, so a reader's "after id" stays true.
CREATE TABLE http_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    account_id TEXT,
    org_id TEXT,
    provider TEXT,
    environment TEXT,
    duration_ms REAL,
    request TEXT,
    response TEXT,
    error TEXT,
    message TEXT,
    details TEXT
);

CREATE INDEX http_log_account ON http_log (account_id, id);
CREATE INDEX http_log_source ON http_log (source, id);
CREATE INDEX http_log_org ON http_log (org_id, id);

CREATE TABLE workers (
    name TEXT NOT NULL,
    instance TEXT NOT NULL,
    interval_seconds REAL NOT NULL,
    last_started_at REAL,
    last_finished_at REAL,
    last_status TEXT,
    last_summary TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (name, instance)
);

CREATE TABLE provider_pauses (
    provider TEXT PRIMARY KEY,
    paused_until REAL NOT NULL,
    reason TEXT NOT NULL
);
