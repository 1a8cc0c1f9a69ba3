-- Outbound webhooks (SPEC 10.2) and the daily budget of token-endpoint calls.

-- An event is fanned out to the configured endpoints once: `dispatched_at` marks it done.
ALTER TABLE events ADD COLUMN dispatched_at timestamptz;
CREATE INDEX events_undispatched ON events (id) WHERE dispatched_at IS NULL;

-- One row per event and endpoint. The event's type and data are copied, so delivered rows
-- outlive the event's own retention. A claim leases the row (like accounts): a process that
-- dies mid-delivery leaves it to whoever comes after the lease.
CREATE TABLE webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id bigint NOT NULL,
    endpoint text NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    event_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'pending',  -- pending | delivered | dead
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_owner text,
    lease_expires_at timestamptz,
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL,
    finished_at timestamptz,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE state <> 'pending';

-- provider.resumed is emitted once per pause: the replica that sets resumed_at emits it.
ALTER TABLE provider_pauses ADD COLUMN resumed_at timestamptz;
-- loop.stale / loop.recovered: set and cleared by whichever replica notices first.
ALTER TABLE workers ADD COLUMN stale_at timestamptz;

-- Token-endpoint calls per provider, grant type and UTC day ('YYYY-MM-DD').
CREATE TABLE token_calls (
    provider text NOT NULL,
    grant_type text NOT NULL,
    day text NOT NULL,
    calls integer NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, grant_type, day)
);
-- budget.warning fires once per provider and day: the row's insert is the guard.
CREATE TABLE budget_warnings (
    provider text NOT NULL,
    day text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (provider, day)
);
-- Demand-aware scheduling: when an app last had this account's access token.
ALTER TABLE accounts ADD COLUMN last_vended_at timestamptz;
