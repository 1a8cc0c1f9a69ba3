"""`tokend rotate-keys`: re-seal every stored secret under the keyring's primary key: the
accounts' tokens, the application-token cache, the connect links' PKCE verifiers and the
eBay signing keys' private keys."""

from __future__ import annotations

import dataclasses
import functools

from tokend import apptokens, clock, crypto, store
from tokend.ebay import signing


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
        conflicts += await _rotate_others(db, keyring, counts)
        counts.conflicts = conflicts
        if not conflicts:
            break
    return counts


async def _rotate_others(db: store.Store, keyring: crypto.Keyring,
                         counts: RotationCounts) -> int:
    """The secrets kept beside the accounts: the application-token cache, the connect
    links' PKCE verifiers and the signing keys (a few rows each). Returns how many changed
    meanwhile."""
    prefix = keyring.current_prefix
    swaps = [(token.access_token, apptokens.aad_id(token.id), "access_token",
              functools.partial(db.reseal_app_token, token.id))
             for token in await db.app_tokens_to_rotate(prefix)]
    swaps += [(link.code_verifier, link.id, "code_verifier",
               functools.partial(db.reseal_code_verifier, link.id))
              for link in await db.connect_links_to_rotate(prefix)]
    swaps += [(key.private_key, signing.aad_id(key.id), signing.COLUMN,
               functools.partial(db.reseal_signing_key, key.id))
              for key in await db.signing_keys_to_rotate(prefix)]
    conflicts = 0
    for old, aad_id, column, replace in swaps:
        try:
            sealed = keyring.reseal(old, account_id=aad_id, column=column)
        except crypto.DecryptError:
            counts.failed += 1
            continue
        if await replace(old, sealed):
            counts.rotated += 1
        else:
            conflicts += 1
    return conflicts
