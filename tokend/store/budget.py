"""The daily budget (token-endpoint calls per provider, grant and UTC day, shared by
replicas) and demand-aware scheduling (idle accounts parked until an app asks)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime

from tokend import model
from tokend.store import ports, records, refresh

# next_attempt_at of an idle account (demand-aware scheduling): due only once an app asks.
PARKED = datetime(9000, 1, 1, tzinfo=UTC)


class Budget:
    _db: ports.Connector

    async def count_token_call(self, provider: str, grant: str, now: datetime) -> int:
        """Count one call to `provider`'s token endpoint with `grant` (one of model.GRANT_TYPES)
        on `now`'s UTC day; returns the day's count so far. Refreshes are counted by
        `finish`; the other grants' callers call this after their HTTP call."""
        if grant not in model.GRANT_TYPES:
            raise ValueError(f"unknown grant type {grant!r}")
        row = await self._db.one("count_token_calls", provider=provider, grant_type=grant,
                                 day=records.utc_day(now), calls=1)
        assert row is not None
        return row["calls"]

    async def budget_usage(self, day: date) -> dict[str, dict[str, int]]:
        """Token-endpoint calls on `day` (UTC): provider -> grant type -> calls."""
        out: dict[str, dict[str, int]] = {}
        for row in await self._db.all("budget_usage", day=day.isoformat()):
            out.setdefault(row["provider"], {})[row["grant_type"]] = row["calls"]
        return out

    async def budget_reached(
        self, provider: str, now: datetime, *, day_ends: datetime, warning: model.Event | None,
        exhausted: model.Event | None,
    ) -> list[model.Event]:
        """Record what the day's use of `provider` crossed, once across replicas: the
        reserve line (`warning`: budget.warning, once per provider and day) and the limit
        (`exhausted`: scheduled refreshes pause until `day_ends`). Returns what it emitted."""
        emitted = []
        async with self._db.transaction() as tx:
            if warning is not None and await tx.one(
                    "record_budget_warning", provider=provider, day=records.utc_day(now), now=now):
                emitted.append(warning)
            if exhausted is not None:
                row = await tx.one("provider_paused_until", provider=provider)
                if row is None or row["paused_until"] < day_ends:
                    await tx.one("pause_provider", provider=provider, until=day_ends,
                                 reason=model.BUDGET_EXHAUSTED)
                    emitted.append(exhausted)
            await records.emit(tx, emitted, now)
        return emitted

    # -- demand-aware scheduling --------------------------------------------------------
    async def touch_vended(self, account_id: str, now: datetime) -> None:
        """An app just had this account's access token: it stays on (or returns to) the
        schedule."""
        await self._db.one("touch_vended", id=account_id, now=now, parked=PARKED)

    async def park_idle(self, now: datetime, idle_after: Mapping[str, float]) -> None:
        """Move idle accounts that came due to `PARKED` until an app asks for them."""
        await self._db.one("park_idle_accounts", now=now, parked=PARKED,
                           **refresh.idle_params(idle_after))

    async def demand_split(
        self, idle_after: Mapping[str, float], now: datetime, org: str | None = None,
    ) -> dict[str, dict[str, int]]:
        """Active accounts per provider (of one org, or of all): {"scheduled": n,
        "idle": m}."""
        rows = await self._db.all("demand_split", now=now, org=org,
                                  **refresh.idle_params(idle_after))
        return {row["provider"]: {"scheduled": int(row["scheduled"]),
                                  "idle": row["n"] - int(row["scheduled"])} for row in rows}
