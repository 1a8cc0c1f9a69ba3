-- eBay signing keys (digital signatures for APIs): the private key sealed like a token
-- (ENC:v1, bound to the key's id and column), the public key as eBay's JWE, and which key
-- is in use: the newest activated one of its provider. A renewal leases the row in use, so
-- one replica alone asks eBay for its successor; the old key stays, usable until it expires.
CREATE TABLE signing_keys (
    id text PRIMARY KEY,  -- eBay's signingKeyId
    provider text NOT NULL,
    cipher text NOT NULL,  -- ED25519 | RSA
    private_key text NOT NULL CHECK (substr(private_key, 1, 7) = 'ENC:v1:'),
    public_key text,  -- base64 SubjectPublicKeyInfo, as eBay answers it
    jwe text NOT NULL,
    created_at timestamptz NOT NULL,  -- eBay's creationTime (an import: when it was imported)
    expires_at timestamptz,  -- eBay's expirationTime; unknown for an import
    activated_at timestamptz,
    renewal_owner text,
    renewal_until timestamptz,
    stored_at timestamptz NOT NULL
);
CREATE INDEX signing_keys_in_use ON signing_keys (provider, activated_at);
