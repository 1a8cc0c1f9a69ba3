"""The vend counters kept in plain numbers read as prometheus_client's own would."""

from __future__ import annotations

import prometheus_client as prom
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokend import metrics

SECONDS = st.one_of(st.sampled_from(metrics.LATENCY_BUCKETS),
                    st.floats(min_value=0, max_value=100, allow_nan=False))


@given(st.lists(st.tuples(st.sampled_from(("stored", "refreshed")), SECONDS), max_size=40),
       st.lists(st.sampled_from(("not_found", "not_active", "unavailable")), max_size=5))
def test_vends_read_like_a_counter_and_a_histogram(answers, refusals) -> None:
    ours = metrics.Metrics()
    theirs = prom.CollectorRegistry()
    counter = prom.Counter("tokend_vends", "", ["outcome"], registry=theirs)
    histogram = prom.Histogram("tokend_vend_duration_seconds", "",
                               buckets=metrics.LATENCY_BUCKETS, registry=theirs)
    for outcome, seconds in answers:
        ours.vends.answered(outcome, seconds)
        counter.labels(outcome).inc()
        histogram.observe(seconds)
    for outcome in refusals:
        ours.vends.refused(outcome)
        counter.labels(outcome).inc()

    def samples(registry: prom.CollectorRegistry) -> dict:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in registry.collect() for s in family.samples
                if s.name.startswith("tokend_vend") and not s.name.endswith("_created")}

    expected = samples(theirs)
    got = {key: value for key, value in samples(ours.registry).items()
           if value or key in expected}  # ours names every outcome, even at 0
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_every_outcome_is_exported_from_the_start() -> None:
    text = metrics.Metrics().render().decode()
    for outcome in metrics.VEND_OUTCOMES:
        assert f'tokend_vends_total{{outcome="{outcome}"}} 0.0' in text
    assert 'tokend_vend_duration_seconds_bucket{le="+Inf"} 0.0' in text
