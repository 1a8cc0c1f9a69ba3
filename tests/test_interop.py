"""Generic RFC 6749 providers: client authentication, reauth codes, token types, scope,
defaults, and vending when the provider's tokens live shorter than apps ask for."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import urllib.parse
from pathlib import Path

import aiohttp
import pytest
import webstack
from kit import Harness

from tokend import config, model, providers, refresher, vending
from tokend.providers import answer
from tokend.testing import simulator

ODD_SECRET = "s3cr+t%2F:with/odd=chars and space"


def generic_config(**overrides) -> config.ProviderConfig:
    values = {
        "name": "acme", "type": "oauth2", "environment": None, "client_id": "app:id+1",
        "client_secret": ODD_SECRET, "scopes": ("read",),
        "token_url": "http://127.0.0.1:9/token", "client_auth": "basic",
    }
    values.update(overrides)
    return config.ProviderConfig(**values)


def build(**overrides) -> providers.Provider:
    return providers.build(generic_config(**overrides), request_timeout_seconds=5.0)


def form(prepared) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(prepared.body, strict_parsing=True))


# -- client authentication ------------------------------------------------------------------


def test_basic_auth_form_urlencodes_id_and_secret_before_base64():
    prepared = build().prepare("opaque-refresh")
    scheme, _, encoded = prepared.headers["Authorization"].partition(" ")
    raw_id, _, raw_secret = base64.b64decode(encoded).decode().partition(":")
    assert scheme == "Basic" and ":" not in raw_secret
    assert raw_secret.startswith("s3cr%2Bt%252F%3Awith%2Fodd%3Dchars+and")
    assert urllib.parse.unquote_plus(raw_id) == "app:id+1"
    assert urllib.parse.unquote_plus(raw_secret) == ODD_SECRET
    assert "client_secret" not in form(prepared)


async def test_basic_auth_with_an_odd_secret_is_accepted_by_the_simulator():
    async with simulator.Simulator(client_id="app:id+1", client_secret=ODD_SECRET) as sim, \
            aiohttp.ClientSession() as session:
        provider = providers.build(dataclasses.replace(
            generic_config(token_url=sim.token_url, scopes=()), type="ebay",
            environment="sandbox"), request_timeout_seconds=5.0)
        result = await provider.send(session, provider.prepare("v^1.1#abc"))
    assert result.ok, result.error


def test_client_auth_none_sends_the_client_id_only():
    prepared = build(client_auth="none", client_secret="").prepare("opaque-refresh")
    assert "Authorization" not in prepared.headers
    assert form(prepared)["client_id"] == "app:id+1"
    assert "client_secret" not in form(prepared)


def test_client_auth_none_in_config_needs_no_secret_and_refuses_one(tmp_path: Path):
    base = {"type": "oauth2", "token_url": "https://a.example/t", "client_id": "pub",
            "client_auth": "none"}
    cfg = config.parse({"providers": {"pub": base}}, tmp_path)
    assert cfg.providers["pub"].client_secret == ""
    with pytest.raises(config.ConfigError, match=r"providers\.pub\.client_secret"):
        config.parse({"providers": {"pub": {**base, "client_secret": "x"}}}, tmp_path)
    with pytest.raises(config.ConfigError, match=r"providers\.e\.client_auth"):
        config.parse({"providers": {"e": {"client_id": "i", "client_auth": "none"}}}, tmp_path)


# -- what the answer means ------------------------------------------------------------------


def test_reauth_error_codes_are_per_provider():
    body = '{"error": "bad_refresh_token"}'
    default = answer.interpret(400, "Bad Request", body, "application/json",
                               default_expires_in_seconds=3600)
    assert default.kind == providers.CONFIG
    custom = answer.interpret(400, "Bad Request", body, "application/json",
                              default_expires_in_seconds=3600,
                              reauth_codes=("invalid_grant", "bad_refresh_token"))
    assert (custom.code, custom.kind) == ("bad_refresh_token", providers.REAUTH)
    # A server error cannot prove a dead grant, whatever code it carries.
    assert answer.interpret(503, None, body, "application/json",
                            default_expires_in_seconds=3600,
                            reauth_codes=("bad_refresh_token",)).kind == providers.TRANSIENT


def test_reauth_error_codes_in_config(tmp_path: Path):
    table = {"type": "oauth2", "token_url": "https://a.example/t", "client_id": "i",
             "client_secret": "s", "reauth_error_codes": ["invalid_grant", "bad_refresh_token"]}
    cfg = config.parse({"providers": {"a": table}}, tmp_path)
    assert cfg.providers["a"].reauth_error_codes == ("invalid_grant", "bad_refresh_token")
    assert config.parse({"providers": {"a": {**table, "reauth_error_codes": ["invalid_grant"]}}},
                        tmp_path).providers["a"].reauth_error_codes == ("invalid_grant",)
    with pytest.raises(config.ConfigError, match=r"providers\.a\.reauth_error_codes"):
        config.parse({"providers": {"a": {**table, "reauth_error_codes": []}}}, tmp_path)


@pytest.mark.parametrize(("provider_type", "token_type", "ok"), [
    ("oauth2", "Bearer", True), ("oauth2", "bearer", True), ("oauth2", None, True),
    ("oauth2", "mac", False), ("oauth2", "DPoP", False), ("oauth2", 7, False),
    ("ebay", "User Access Token", True), ("ebay", "N_A", False),
])
def test_a_token_type_other_than_bearer_is_a_classified_failure(provider_type, token_type, ok):
    types = ("bearer",) if provider_type == "oauth2" else ("user access token", "bearer")
    payload = '{"access_token": "at", "expires_in": 60' + (
        "" if token_type is None else f', "token_type": {token_type!r}'.replace("'", '"')) + "}"
    outcome = answer.interpret(200, "OK", payload, "application/json",
                               default_expires_in_seconds=3600, token_types=types)
    if ok:
        assert isinstance(outcome, providers.Grant)
    else:
        assert (outcome.code, outcome.kind) == (providers.UNSUPPORTED_TOKEN_TYPE,
                                                providers.CONFIG)


def test_missing_expires_in_takes_the_providers_configured_default(tmp_path: Path):
    table = {"type": "oauth2", "token_url": "https://a.example/t", "client_id": "i",
             "client_secret": "s", "default_expires_in_seconds": 600}
    provider_config = config.parse({"providers": {"a": table}}, tmp_path).providers["a"]
    assert provider_config.expires_in_fallback_seconds == 600
    grant = answer.interpret(200, "OK", '{"access_token": "at"}', "application/json",
                             default_expires_in_seconds=600)
    assert grant.expires_in == 600 and grant.expires_in_assumed
    told = answer.interpret(200, "OK", '{"access_token": "at", "expires_in": 60}',
                            "application/json", default_expires_in_seconds=600)
    assert told.expires_in == 60 and not told.expires_in_assumed


def test_refresh_requests_can_leave_out_scope():
    assert form(build().prepare("r"))["scope"] == "read"
    assert "scope" not in form(build(refresh_sends_scope=False).prepare("r", ("write",)))


def test_environment_and_daily_quota_only_for_ebay(tmp_path: Path):
    table = {"type": "oauth2", "token_url": "https://a.example/t", "client_id": "i",
             "client_secret": "s"}
    generic = config.parse({"providers": {"a": table}}, tmp_path).providers["a"]
    assert generic.environment is None and generic.daily_quota is None
    for key, value in (("environment", "production"), ("daily_quota", 10)):
        with pytest.raises(config.ConfigError, match=rf"providers\.a\.{key}: only means"):
            config.parse({"providers": {"a": {**table, key: value}}}, tmp_path)


async def test_a_generic_providers_entries_are_not_labelled_production(harness: Harness):
    harness.sim.token_type = "Bearer"
    generic = dataclasses.replace(harness.cfg.providers[harness.provider], type="oauth2",
                                  environment=None)
    harness.worker.clients = {harness.provider: providers.build(
        generic, request_timeout_seconds=5.0)}
    await harness.add("a1")
    outcome = await harness.worker.refresh_now("a1")
    assert outcome.success and outcome.entry.environment is None


async def test_a_persistent_invalid_scope_stops_retrying(harness: Harness):
    harness.sim.allowed_scopes = frozenset({"something-else"})
    await harness.add("a1")
    first = await harness.worker.refresh_now("a1")
    assert first.error_code == "invalid_scope"
    assert (await harness.db.get_account("a1")).state == model.ACTIVE  # once may be a blip
    second = await harness.worker.refresh_now("a1")
    assert second.error_code == "invalid_scope"
    after = await harness.db.get_account("a1")
    assert after.state == model.REAUTH_REQUIRED and after.last_error == "invalid_scope"
    assert await harness.claim_due(now_offset_seconds=10 ** 7) == []
    assert harness.sim.calls == 2


# -- vending short-lived tokens --------------------------------------------------------------


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


async def vend(stack, account_id="acct-1", **params):
    query = {k: str(v) for k, v in params.items()}
    return await stack.get_json(f"/api/accounts/{account_id}/access-token",
                                token=webstack.CONSUMER, params=query)


async def test_a_vend_never_spends_a_refresh_and_then_refuses(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    stack.sim.configure(expires_in=200, rotate=True)
    status, body = await vend(stack, min_valid_seconds=300)
    assert status == 200, body
    assert 190 <= body["expires_in"] <= 200 and body["token_type"] == "Bearer"
    assert stack.sim.calls == 1
    # As good as a refresh could make it: the next vends take it, no refresh every call.
    for _ in range(3):
        status, again = await vend(stack, min_valid_seconds=300)
        assert (status, again["access_token"]) == (200, body["access_token"])
    assert stack.sim.calls == 1


async def test_sixty_vends_on_three_replicas_cost_one_refresh(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    stack.sim.configure(expires_in=3000, rotate=True, latency_seconds=0.3)
    vendors = [stack.vendor]
    for name in ("replica-b", "replica-c"):
        worker = refresher.Refresher(
            db=stack.db, keyring=stack.keyring, clients=stack.worker.clients,
            session=stack.worker.session, hub=stack.hub, stats=stack.stats,
            settings=stack.cfg.refresh, owner=name)
        vendors.append(vending.Vendor(db=stack.db, keyring=stack.keyring, worker=worker,
                                      stats=stack.stats, settings=stack.cfg.refresh))
    answers = await asyncio.gather(*(
        vendors[n % 3].vend("acct-1", min_valid_seconds=3500) for n in range(60)))
    assert len({a.access_token for a in answers}) == 1
    assert stack.sim.calls == 1
    assert all(a.refreshed for a in answers)
