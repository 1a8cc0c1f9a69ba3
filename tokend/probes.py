"""Liveness and readiness as an orchestrator means them.

Liveness asks whether restarting the process would help: only a wedged loop says yes.
Readiness asks whether this process should get traffic now: the database answers, the
listener is up, and it is not shutting down. The composition root flips the last two.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime

from tokend import loop, model, store

# Below the readiness probe's own timeout (2 s in deploy/kubernetes): a slow database
# answers "not ready" instead of making the probe time out.
PING_TIMEOUT_SECONDS = 1.0
PING_MARGIN_SECONDS = 0.5  # the outer bound, in case the store's own does not hold
# Probes from several kubelets, load balancers and humans share one ping per window.
PING_CACHE_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str = ""


def liveness(refresh_loop: loop.Loop, now: datetime) -> list[Check]:
    """Only in-memory state: no database round trip, so an outage never restarts tokend.

    A loop told to stop is not wedged: it has stopped turning on purpose, and restarting a
    process that is draining would only cut its in-flight work short.
    """
    if refresh_loop.stop.is_set() or refresh_loop.healthy(now):
        return [Check("loop", True)]
    reference = refresh_loop.last_turned_at or refresh_loop.started_at
    age = (now - reference).total_seconds()
    limit = f"{model.STALE_AFTER_INTERVALS} x {refresh_loop.interval_seconds:g} s"
    return [Check("loop", False, f"no cycle ended in {age:.1f} s (limit {limit})")]


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    reason: str  # why the database did not answer; "" when it did
    duration_ms: float


class Readiness:
    """The readiness state of one process and its cached, bounded database ping."""

    def __init__(self, db: store.Store, *, drain_seconds: float = 0.0,
                 ping_timeout_seconds: float = PING_TIMEOUT_SECONDS,
                 ping_cache_seconds: float = PING_CACHE_SECONDS) -> None:
        self.db = db
        self.drain_seconds = drain_seconds
        self.ping_timeout_seconds = ping_timeout_seconds
        self.ping_cache_seconds = ping_cache_seconds
        self.listening = False
        self.draining_since: float | None = None  # time.monotonic() of the stop request
        self._last_ping: tuple[float, Ping] | None = None  # (when, what it found)
        self._ping: asyncio.Task[Ping] | None = None

    def serving(self) -> None:
        """The listener is up and the daemon started: ready once the database answers."""
        self.listening = True

    def drain(self) -> None:
        """A stop was requested: not ready from now on, while the listener still answers."""
        if self.draining_since is None:
            self.draining_since = time.monotonic()

    async def linger(self) -> None:
        """Hold the listener open until `drain_seconds` after the stop request, so load
        balancers see /readyz fail and stop sending traffic before connections are refused.
        Returns at once when no stop was requested (a failed start)."""
        if self.draining_since is None:
            return
        remaining = self.draining_since + self.drain_seconds - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def checks(self) -> list[Check]:
        database = (await self.ping()).reason
        return [
            Check("listener", self.listening, "" if self.listening else "not started"),
            Check("database", not database, database),
            Check("shutdown", self.draining_since is None,
                  "" if self.draining_since is None else "stopping"),
        ]

    async def ping(self, *, fresh: bool = False) -> Ping:
        """The last database ping (/readyz, the metrics); a fresh one only once the cached
        one is older than `ping_cache_seconds`, and one at a time. `fresh` (/health, which
        says what is true now, a brief outage included) skips the cache but still shares a
        ping under way."""
        now = time.monotonic()
        if (not fresh and self._last_ping is not None
                and now - self._last_ping[0] < self.ping_cache_seconds):
            return self._last_ping[1]
        if self._ping is None:
            self._ping = asyncio.create_task(self._ping_once(), name="readiness-ping")
        # Shielded: a probe that hangs up must not cancel the ping the others wait for.
        return await asyncio.shield(self._ping)

    async def _ping_once(self) -> Ping:
        started = time.monotonic()
        try:
            # Bounded inside the store too, which then replaces the connection that hung.
            async with asyncio.timeout(self.ping_timeout_seconds + PING_MARGIN_SECONDS):
                await self.db.ping(self.ping_timeout_seconds)
        except Exception as exc:
            hung = isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError)
            reason = (f"no answer within {self.ping_timeout_seconds:g} s" if hung
                      else f"unreachable ({type(exc).__name__})")
        else:
            reason = ""
        finally:
            self._ping = None
        finished = time.monotonic()
        ping = Ping(reason, round((finished - started) * 1000, 1))
        self._last_ping = (finished, ping)
        return ping
