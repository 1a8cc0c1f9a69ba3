"""Bounds on what anyone on the network can make tokend do: the public routes (connect
links, the OAuth callback, eBay's notifications) write a log entry for every refusal and may
ask eBay for a public key. A token bucket per kind keeps a flood of bad requests from
becoming a flood of rows or outbound calls; the answers themselves are never withheld."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """`burst` at once, then `per_second` on average. What is left out is counted, and the
    next one let through says how many (so a log can say "and 312 more")."""

    def __init__(self, per_second: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second, self.burst, self._clock = per_second, burst, clock
        self._tokens, self._at = float(burst), clock()
        self._left_out = 0

    def take(self) -> int | None:
        """None: leave this one out. Otherwise how many were left out since the last one
        let through."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens < 1.0:
            self._left_out += 1
            return None
        self._tokens -= 1.0
        left_out, self._left_out = self._left_out, 0
        return left_out


def refusals(clock: Callable[[], float] = time.monotonic) -> Throttle:
    """Log entries for refused anonymous requests: 20 at once, then one a second."""
    return Throttle(per_second=1.0, burst=20, clock=clock)
