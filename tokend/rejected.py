"""An app's report that the provider refused an access token: what it means for the account.

`decide` is pure, like `refresher.decide`: it reads one snapshot of the account and says
whether to refresh now. `vending.Vendor.report_rejected` applies a refresh verdict only
through a claim of that very snapshot (its version), so a report judged on a row that
changed meanwhile, here or on another replica, is judged again instead of refreshing twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from datetime import datetime

from tokend import model

WINDOW_SECONDS = 30.0  # at most one refresh a report forces per account in this long
SHA256 = re.compile(r"[0-9a-f]{64}")  # whole string: fullmatch

REFRESH = "refresh"  # the current token was refused: refresh it now
STALE = "stale"  # an older token: the current one is not in question, nothing is called
RECENT = "recent"  # an older token that a refresh replaced moments ago: take the new one
TOO_SOON = "too_soon"  # the current token is this fresh and still refused: refreshing again
#                        will not help, and a looping app must not spend the budget
BLOCKED = "blocked"  # the provider is paused (budget, invalid_client) or the account backs off
WAIT = "wait"  # someone holds the account's lease: judge again once it is released
VERDICTS = (REFRESH, STALE, RECENT, TOO_SOON, BLOCKED, WAIT)


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    kind: str
    retry_after_seconds: float | None = None

    @property
    def refreshed(self) -> bool:
        """What the app is told: whether asking for the token now gives a new one."""
        return self.kind in (REFRESH, RECENT)


def digest(token: str) -> str:
    """What an app reports instead of the token: its lowercase hex SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def decide(
    account: model.Account, *, reported: str, current: str | None, now: datetime,
    blocked_until: datetime | None = None, window_seconds: float = WINDOW_SECONDS,
) -> Verdict:
    """`reported`: the app's hash; `current`: the hash of the account's stored token (None
    without one); `blocked_until`: when the provider's pause ends, if it is paused."""
    if (account.lease_owner is not None and account.lease_expires_at is not None
            and account.lease_expires_at > now):
        return Verdict(WAIT)
    age = (None if account.last_refresh_at is None
           else (now - account.last_refresh_at).total_seconds())
    recent = age is not None and age < window_seconds
    if current is None or not hmac.compare_digest(reported, current):
        return Verdict(RECENT if recent else STALE)
    if recent:
        assert age is not None
        return Verdict(TOO_SOON, retry_after_seconds=window_seconds - age)
    if blocked_until is not None and blocked_until > now:
        return Verdict(BLOCKED, retry_after_seconds=(blocked_until - now).total_seconds())
    if account.consecutive_failures and account.next_attempt_at > now:
        return Verdict(BLOCKED,
                       retry_after_seconds=(account.next_attempt_at - now).total_seconds())
    return Verdict(REFRESH)
