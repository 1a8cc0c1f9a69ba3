"""`tokend rotate-keys`: re-seal every stored secret under the keyring's primary key."""

from __future__ import annotations

import dataclasses

from tokend import clock, crypto, store


@dataclasses.dataclass
class RotationCounts:
    rotated: int = 0
    failed: int = 0
    conflicts: int = 0


async def rotate(db: store.Store, keyring: crypto.Keyring, *, batch_size: int = 500,
                 max_passes: int = 3) -> RotationCounts:
    """Re-seal every stored secret under the primary key, in batches.

    Each row is swapped only if unchanged since it was read and not leased, so the daemon
    may keep running; a crash loses nothing, and running it again picks up where it stopped.
    """
    counts = RotationCounts()
    for _ in range(max_passes):
        conflicts, after_id = 0, None
        while batch := await db.accounts_to_rotate(keyring.current_prefix, batch_size,
                                                   after_id=after_id):
            after_id = batch[-1].id
            for account in batch:
                try:
                    refresh_token = keyring.reseal(
                        account.refresh_token, account_id=account.id, column="refresh_token")
                    access_token = None if account.access_token is None else keyring.reseal(
                        account.access_token, account_id=account.id, column="access_token")
                except crypto.DecryptError:
                    counts.failed += 1
                    continue
                if await db.replace_secrets(account.id, account.version, refresh_token,
                                            access_token, now=clock.now()):
                    counts.rotated += 1
                else:
                    conflicts += 1
        counts.conflicts = conflicts
        if not conflicts:
            break
    return counts
