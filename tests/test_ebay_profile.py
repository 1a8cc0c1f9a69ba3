"""The eBay profile is the one source of eBay's values for config, quota and simulator."""

from __future__ import annotations

from pathlib import Path

from tokend import config, quota
from tokend.ebay import profile
from tokend.testing import simulator


def test_profile_values_match_ebays_documentation():
    assert profile.TOKEN_URLS["production"] == "https://api.ebay.com/identity/v1/oauth2/token"
    assert profile.TOKEN_URLS["sandbox"] == (
        "https://api.sandbox.ebay.com/identity/v1/oauth2/token")
    assert profile.AUTHORIZE_URLS["sandbox"] == "https://auth.sandbox.ebay.com/oauth2/authorize"
    assert profile.IDENTITY_URLS["production"] == (
        "https://apiz.ebay.com/commerce/identity/v1/user/")
    assert profile.DAILY_QUOTAS == {"refresh_token": 50_000, "authorization_code": 10_000,
                                    "client_credentials": 1_000}
    assert profile.looks_like_token("v^1.1#abc") and not profile.looks_like_token("AgAA")


def test_config_quota_and_simulator_read_the_profile():
    cfg = config.parse({"providers": {"e": {"client_id": "i", "client_secret": "s",
                                            "environment": "sandbox"}}}, Path("."))
    e = cfg.providers["e"]
    assert e.token_url == profile.TOKEN_URLS["sandbox"]
    assert e.scopes == profile.DEFAULT_SCOPES
    assert e.daily_quota == profile.DAILY_QUOTAS["refresh_token"]
    assert simulator.TOKEN_PATH == profile.TOKEN_PATH
    assert frozenset(profile.SELLER_SCOPES) == simulator.DEFAULT_SCOPES
    assert simulator.Simulator().expires_in == profile.ACCESS_TOKEN_LIFETIME_SECONDS
    # A token of eBay's lifetime is refreshed at max_age (one hour) by default.
    assert quota.period_seconds(e, cfg.refresh) == 3600.0
