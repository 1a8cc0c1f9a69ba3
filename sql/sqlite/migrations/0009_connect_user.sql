-- Who signed in through a connect link, by the provider's user id: the connect flow logs
-- the seller's name before any account exists, so eBay's account deletion finds those
-- links (and their log entries) by this id. Links made before this migration get it from
-- their identity entry.

ALTER TABLE connect_links ADD COLUMN provider_user_id TEXT;

CREATE INDEX connect_links_provider_user ON connect_links (provider, provider_user_id)
    WHERE provider_user_id IS NOT NULL;

UPDATE connect_links SET provider_user_id = (
    SELECT e.response -> '$.body' ->> '$.userId' FROM http_log e
    WHERE e.source = 'connect' AND e.action = 'connect_identity'
      AND e.details ->> '$.link_id' = connect_links.id
      AND e.response -> '$.body' ->> '$.userId' IS NOT NULL
    ORDER BY e.id DESC LIMIT 1);
