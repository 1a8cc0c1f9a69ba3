"""The bucket that bounds what anonymous requests can make tokend write or fetch."""

from __future__ import annotations

from tokend import throttle


def test_a_burst_then_the_rate_and_a_count_of_what_was_left_out():
    now = [0.0]
    bucket = throttle.Throttle(per_second=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] += 0.5  # one token back
    assert bucket.take() == 2  # let through, saying two were left out before it
    assert bucket.take() is None
    now[0] += 100.0  # refilled, but never beyond the burst
    assert [bucket.take() for _ in range(4)] == [1, 0, 0, None]


def test_refusals_allow_twenty_at_once_then_one_a_second():
    now = [0.0]
    bucket = throttle.refusals(clock=lambda: now[0])
    assert sum(bucket.take() is not None for _ in range(100)) == 20
    now[0] += 10.0
    assert sum(bucket.take() is not None for _ in range(100)) == 10
