-- eBay's notifications and application tokens.
--
-- app_tokens: one cached client_credentials token per provider and scope set, shared by
-- every replica; the lease decides which replica asks the provider for a new one.
-- ebay_notifications: every notificationId applied once (a replay changes nothing); the
-- row names the accounts it touched by tokend's own ids, never eBay's user id or name.

CREATE TABLE app_tokens (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    scope TEXT NOT NULL,  -- space-separated, sorted (OAuth's `scope`)
    access_token TEXT CHECK (substr(access_token, 1, 7) = 'ENC:v1:'),
    expires_at REAL,
    issued_at REAL,
    lease_owner TEXT,
    lease_expires_at REAL,
    updated_at REAL NOT NULL
);

CREATE TABLE ebay_notifications (
    notification_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    provider TEXT NOT NULL,
    outcome TEXT NOT NULL,
    account_ids TEXT NOT NULL,
    received_at REAL NOT NULL
);

-- Pruned with the logs: a notificationId older than the log retention is not replayed.
CREATE INDEX ebay_notifications_received ON ebay_notifications (received_at);
