"""The daily budget: token-endpoint calls per provider and grant type, per UTC day, counted
in the database (so every replica spends from the same day) against configured limits.

Below the reserve line refreshes run as scheduled. Past it only healthy accounts whose
access token is about to expire are refreshed, and `budget.warning` fires once per provider
and day. At the limit the provider's scheduled refreshes pause until the UTC day turns;
vending still answers from stored tokens that are valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog

from tokend import clock, config, model, store, vocabulary

log = structlog.get_logger("tokend.budget")

NORMAL, RESERVE, EXHAUSTED = "normal", "reserve", "exhausted"
STATES = (NORMAL, RESERVE, EXHAUSTED)


def day_ends(now: datetime) -> datetime:
    """The next UTC midnight: when the day's budget starts again."""
    today = now.astimezone(UTC).date()
    return datetime.combine(today + timedelta(days=1), time(), tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Standing:
    """One provider's refresh budget today."""

    provider: str
    day: str
    calls: Mapping[str, int]  # grant type -> calls today
    limit: int | None  # refresh_token calls allowed per day; None: unlimited
    reserve_line: int | None  # past this many, only expiring healthy accounts refresh

    @property
    def used(self) -> int:
        return self.calls.get(model.REFRESH_TOKEN_GRANT, 0)

    @property
    def state(self) -> str:
        if self.limit is None or self.reserve_line is None:
            return NORMAL
        if self.used >= self.limit:
            return EXHAUSTED
        return RESERVE if self.used >= self.reserve_line else NORMAL

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "day": self.day, "calls": dict(self.calls),
                "used": self.used, "limit": self.limit, "reserve_line": self.reserve_line,
                "state": self.state}


def reserve_line(provider: config.ProviderConfig) -> int | None:
    if provider.daily_quota is None:
        return None
    return int(provider.daily_quota * provider.budget_reserve)


async def standings(db: store.Insights, providers: Mapping[str, config.ProviderConfig],
                    now: datetime) -> list[Standing]:
    usage = await db.budget_usage(now.astimezone(UTC).date())
    day = store.utc_day(now)
    return [Standing(name, day, usage.get(name, {}), p.daily_quota, reserve_line(p))
            for name, p in sorted(providers.items())]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """`reserved`: providers past the reserve line. `headroom`: refresh calls left today for
    the provider with the fewest (None: no limit applies), so a cycle claims no more."""

    reserved: tuple[str, ...] = ()
    headroom: int | None = None


class Budget:
    """What the loop asks before each claim: which providers are past the reserve line.
    It also records (once per provider and day, across replicas) the warning and the pause
    at the limit; this process remembers what it already recorded."""

    def __init__(self, *, db: store.Store, providers: Mapping[str, config.ProviderConfig],
                 clock: Callable[[], datetime] = clock.now) -> None:
        self.db, self.providers, self.clock = db, providers, clock
        self._recorded: set[tuple[str, str, str]] = set()  # (provider, day, state)
        # The last plan of this cycle, the cycle's claims when it was made, and how many
        # more calls it stays true for (half the distance to the nearest reserve line).
        self._last: tuple[Plan, int, int] | None = None

    @property
    def limited(self) -> bool:
        return any(p.daily_quota is not None for p in self.providers.values())

    async def plan(self, *, claimed: int = 0, upto: int = 0) -> Plan:
        """Where the day stands before a claim of at most `upto` accounts; records the
        warning and the limit's pause.

        `claimed`: accounts this cycle claimed so far. A cycle's first claim always asks the
        database; a later one reuses the answer while every provider is far below its
        reserve line and this cycle's claims since, this one included, stay within half
        that distance (the other half is for other replicas). That keeps a query off the
        loop's critical path for most claims of a normal day.
        """
        if not self.limited:
            return Plan()
        if claimed and self._last is not None:
            plan, at, lasts_for = self._last
            if claimed - at + upto <= lasts_for:
                return plan
        now = self.clock()
        reserved, headroom = [], None
        room = []  # calls left before each reserve line
        for standing in await standings(self.db, self.providers, now):
            if standing.reserve_line is not None:
                room.append(standing.reserve_line - standing.used)
            state = standing.state
            if standing.limit is not None and state != EXHAUSTED:
                left = standing.limit - standing.used
                headroom = left if headroom is None else min(headroom, left)
            if state == NORMAL:
                continue
            reserved.append(standing.provider)
            key = (standing.provider, standing.day, state)
            if key not in self._recorded:
                await self._record(standing, now)
                self._recorded.add(key)
        plan = Plan(tuple(reserved), headroom)
        lasts_for = min(room, default=0) // 2 if not reserved else 0
        self._last = (plan, claimed, lasts_for) if lasts_for > 0 else None
        return plan

    async def _record(self, standing: Standing, now: datetime) -> None:
        data = standing.to_dict()
        warning = model.Event(vocabulary.BUDGET_WARNING, data)
        exhausted = None
        if standing.state == EXHAUSTED:
            until = day_ends(now)
            exhausted = model.Event(vocabulary.PROVIDER_PAUSED, {
                "provider": standing.provider, "until": until.isoformat(),
                "reason": model.BUDGET_EXHAUSTED})
        emitted = await self.db.budget_reached(standing.provider, now, day_ends=day_ends(now),
                                               warning=warning, exhausted=exhausted)
        for event in emitted:
            log.warning("budget_" + ("exhausted" if event is exhausted else "warning"),
                        provider=standing.provider, used=standing.used, limit=standing.limit,
                        reserve_line=standing.reserve_line)
