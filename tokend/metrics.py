"""Prometheus metrics, one registry per daemon so several can live in one test process."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from tokend import model

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
VEND_OUTCOMES = ("stored", "refreshed", "not_found", "not_active", "unavailable")


class Vends:
    """tokend_vends_total{outcome} and tokend_vend_duration_seconds, kept in plain numbers
    and read when scraped: apps may ask for a token before every call they make, and
    prometheus_client's locked values cost more than the rest of a vend from memory."""

    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.outcomes = dict.fromkeys(VEND_OUTCOMES, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound
        self.seconds = 0.0
        registry.register(self)

    def answered(self, outcome: str, seconds: float) -> None:
        """A token handed out (stored or refreshed) after `seconds`."""
        self.outcomes[outcome] += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds

    def refused(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def collect(self) -> Iterator[Metric]:
        counter = CounterMetricFamily("tokend_vends", "Access tokens handed to apps, by "
                                      "outcome.", labels=["outcome"])
        for outcome, count in self.outcomes.items():
            counter.add_metric([outcome], count)
        yield counter
        cumulative, running = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.buckets,
                                strict=True):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(
            "tokend_vend_duration_seconds", "Time to answer an app's access-token request "
            "(a refresh on demand included).", buckets=cumulative, sum_value=self.seconds)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = prom.CollectorRegistry()
        self.refreshes = prom.Counter(
            "tokend_refreshes", "Refresh attempts by outcome (success or error code).",
            ["provider", "source", "outcome"], registry=r)
        self.refresh_seconds = prom.Histogram(
            "tokend_refresh_duration_seconds",
            "Provider call latency (attempts that made an HTTP call).", ["provider"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.cycles = prom.Counter(
            "tokend_cycles", "Refresh cycles by status.", ["status"], registry=r)
        self.cycle_seconds = prom.Histogram(
            "tokend_cycle_duration_seconds", "Duration of one refresh cycle.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.accounts = prom.Gauge(
            "tokend_accounts", "Accounts by state; active ones that keep failing are "
            "counted as failing, not active.", ["state"], registry=r)
        self.failing_accounts = prom.Gauge(
            "tokend_failing_accounts", "Active accounts whose last attempts failed, by the "
            "last error code.", ["error_code"], registry=r)
        self.due_backlog = prom.Gauge(
            "tokend_due_backlog", "Accounts due now and not yet claimed.", registry=r)
        self.provider_paused = prom.Gauge(
            "tokend_provider_paused", "1 while a provider is paused after invalid_client.",
            ["provider"], registry=r)
        self.projected_daily_calls = prom.Gauge(
            "tokend_projected_daily_calls", "Provider calls per day the schedule implies.",
            ["provider"], registry=r)
        self.daily_quota = prom.Gauge(
            "tokend_daily_quota", "Configured daily refresh quota.", ["provider"], registry=r)
        self.refresh_tokens_expiring = prom.Gauge(
            "tokend_refresh_tokens_expiring",
            "Active accounts whose refresh token expires within this many days.", ["days"],
            registry=r)
        self.stream_subscribers = prom.Gauge(
            "tokend_stream_subscribers", "Live log stream subscribers.", registry=r)
        self.stream_dropped = prom.Counter(
            "tokend_stream_dropped_entries", "Entries dropped for slow subscribers.", registry=r)
        self.malformed_requests = prom.Counter(
            "tokend_http_malformed_requests", "Requests refused before any route: not HTTP, "
            "or a body that contradicts its headers.", registry=r)
        self.vends = Vends(r)
        self.signatures = prom.Counter(
            "tokend_signatures", "eBay digital signatures asked for by apps, by provider and "
            "outcome (signed, no_key, bad_request).", ["provider", "outcome"], registry=r)
        self.signing_keys_created = prom.Counter(
            "tokend_signing_keys_created", "createSigningKey calls by provider and outcome "
            "(created, failed).", ["provider", "outcome"], registry=r)

        # Set when /metrics is scraped, from the same rules /livez and /readyz answer by.
        self.loop_last_cycle = prom.Gauge(
            "tokend_loop_last_cycle_timestamp_seconds", "When this process's refresh loop "
            "last ended a cycle (Unix time; its start while none has).", registry=r)
        self.loop_stale = prom.Gauge(
            "tokend_loop_stale", "1 while this process's refresh loop has ended no cycle in "
            f"{model.STALE_AFTER_INTERVALS} x interval_seconds (/livez fails).", registry=r)
        self.ready = prom.Gauge(
            "tokend_ready", "1 when a readiness check passes, by check (listener, database, "
            "shutdown); /readyz fails while one is 0.", ["check"], registry=r)

        self.webhook_deliveries = prom.Counter(
            "tokend_webhook_deliveries", "Webhook delivery attempts by endpoint and outcome "
            "(delivered, retry, dead).", ["endpoint", "outcome"], registry=r)
        self.webhook_latency = prom.Histogram(
            "tokend_webhook_latency_seconds", "From an event's commit to its delivery.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.webhook_pending = prom.Gauge(
            "tokend_webhook_pending", "Deliveries not yet delivered or dead, by endpoint.",
            ["endpoint"], registry=r)

        self.budget_calls = prom.Gauge(
            "tokend_budget_calls", "Token-endpoint calls today (UTC), all replicas.",
            ["provider", "grant_type"], registry=r)
        self.budget_state = prom.Gauge(
            "tokend_budget_state", "Daily budget: 0 normal, 1 past the reserve line, "
            "2 limit reached (scheduled refreshes stopped).", ["provider"], registry=r)
        self.capacity_accounts = prom.Gauge(
            "tokend_capacity_accounts", "Accounts the daily quota carries with the current "
            "settings.", ["provider"], registry=r)

        self.accounts_scheduled = prom.Gauge(
            "tokend_accounts_scheduled", "Active accounts the schedule refreshes (scheduled) "
            "or only a vend does (idle, demand-aware providers).", ["provider", "schedule"],
            registry=r)

    def render(self) -> bytes:
        return prom.generate_latest(self.registry)
