"""Projected provider calls per day, and the warning past the daily quota."""

from __future__ import annotations

import dataclasses

import pytest
from kit import Harness

from tokend import config, quota


def test_period_follows_the_schedule() -> None:
    ebay = config.ProviderConfig(name="e", type="ebay", environment="production",
                                 client_id="c", client_secret="s", scopes=(),
                                 token_url="https://x", daily_quota=50_000)
    defaults = config.RefreshConfig()  # threshold 900, max age 3600: hourly
    assert quota.period_seconds(ebay, defaults) == 3600
    relaxed = dataclasses.replace(defaults, max_age_seconds=86_400)
    assert quota.period_seconds(ebay, relaxed) == 7200 - 900


@pytest.mark.parametrize(("accounts", "over"), [(2083, False), (2084, True)])
async def test_projection_against_the_quota(harness: Harness, accounts: int, over: bool) -> None:
    providers = {name: dataclasses.replace(p, daily_quota=50_000)
                 for name, p in harness.cfg.providers.items()}
    cfg = dataclasses.replace(harness.cfg, providers=providers)
    for n in range(3):
        await harness.add(f"a{n}")
    (projection,) = await quota.project(harness.db, cfg)
    assert projection.active_accounts == 3 and projection.projected_daily_calls == 3 * 24
    scaled = dataclasses.replace(projection, active_accounts=accounts,
                                 projected_daily_calls=accounts * 24)
    assert scaled.over_quota is over  # 50,000 / 24 per day = 2,083.3 accounts
