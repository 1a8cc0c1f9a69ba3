"""When to refresh next: after a success, and after a failure. Pure functions."""

from __future__ import annotations

from datetime import datetime, timedelta

# A token that lives shorter than twice the threshold is refreshed at half its life,
# so a short-lived token is never due the moment it arrives.
MIN_LIFETIME_FRACTION = 0.5


def next_refresh_at(
    sent_at: datetime, expires_in: float, *, expiry_threshold_seconds: float,
    max_age_seconds: float,
) -> datetime:
    """When a token obtained by a request sent at `sent_at` next comes due.

    The earlier of: `expiry_threshold_seconds` before it expires, and `max_age_seconds`
    after it was obtained; never earlier than half its lifetime.
    """
    lead = max(expires_in - expiry_threshold_seconds, expires_in * MIN_LIFETIME_FRACTION)
    return sent_at + timedelta(seconds=max(0.0, min(lead, max_age_seconds)))


def refresh_due_at(
    *, next_attempt_at: datetime, access_expires_at: datetime | None,
    last_refresh_at: datetime | None, expiry_threshold_seconds: float, max_age_seconds: float,
) -> datetime:
    """When the loop will really refresh an account, by the due rule (sql/queries.sql
    `due`): its next attempt time alone does not make it due while its access token is
    fresh, as after it was enabled again or its backoff was cleared."""
    if last_refresh_at is None:
        return next_attempt_at
    when = last_refresh_at + timedelta(seconds=max_age_seconds)
    if access_expires_at is not None:
        when = min(when, access_expires_at - timedelta(seconds=expiry_threshold_seconds))
    return max(next_attempt_at, when)


def backoff_seconds(
    failures: int, *, base_seconds: float, max_seconds: float,
    retry_after_seconds: float | None = None, jitter: float = 1.0,
) -> float:
    """Delay before the next attempt after `failures` earlier consecutive failures.

    Exponential, with `jitter` in [0, 1) spreading it over its upper half so a fleet
    that failed together does not retry together; a provider's Retry-After is a floor.
    """
    ceiling = min(max_seconds, base_seconds * 2.0 ** min(failures, 32))
    delay = ceiling * (0.5 + 0.5 * jitter)
    if retry_after_seconds is not None:
        delay = max(delay, retry_after_seconds)
    return min(delay, max_seconds)


# Once its backoff is at the maximum, a failing account is tried at most this often a day.
FAILING_RETRIES_PER_DAY = 4


def backoff_is_long(failures: int, *, base_seconds: float, max_seconds: float) -> bool:
    """The backoff after `failures` earlier failures has reached its maximum."""
    return base_seconds * 2.0 ** min(failures, 32) >= max_seconds


def failing_retry_seconds(jitter: float) -> float:
    """The wait between attempts of an account that keeps failing: a quarter day and up
    to a quarter more, so such accounts do not retry together."""
    spacing = 86_400.0 / FAILING_RETRIES_PER_DAY
    return spacing * (1.0 + 0.25 * jitter)
