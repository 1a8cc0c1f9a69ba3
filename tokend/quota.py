"""Projected provider calls per day against each provider's daily refresh quota.

The projection uses the same rule the refresher schedules with, so it cannot drift
from what the loop really does: every active account is refreshed once per period.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

from tokend import clock, config, schedule, store

DAY_SECONDS = 86_400.0
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Projection:
    provider: str
    active_accounts: int
    period_seconds: float
    projected_daily_calls: float
    daily_quota: int | None
    capacity_accounts: int | None = None  # accounts the quota carries at this period
    scheduled_accounts: int | None = None  # of the active, those not idle (demand-aware)

    @property
    def over_quota(self) -> bool:
        return self.daily_quota is not None and self.projected_daily_calls > self.daily_quota

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "over_quota": self.over_quota}


def period_seconds(provider: config.ProviderConfig, settings: config.RefreshConfig) -> float:
    """How often one account is refreshed, for a token of the provider's usual lifetime."""
    lifetime = provider.expires_in_fallback_seconds
    due = schedule.next_refresh_at(
        _EPOCH, lifetime, expiry_threshold_seconds=settings.expiry_threshold_seconds,
        max_age_seconds=settings.max_age_seconds)
    return (due - _EPOCH).total_seconds()


def capacity(provider: config.ProviderConfig, settings: config.RefreshConfig) -> int | None:
    """How many accounts this keyset's daily refresh quota carries with these settings:
    each is refreshed DAY / period times a day."""
    if provider.daily_quota is None:
        return None
    return math.floor(provider.daily_quota * period_seconds(provider, settings) / DAY_SECONDS)


async def project(db: store.Insights, cfg: config.Config,
                  org: str | None = None) -> list[Projection]:
    """Idle accounts of a demand-aware provider are refreshed only when an app asks: the
    projection counts the scheduled ones. With `org`, that org's accounts alone: its share
    of each provider's quota."""
    active = await db.active_by_provider(org)
    split = await db.demand_split(cfg.idle_after(), clock.now(), org)
    out = []
    for name in sorted(set(cfg.providers) | set(active)):
        provider = cfg.providers.get(name)
        count = active.get(name, 0)
        if provider is None:  # accounts of an unconfigured provider are never refreshed
            out.append(Projection(name, count, 0.0, 0.0, None))
            continue
        period = period_seconds(provider, cfg.refresh)
        scheduled = split.get(name, {}).get("scheduled", count)
        out.append(Projection(name, count, period, scheduled * DAY_SECONDS / period,
                              provider.daily_quota, capacity(provider, cfg.refresh),
                              scheduled))
    return out
