-- The account lifecycle: who the account is at the provider, why it left `active`, which
-- refresh-token expiry notice it has had, and a `deleted` tombstone whose tokens are gone.

ALTER TABLE accounts
    ADD COLUMN provider_user_id text,
    ADD COLUMN provider_user_name text,
    ADD COLUMN state_reason text,
    ADD COLUMN refresh_expiry_notice_days integer,
    ALTER COLUMN refresh_token DROP NOT NULL;

ALTER TABLE accounts DROP CONSTRAINT accounts_state_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_state_check
    CHECK (state IN ('active', 'reauth_required', 'disabled', 'deleted'));
-- Only a deleted account may be without a refresh token.
ALTER TABLE accounts ADD CONSTRAINT accounts_refresh_token_present
    CHECK (refresh_token IS NOT NULL OR state = 'deleted');

-- eBay's notifications name the seller by its immutable user id.
CREATE INDEX accounts_provider_user ON accounts (provider, provider_user_id)
    WHERE provider_user_id IS NOT NULL;
