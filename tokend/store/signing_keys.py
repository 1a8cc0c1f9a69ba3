"""The store's eBay signing keys: kept, listed, the one in use, renewal leases, key
rotation, and the signatures' log entries. Mixed into `Store`; the private key crosses
this boundary as an `ENC:v1` envelope only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tokend import model
from tokend.store import ports, records


def _key(row: Mapping[str, Any] | None) -> model.SigningKey | None:
    return None if row is None else model.SigningKey(**row)


class SigningKeys:
    _db: ports.Connector

    async def add_signing_key(
        self, *, id: str, provider: str, cipher: str, private_key: str, public_key: str | None,
        jwe: str, created_at: datetime, expires_at: datetime | None,
        activated_at: datetime | None, now: datetime,
    ) -> model.SigningKey:
        """Keep a key (raises store.DuplicateKey when its id is known already)."""
        row = await self._db.one(
            "insert_signing_key", id=id, provider=provider, cipher=cipher,
            private_key=private_key, public_key=public_key, jwe=jwe, created_at=created_at,
            expires_at=expires_at, activated_at=activated_at, now=now)
        assert row is not None
        return model.SigningKey(**row)

    async def list_signing_keys(self, provider: str | None = None) -> list[model.SigningKey]:
        return [model.SigningKey(**row)
                for row in await self._db.all("list_signing_keys", provider=provider)]

    async def signing_key_in_use(self, provider: str) -> model.SigningKey | None:
        return _key(await self._db.one("signing_key_in_use", provider=provider))

    async def claim_signing_key_renewal(
        self, key: model.SigningKey, owner: str, now: datetime, *, lease_seconds: float,
    ) -> bool:
        """Lease the renewal of `key` to `owner` while it is still in use and unleased."""
        row = await self._db.one("claim_signing_key_renewal", id=key.id, provider=key.provider,
                                 owner=owner, now=now,
                                 until=now + timedelta(seconds=lease_seconds))
        return row is not None

    async def release_signing_key_renewal(self, key_id: str, owner: str) -> None:
        await self._db.one("release_signing_key_renewal", id=key_id, owner=owner)

    async def signing_keys_to_rotate(self, current_prefix: str) -> list[model.SigningKey]:
        rows = await self._db.all("signing_keys_to_rotate", prefix=current_prefix)
        return [model.SigningKey(**row) for row in rows]

    async def reseal_signing_key(self, key_id: str, old: str, sealed: str) -> bool:
        """Swap the envelope if it is still `old`."""
        return await self._db.one("reseal_signing_key", id=key_id, old=old,
                                  sealed=sealed) is not None

    async def add_signature_entries(
        self, entries: Sequence[model.Entry],
    ) -> list[model.Entry]:
        """The signatures' log entries, many in one statement; returned with their ids."""
        return await records.store_entries(self._db, entries)
