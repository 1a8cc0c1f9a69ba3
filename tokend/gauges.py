"""The Prometheus gauges read from the database: accounts by state and failure, the due
backlog, refresh tokens expiring, each provider's pause, quota projection, demand split and
budget, and the webhook backlog."""

from __future__ import annotations

from datetime import datetime

from tokend import budget, config, metrics, model, quota, refresher, status, store


async def refresh(db: store.Insights, stats: metrics.Metrics, cfg: config.Config,
                  now: datetime) -> None:
    """Set every gauge that needs the database; /metrics calls it, bounded in time."""
    counts, failing = await status.account_health(db)
    for state in (*model.STATES, status.FAILING):
        stats.accounts.labels(state).set(counts.get(state, 0))
    stats.failing_accounts.clear()
    for code, n in failing.items():  # a provider's own codes are unbounded: fold them
        label = code if code in refresher.METRIC_CODES else "other"
        stats.failing_accounts.labels(label).inc(n)
    stats.due_backlog.set(await db.count_due(
        now, expiry_threshold_seconds=cfg.refresh.expiry_threshold_seconds,
        max_age_seconds=cfg.refresh.max_age_seconds, idle_after=cfg.idle_after()))
    for key, n in (await db.refresh_expiry_counts(now)).items():
        stats.refresh_tokens_expiring.labels(key.split("_")[1]).set(n)
    paused = await db.paused_providers(now)
    for projection in await quota.project(db, cfg):
        name = projection.provider
        stats.provider_paused.labels(name).set(1 if name in paused else 0)
        stats.projected_daily_calls.labels(name).set(projection.projected_daily_calls)
        if projection.daily_quota is not None:
            stats.daily_quota.labels(name).set(projection.daily_quota)
        if projection.capacity_accounts is not None:
            stats.capacity_accounts.labels(name).set(projection.capacity_accounts)
    for provider, split in (await db.demand_split(cfg.idle_after(), now)).items():
        for schedule_kind, n in split.items():
            stats.accounts_scheduled.labels(provider, schedule_kind).set(n)
    for standing in await budget.standings(db, cfg.providers, now):
        for grant in model.GRANT_TYPES:
            stats.budget_calls.labels(standing.provider, grant).set(
                standing.calls.get(grant, 0))
        stats.budget_state.labels(standing.provider).set(budget.STATES.index(standing.state))
    deliveries = await db.delivery_counts()
    for endpoint in cfg.webhooks:
        stats.webhook_pending.labels(endpoint.name).set(
            deliveries.get(endpoint.name, {}).get(model.PENDING, 0))
