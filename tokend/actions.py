"""The operator's actions on accounts and providers, one function each, for the console's
routes and the CLI alike: disable, enable, clear a backoff, resume a paused provider.

Each takes the store and the time and either returns what changed or says why not; who
may act (an org's token, the admin) is the caller's to check.
"""

from __future__ import annotations

from datetime import datetime

from tokend import model, refresher, store

DISABLED_REASON = "disabled by an operator"


class Refused(Exception):
    """The account's state does not allow the action; `state` is its state now."""

    def __init__(self, message: str, state: str | None) -> None:
        super().__init__(message)
        self.message, self.state = message, state


async def _changed(db: store.Store, account_id: str, changed: model.Account | None,
                   refusal: str) -> model.Account:
    if changed is None:
        current = await db.get_account(account_id)
        if current is None:
            raise refresher.NotFound(account_id)
        raise Refused(refusal, current.state)
    return changed


async def disable(db: store.Store, account_id: str, now: datetime) -> model.Account:
    return await _changed(db, account_id,
                          await db.disable_account(account_id, DISABLED_REASON, now),
                          "a deleted account cannot be disabled")


async def enable(db: store.Store, account_id: str, now: datetime) -> model.Account:
    return await _changed(db, account_id, await db.enable_account(account_id, now),
                          "only a disabled account can be enabled")


async def clear_backoff(db: store.Store, account_id: str, now: datetime) -> model.Account:
    return await _changed(db, account_id, await db.clear_backoff(account_id, now),
                          "only an active account that is not being refreshed has a backoff")


async def resume(db: store.Store, provider: str, now: datetime) -> bool:
    """Lift a provider's pause; False when it was not paused."""
    return await db.clear_provider_pause(provider, now)
