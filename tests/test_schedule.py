"""When the next refresh comes due, and how long to back off after a failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tokend import schedule

DAY = 86_400.0
EPOCH = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

expires_in = st.floats(min_value=1.0, max_value=10 * DAY)
threshold = st.floats(min_value=0.0, max_value=DAY)
max_age = st.floats(min_value=1.0, max_value=30 * DAY)
skew = st.floats(min_value=-300.0, max_value=300.0)


def at(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# -- next_refresh_at ----------------------------------------------------------------------


@given(expires_in, threshold, max_age, skew)
def test_next_refresh_properties(expires_in: float, threshold: float, max_age: float,
                                 skew: float) -> None:
    sent_at = EPOCH + at(skew)  # the local clock may be off; all is relative to sent_at
    due = schedule.next_refresh_at(sent_at, expires_in, expiry_threshold_seconds=threshold,
                                   max_age_seconds=max_age)
    expiry = sent_at + at(expires_in)
    assert due.tzinfo is not None
    assert due > sent_at
    assert due <= expiry  # at the expiry only with no threshold, which config refuses
    if threshold >= 0.001:  # below that, both round to the same microsecond
        assert due < expiry
    assert due <= sent_at + at(max_age)
    if expires_in >= 2 * threshold:
        assert due <= expiry - at(threshold) + MICROSECOND  # two roundings to microseconds
    if expires_in / 2 <= max_age:
        assert due >= sent_at + at(expires_in / 2)


@given(expires_in, threshold, max_age)
def test_due_is_the_earlier_of_threshold_and_max_age(expires_in: float, threshold: float,
                                                     max_age: float) -> None:
    assume(expires_in >= 2 * threshold)
    due = schedule.next_refresh_at(EPOCH, expires_in, expiry_threshold_seconds=threshold,
                                   max_age_seconds=max_age)
    assert due == EPOCH + at(min(expires_in - threshold, max_age))


@pytest.mark.parametrize(("expires_in", "threshold", "max_age", "after"), [
    (7200, 900, 3600, 3600),     # eBay's two hours, defaults: max_age comes first
    (7200, 900, 10_000, 6300),   # threshold before expiry
    (600, 900, 3600, 300),       # shorter than the threshold: half its life
    (1500, 900, 3600, 750),      # shorter than twice the threshold: half its life
    (1800, 900, 3600, 900),      # exactly twice: threshold and half agree
    (7200, 900, 60, 60),
])
def test_examples(expires_in: float, threshold: float, max_age: float, after: float) -> None:
    due = schedule.next_refresh_at(EPOCH, expires_in, expiry_threshold_seconds=threshold,
                                   max_age_seconds=max_age)
    assert due == EPOCH + at(after)


# -- backoff_seconds ----------------------------------------------------------------------


failures = st.integers(min_value=0, max_value=80)
base = st.floats(min_value=0.1, max_value=600.0)
ceiling = st.floats(min_value=1.0, max_value=DAY)
jitter = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def exponential(failures: int, base: float, maximum: float) -> float:
    return min(maximum, base * 2.0 ** min(failures, 32))


@given(failures, base, ceiling, jitter)
def test_backoff_bounds(failures: int, base: float, maximum: float, jitter: float) -> None:
    delay = schedule.backoff_seconds(failures, base_seconds=base, max_seconds=maximum,
                                     jitter=jitter)
    top = exponential(failures, base, maximum)
    assert delay <= maximum
    assert delay >= top / 2
    assert delay <= top
    assert delay > 0


@given(failures, base, ceiling, jitter)
def test_backoff_grows_until_the_cap(failures: int, base: float, maximum: float,
                                     jitter: float) -> None:
    now = schedule.backoff_seconds(failures, base_seconds=base, max_seconds=maximum,
                                   jitter=jitter)
    then = schedule.backoff_seconds(failures + 1, base_seconds=base, max_seconds=maximum,
                                    jitter=jitter)
    assert then >= now
    if base * 2.0 ** (failures + 1) <= maximum:
        assert then == pytest.approx(2 * now)


@given(base, ceiling)
def test_backoff_reaches_the_cap(base: float, maximum: float) -> None:
    assume(base <= maximum)
    assert schedule.backoff_seconds(80, base_seconds=base, max_seconds=maximum,
                                    jitter=0.0) == pytest.approx(maximum / 2)
    assert schedule.backoff_seconds(10_000, base_seconds=base, max_seconds=maximum,
                                    jitter=0.999999) <= maximum


@given(failures, base, ceiling, jitter, st.floats(min_value=0.0, max_value=10 * DAY))
def test_retry_after_is_a_floor_capped_at_max(failures: int, base: float, maximum: float,
                                              jitter: float, retry_after: float) -> None:
    plain = schedule.backoff_seconds(failures, base_seconds=base, max_seconds=maximum,
                                     jitter=jitter)
    delay = schedule.backoff_seconds(failures, base_seconds=base, max_seconds=maximum,
                                     retry_after_seconds=retry_after, jitter=jitter)
    assert delay >= min(retry_after, maximum)
    assert delay >= plain
    assert delay <= maximum
    if retry_after <= plain:
        assert delay == plain


@given(failures, base, ceiling)
def test_jitter_spreads_over_the_upper_half(failures: int, base: float,
                                            maximum: float) -> None:
    top = exponential(failures, base, maximum)
    low = schedule.backoff_seconds(failures, base_seconds=base, max_seconds=maximum,
                                   jitter=0.0)
    high = schedule.backoff_seconds(failures, base_seconds=base, max_seconds=maximum,
                                    jitter=0.999)
    assert low == pytest.approx(top / 2)
    assert top / 2 <= high < top or high == pytest.approx(top)
    assert high > low


def test_backoff_examples() -> None:
    kw = {"base_seconds": 30.0, "max_seconds": 3600.0, "jitter": 0.0}
    assert [schedule.backoff_seconds(n, **kw) for n in range(9)] == [
        15, 30, 60, 120, 240, 480, 960, 1800, 1800]
    assert schedule.backoff_seconds(0, base_seconds=30, max_seconds=3600,
                                    retry_after_seconds=120, jitter=0.0) == 120
    assert schedule.backoff_seconds(0, base_seconds=30, max_seconds=3600,
                                    retry_after_seconds=86_400, jitter=0.0) == 3600


def test_refresh_due_at_follows_the_due_rule_not_the_attempt_time_alone() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    rules = {"expiry_threshold_seconds": 900, "max_age_seconds": 3600}
    # Enabled again with a token refreshed 10 minutes ago: due by max_age, not now.
    fresh = schedule.refresh_due_at(
        next_attempt_at=now, access_expires_at=now + timedelta(minutes=110),
        last_refresh_at=now - timedelta(minutes=10), **rules)
    assert fresh == now + timedelta(minutes=50)
    # A token that expires first is due its threshold before it expires.
    short = schedule.refresh_due_at(
        next_attempt_at=now, access_expires_at=now + timedelta(minutes=20),
        last_refresh_at=now - timedelta(minutes=10), **rules)
    assert short == now + timedelta(minutes=5)
    # A backoff later than both keeps the account waiting.
    backoff = schedule.refresh_due_at(
        next_attempt_at=now + timedelta(hours=2), access_expires_at=now,
        last_refresh_at=now - timedelta(hours=2), **rules)
    assert backoff == now + timedelta(hours=2)
    # Never refreshed: due at its attempt time.
    assert schedule.refresh_due_at(next_attempt_at=now, access_expires_at=None,
                                   last_refresh_at=None, **rules) == now
