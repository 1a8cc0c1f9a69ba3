"""Key rotation: the secrets still sealed under an older key, and the guarded swaps that
re-seal them (accounts, app tokens, PKCE verifiers; signing keys are `signing_keys`')."""

from __future__ import annotations

from datetime import datetime

from tokend import model
from tokend.store import ports, records


class Rotation:
    _db: ports.Connector

    async def accounts_to_rotate(
        self, current_prefix: str, limit: int, *, after_id: str | None = None,
    ) -> list[model.Account]:
        """Accounts with a secret not starting with `current_prefix`, by id, after
        `after_id`."""
        rows = await self._db.all("accounts_to_rotate", prefix=current_prefix, limit=limit,
                                  after_id=after_id)
        return [records.account(row) for row in rows]

    async def replace_secrets(
        self, account_id: str, version: int, refresh_token: str, access_token: str | None, *,
        now: datetime,
    ) -> bool:
        """Swap re-encrypted secrets if the row is still at `version` and not leased."""
        row = await self._db.one("replace_secrets", id=account_id, version=version,
                                 refresh_token=refresh_token, access_token=access_token,
                                 now=now)
        return row is not None

    async def app_tokens_to_rotate(self, current_prefix: str) -> list[model.AppToken]:
        """Cached application tokens sealed under another key than `current_prefix`'s."""
        rows = await self._db.all("app_tokens_to_rotate", prefix=current_prefix)
        return [model.AppToken(**row) for row in rows]

    async def reseal_app_token(self, token_id: str, old: str, sealed: str) -> bool:
        """Swap the envelope if it is still `old`."""
        return await self._db.one("reseal_app_token", id=token_id, old=old,
                                  sealed=sealed) is not None

    async def connect_links_to_rotate(self, current_prefix: str) -> list[model.ConnectLink]:
        """Connect links whose PKCE verifier is sealed under another key."""
        rows = await self._db.all("connect_links_to_rotate", prefix=current_prefix)
        return [model.ConnectLink(**row) for row in rows]

    async def reseal_code_verifier(self, link_id: str, old: str, sealed: str) -> bool:
        """Swap the envelope if it is still `old`."""
        return await self._db.one("reseal_code_verifier", id=link_id, old=old,
                                  sealed=sealed) is not None
