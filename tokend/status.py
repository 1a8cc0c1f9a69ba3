"""The loop-status report: worker heartbeats with their stale flag, and account counts."""

from __future__ import annotations

from datetime import datetime
from typing import IO, Any

from tokend import budget, clock, config, model, quota, store

FAILING = "failing"  # not a stored state: active accounts whose last attempts failed


async def report(db: store.Insights, cfg: config.Config, now: datetime) -> dict[str, Any]:
    workers = await db.list_workers()
    paused = await db.paused_providers(now)
    projections = await quota.project(db, cfg)
    accounts, failing = await account_health(db)
    return {
        "loops": [{
            "name": w.name, "instance": w.instance, "interval_seconds": w.interval_seconds,
            "last_started_at": _iso(w.last_started_at),
            "last_finished_at": _iso(w.last_finished_at),
            "last_status": w.last_status, "stale": w.stale(now),
            "last_summary": w.last_summary,
        } for w in workers],
        "accounts": accounts,
        # Active but failing (decrypt_failed, invalid_scope, ...), by last error: these
        # are not counted as active above.
        "failing_accounts": failing,
        "refresh_tokens_expiring": await db.refresh_expiry_counts(now),
        "paused_providers": {name: until.isoformat() for name, until in paused.items()},
        "quota": {p.provider: p.to_dict() for p in projections},
        "budget": {b.provider: b.to_dict()
                   for b in await budget.standings(db, cfg.providers, now)},
        "checked_at": now.isoformat(),
    }


async def account_health(db: store.Insights) -> tuple[dict[str, int], dict[str, int]]:
    """Accounts by state, with `active` split into healthy `active` and `failing`."""
    counts = await db.account_counts()
    failing = await db.failing_counts()
    counts[FAILING] = sum(failing.values())
    counts[model.ACTIVE] = counts.get(model.ACTIVE, 0) - counts[FAILING]
    return counts, failing


async def collect(cfg: config.Config) -> dict[str, Any]:
    async with store.open(cfg.database.url, **{**cfg.database.store_options(),
                                               "pool_max_size": 1}) as db:
        return await report(db, cfg, clock.now())


def print_report(data: dict[str, Any], out: IO[str]) -> None:
    if not data["loops"]:
        out.write("no loop has run yet\n")
    for loop in data["loops"]:
        flag = "STALE" if loop["stale"] else "fresh"
        out.write(f"{loop['name']} @ {loop['instance']}: {flag}, every "
                  f"{loop['interval_seconds']:g} s, last finished "
                  f"{loop['last_finished_at'] or 'never'} ({loop['last_status'] or '-'})\n")
        summary = loop["last_summary"] or {}
        if summary:
            out.write(f"  checked {summary.get('accounts_checked', 0)}, refreshed "
                      f"{summary.get('accounts_refreshed', 0)}, errors "
                      f"{summary.get('error_count', len(summary.get('errors', [])))}\n")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(data["accounts"].items()))
    out.write(f"accounts: {counts or 'none'}\n")
    for code, n in sorted((data.get("failing_accounts") or {}).items()):
        out.write(f"  failing with {code}: {n}\n")
    expiring = data.get("refresh_tokens_expiring") or {}
    if any(expiring.values()):
        out.write("refresh tokens expiring: " + ", ".join(
            f"{n} {key.replace('_', ' ')}" for key, n in expiring.items()) + "\n")
    for name, until in data["paused_providers"].items():
        out.write(f"provider {name} paused until {until}\n")
    for name, q in data["quota"].items():
        limit = f" of {q['daily_quota']:,} allowed" if q["daily_quota"] else ""
        warning = "  WARNING: over the daily quota" if q["over_quota"] else ""
        scheduled = q.get("scheduled_accounts")
        idle = 0 if scheduled is None else q["active_accounts"] - scheduled
        split = f" ({scheduled} scheduled, {idle} idle)" if idle else ""
        out.write(f"provider {name}: {q['active_accounts']} active accounts{split}, about "
                  f"{q['projected_daily_calls']:,.0f} refresh calls/day{limit}{warning}\n")
        if q.get("capacity_accounts") is not None:
            out.write(f"  this keyset carries about {q['capacity_accounts']:,} accounts "
                      "with the current settings\n")
    for name, b in data.get("budget", {}).items():
        if b["limit"] is None:
            continue
        note = {budget.NORMAL: "", budget.RESERVE: "  past the reserve line: only expiring "
                "accounts are refreshed", budget.EXHAUSTED: "  LIMIT REACHED: scheduled "
                "refreshes stopped until 00:00 UTC"}[b["state"]]
        out.write(f"budget {name} {b['day']}: {b['used']:,} of {b['limit']:,} refresh calls "
                  f"used{note}\n")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
