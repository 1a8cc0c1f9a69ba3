-- eBay's notifications and application tokens.
--
-- app_tokens: one cached client_credentials token per provider and scope set, shared by
-- every replica; the lease decides which replica asks the provider for a new one.
-- ebay_notifications: every notificationId applied once (a replay changes nothing); the
-- row names the accounts it touched by tokend's own ids, never eBay's user id or name.

CREATE TABLE app_tokens (
    id text PRIMARY KEY,
    provider text NOT NULL,
    scope text NOT NULL,  -- space-separated, sorted (OAuth's `scope`)
    access_token text CHECK (substr(access_token, 1, 7) = 'ENC:v1:'),
    expires_at timestamptz,
    issued_at timestamptz,
    lease_owner text,
    lease_expires_at timestamptz,
    updated_at timestamptz NOT NULL
);

CREATE TABLE ebay_notifications (
    notification_id text PRIMARY KEY,
    topic text NOT NULL,
    provider text NOT NULL,
    outcome text NOT NULL,
    account_ids text[] NOT NULL,
    received_at timestamptz NOT NULL
);

-- Pruned with the logs: a notificationId older than the log retention is not replayed.
CREATE INDEX ebay_notifications_received ON ebay_notifications (received_at);
