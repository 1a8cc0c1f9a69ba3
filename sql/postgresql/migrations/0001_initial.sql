-- tokend schema, PostgreSQL. Secrets are ENC:v1 envelopes; a CHECK keeps plaintext out.

CREATE TABLE accounts (
    id text PRIMARY KEY,
    org text NOT NULL,
    provider text NOT NULL,
    name text NOT NULL,
    scopes text[] NOT NULL DEFAULT '{}',
    state text NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'reauth_required', 'disabled')),
    refresh_token text NOT NULL CHECK (substr(refresh_token, 1, 7) = 'ENC:v1:'),
    access_token text CHECK (substr(access_token, 1, 7) = 'ENC:v1:'),
    access_expires_at timestamptz,
    refresh_expires_at timestamptz,
    last_refresh_at timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_owner text,
    lease_expires_at timestamptz,
    version bigint NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (provider, org, name)
);

-- The scheduling key: due selection reads only the active rows whose time has come.
CREATE INDEX accounts_due ON accounts (next_attempt_at) WHERE state = 'active';

CREATE TABLE refresh_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    source text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    success boolean NOT NULL,
    error_code text,
    error_message text
);

CREATE INDEX refresh_log_account ON refresh_log (account_id, id);

CREATE TABLE http_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL,
    action text NOT NULL,
    source text NOT NULL,
    account_id text,
    org_id text,
    provider text,
    environment text,
    duration_ms double precision,
    request jsonb,
    response jsonb,
    error jsonb,
    message text,
    details jsonb
);

CREATE INDEX http_log_account ON http_log (account_id, id);
CREATE INDEX http_log_source ON http_log (source, id);
CREATE INDEX http_log_org ON http_log (org_id, id);

CREATE TABLE workers (
    name text NOT NULL,
    instance text NOT NULL,
    interval_seconds double precision NOT NULL,
    last_started_at timestamptz,
    last_finished_at timestamptz,
    last_status text,
    last_summary jsonb,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (name, instance)
);

CREATE TABLE provider_pauses (
    provider text PRIMARY KEY,
    paused_until timestamptz NOT NULL,
    reason text NOT NULL
);
