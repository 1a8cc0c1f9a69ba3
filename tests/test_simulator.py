"""The eBay identity simulator over loopback, driven by the real provider client."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp import web
from kit import wait_until

from tokend import config, crypto, providers
from tokend.testing import simulator

SCOPE = "https://api.ebay.com/oauth/api_scope"
INVENTORY = "https://api.ebay.com/oauth/api_scope/sell.inventory"


@pytest.fixture
def keyring() -> crypto.Keyring:
    return crypto.Keyring.from_lines([crypto.generate_key_line()])


@pytest.fixture
async def sim():
    running = simulator.Simulator()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def new_token() -> str:
    return "v^1.1#i^1#r^1#t^" + secrets.token_urlsafe(32)


def client_for(sim: simulator.Simulator, *, timeout: float = 5.0, **overrides):
    values = {
        "name": "ebay-sim", "type": "ebay", "environment": "sandbox",
        "client_id": sim.client_id, "client_secret": sim.client_secret, "scopes": (SCOPE,),
        "token_url": sim.token_url, "client_auth": "basic", "daily_quota": None,
    }
    values.update(overrides)
    return providers.build(config.ProviderConfig(**values), request_timeout_seconds=timeout)


async def refresh(provider, session, keyring, token=None, scopes=()) -> providers.Result:
    return await provider.send(session, provider.prepare(token or new_token(), scopes))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- behaviour -----------------------------------------------------------------------------

async def test_a_refresh_gets_an_ebay_shaped_access_token(sim, session, keyring):
    token = new_token()
    result = await refresh(client_for(sim), session, keyring, token)
    assert result.ok, result
    assert result.grant.access_token.startswith("v^1.1#i^1#")
    assert result.grant.expires_in == 7200.0
    assert result.grant.refresh_token is None
    assert result.response["status"] == 200
    assert result.response["body"]["token_type"] == "User Access Token"
    assert sim.calls == 1 and sim.successes == 1 and sim.calls_for(token) == 1


async def test_expires_in_is_a_knob(sim, session, keyring):
    sim.expires_in = 300
    result = await refresh(client_for(sim), session, keyring)
    assert result.grant.expires_in == 300.0


async def test_rotation_issues_a_new_refresh_token_and_kills_the_old(sim, session, keyring):
    sim.rotate = True
    provider = client_for(sim)
    old = new_token()
    first = await refresh(provider, session, keyring, old)
    rotated = first.grant.refresh_token
    assert rotated and rotated != old and rotated.startswith("v^1.1#")
    assert first.grant.refresh_token_expires_in == sim.refresh_token_expires_in
    again = await refresh(provider, session, keyring, old)
    assert (again.error_code, again.kind) == ("invalid_grant", "reauth")
    assert (await refresh(provider, session, keyring, rotated)).ok


async def test_a_concurrent_double_refresh_under_rotation_loses_one(sim, session, keyring):
    sim.rotate = True
    sim.latency_seconds = 0.05
    provider = client_for(sim)
    token = new_token()
    results = await asyncio.gather(*(refresh(provider, session, keyring, token)
                                     for _ in range(2)))
    assert sorted(r.ok for r in results) == [False, True]
    assert [r.error_code for r in results if not r.ok] == ["invalid_grant"]
    assert sim.max_in_flight_per_token == 2  # the stat sees the double refresh


async def test_in_flight_stats_count_per_token(sim, session, keyring):
    sim.latency_seconds = 0.05
    provider = client_for(sim)
    tokens = [new_token() for _ in range(10)]
    results = await asyncio.gather(*(refresh(provider, session, keyring, t) for t in tokens))
    assert all(r.ok for r in results)
    stats = sim.stats()
    assert stats["calls"] == 10 and stats["successes"] == 10
    assert stats["max_in_flight"] > 1
    assert stats["max_in_flight_per_token"] == 1
    assert stats["in_flight"] == 0
    assert stats["tokens_seen"] == 10 and stats["max_calls_per_token"] == 1
    assert stats["by_status"] == {"200": 10}
    assert set(stats["token_calls"]) == {simulator.fingerprint(t) for t in tokens}
    assert not any(t in str(stats) for t in tokens)


async def test_revoked_tokens_get_invalid_grant(sim, session, keyring):
    token = new_token()
    sim.revoke(token)
    result = await refresh(client_for(sim), session, keyring, token)
    assert (result.error_code, result.kind) == ("invalid_grant", "reauth")
    assert result.response["status"] == 400


async def test_tokens_not_shaped_like_ebay_v1_1_get_invalid_grant(sim, session, keyring):
    result = await refresh(client_for(sim), session, keyring, "v^2.0#something")
    assert result.error_code == "invalid_grant"


async def test_requested_scopes_must_be_a_subset_of_the_consent(sim, session, keyring):
    provider = client_for(sim)
    token = new_token()
    sim.consent(token, [SCOPE])
    too_much = await refresh(provider, session, keyring, token, scopes=(SCOPE, INVENTORY))
    assert (too_much.error_code, too_much.kind) == ("invalid_scope", "config")
    assert (await refresh(provider, session, keyring, token, scopes=(SCOPE,))).ok
    unknown = await refresh(provider, session, keyring, scopes=("https://x.invalid/scope",))
    assert unknown.error_code == "invalid_scope"
    assert (await refresh(provider, session, keyring, scopes=(SCOPE, INVENTORY))).ok


async def test_consent_follows_a_rotated_token(sim, session, keyring):
    sim.rotate = True
    provider = client_for(sim)
    token = new_token()
    sim.consent(token, [SCOPE])
    rotated = (await refresh(provider, session, keyring, token)).grant.refresh_token
    result = await refresh(provider, session, keyring, rotated, scopes=(SCOPE, INVENTORY))
    assert result.error_code == "invalid_scope"


async def test_a_wrong_client_secret_is_a_provider_failure(sim, session, keyring):
    result = await refresh(client_for(sim, client_secret="wrong-secret"), session, keyring)
    assert (result.error_code, result.kind) == ("invalid_client", "provider")
    assert result.response["status"] == 401
    assert sim.successes == 0


async def test_body_auth_works_only_when_enabled(sim, session, keyring):
    provider = client_for(sim, type="oauth2", client_auth="body")
    refused = await refresh(provider, session, keyring)
    assert refused.error_code == "invalid_client"
    sim.body_auth = True
    sim.token_type = "Bearer"  # a generic provider takes only bearer tokens
    assert (await refresh(provider, session, keyring)).ok


@pytest.mark.parametrize(("headers", "data", "status", "code"), [
    ({"Content-Type": "application/json"}, b'{"grant_type": "refresh_token"}', 400,
     "invalid_request"),
    ({}, {"grant_type": "password", "username": "x"}, 400, "unsupported_grant_type"),
    ({}, {"grant_type": "authorization_code", "code": "x"}, 400, "invalid_request"),
    ({}, {"grant_type": "authorization_code", "code": "x", "redirect_uri": "r"}, 400,
     "invalid_grant"),
    ({}, {"refresh_token": "v^1.1#x"}, 400, "invalid_request"),
    ({}, {"grant_type": "refresh_token"}, 400, "invalid_request"),
    ({"Authorization": "Bearer abc"}, {"grant_type": "refresh_token"}, 401, "invalid_client"),
    ({"Authorization": "Basic !!!not-base64"}, {"grant_type": "refresh_token"}, 401,
     "invalid_client"),
])
async def test_malformed_requests(sim, session, headers, data, status, code):
    headers = {"Authorization": basic(sim.client_id, sim.client_secret), **headers}
    async with session.post(sim.token_url, data=data, headers=headers) as response:
        body = await response.json()
    assert (response.status, body["error"]) == (status, code)


# -- faults --------------------------------------------------------------------------------

async def test_429_carries_retry_after(sim, session, keyring):
    sim.fail_mode, sim.retry_after_seconds = "429", 42
    result = await refresh(client_for(sim), session, keyring)
    assert (result.error_code, result.kind) == ("rate_limited", "transient")
    assert result.retry_after_seconds == 42.0
    assert result.error_description.startswith("Too many requests")


async def test_500_and_502_html_are_transient(sim, session, keyring):
    provider = client_for(sim)
    sim.fail_mode = "500"
    plain = await refresh(provider, session, keyring)
    assert (plain.error_code, plain.kind) == ("server_error", "transient")
    sim.fail_mode = "502_html"
    html = await refresh(provider, session, keyring)
    assert (html.error_code, html.kind) == ("server_error", "transient")
    assert "502 Bad Gateway" in html.response["body"]
    assert sim.stats()["by_status"] == {"500": 1, "502": 1}


async def test_hang_times_out_within_the_request_timeout(sim, session, keyring):
    sim.fail_mode = "hang"
    started = time.monotonic()
    result = await refresh(client_for(sim, timeout=0.5), session, keyring)
    elapsed = time.monotonic() - started
    assert (result.error_code, result.kind) == ("timeout", "transient")
    assert 0.4 <= elapsed < 1.5
    assert result.response is None
    await wait_until(lambda: sim.in_flight == 0, 2)  # the client's disconnect ends it


async def test_reset_is_a_connection_error(sim, session, keyring):
    sim.fail_mode = "reset"
    result = await refresh(client_for(sim), session, keyring)
    assert (result.error_code, result.kind) == ("connection_error", "transient")
    assert result.response is None and sim.aborted == 1


async def test_huge_is_a_bad_response_read_only_to_the_limit(sim, session, keyring):
    sim.fail_mode = "huge"
    started = time.monotonic()
    result = await refresh(client_for(sim), session, keyring)
    assert (result.error_code, result.kind) == ("bad_response", "transient")
    assert "larger than" in result.error_description
    assert time.monotonic() - started < 5
    assert len(str(result.response)) < 4096


async def test_huge_without_a_content_length_is_cut_while_streaming(session, keyring):
    """The client must stop on its own count, not just trust Content-Length."""
    async def chunked(request):
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(simulator.HUGE_BODY_BYTES // 65536):
                await response.write(b"x" * 65536)
        except ConnectionError:
            pass
        return response

    app = web.Application()
    app.router.add_post(simulator.TOKEN_PATH, chunked)
    runner = web.AppRunner(app, handler_cancellation=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        provider = providers.build(config.ProviderConfig(
            name="ebay-sim", type="ebay", environment="sandbox", client_id="c",
            client_secret="s", scopes=(SCOPE,), client_auth="basic", daily_quota=None,
            token_url=f"http://{host}:{port}{simulator.TOKEN_PATH}",
        ), request_timeout_seconds=5.0)
        result = await refresh(provider, session, keyring)
        assert result.error_code == "bad_response"
    finally:
        await runner.cleanup()


async def test_nobody_listening_is_a_connection_error(session, keyring):
    stopped = simulator.Simulator()
    await stopped.start()
    provider = client_for(stopped)
    await stopped.stop()
    result = await refresh(provider, session, keyring)
    assert (result.error_code, result.kind) == ("connection_error", "transient")
    assert result.error_description.startswith("ClientConnectorError")


async def test_fail_times_fails_a_few_then_recovers(sim, session, keyring):
    provider = client_for(sim)
    sim.configure(fail_mode="500", fail_times=2)
    codes = [(await refresh(provider, session, keyring)).error_code for _ in range(3)]
    assert codes == ["server_error", "server_error", None]
    assert sim.fail_mode is None


async def test_error_rate_answers_with_random_500s(sim, session, keyring):
    sim.error_rate = 1.0
    result = await refresh(client_for(sim), session, keyring)
    assert result.error_code == "server_error"
    sim.error_rate = 0.0
    assert (await refresh(client_for(sim), session, keyring)).ok


# -- nothing is sent for an unusable token -----------------------------------------------

@pytest.mark.parametrize("case", ["empty", "double_encrypted", "not_ebay"])
async def test_decrypt_failures_send_nothing(sim, keyring, case):
    token = {
        "empty": "",
        "double_encrypted": keyring.encrypt(new_token(), account_id="a1", column="refresh_token"),
        "not_ebay": "AgAAAA**opaque",
    }[case]
    with pytest.raises(providers.RefreshError) as caught:
        client_for(sim).prepare(token, account_id="a1")
    assert caught.value.code == "decrypt_failed"
    assert sim.calls == 0


# -- steering from another process ------------------------------------------------------

async def test_http_config_and_stats(sim, session, keyring):
    url = sim.base_url + "/_sim/config"
    token = new_token()
    async with session.post(url, json={"fail_mode": "429", "retry_after_seconds": 5,
                                       "latency_seconds": 0.01, "revoke": [token]}) as response:
        assert response.status == 200
        assert (await response.json())["fail_mode"] == "429"
    assert (sim.fail_mode, sim.retry_after_seconds, sim.latency_seconds) == ("429", 5, 0.01)
    assert (await refresh(client_for(sim), session, keyring)).retry_after_seconds == 5.0
    async with session.post(url, json={"fail_mode": None, "rotate": True}) as response:
        assert response.status == 200
    assert (await refresh(client_for(sim), session, keyring, token)).error_code == "invalid_grant"
    async with session.get(sim.base_url + "/_sim/stats") as response:
        stats = await response.json()
    assert stats["calls"] == 2 and stats["by_status"] == {"400": 1, "429": 1}
    assert stats["config"]["rotate"] is True
    assert stats["token_calls"][simulator.fingerprint(token)] == 1
    async with session.get(sim.base_url + "/_sim/stats?tokens=0") as response:
        assert "token_calls" not in await response.json()
    async with session.post(url, json={"reset_stats": True}) as response:
        assert response.status == 200
    assert sim.calls == 0


@pytest.mark.parametrize("body", [
    b"not json", b"[1]", b'{"nope": 1}', b'{"fail_mode": "explode"}', b'{"rotate": "yes"}',
    b'{"latency_seconds": -1}', b'{"revoke": "v^1.1#x"}', b'{"fail_times": 1.5}',
])
async def test_http_config_rejects_bad_input(sim, session, body):
    async with session.post(sim.base_url + "/_sim/config", data=body) as response:
        assert response.status == 400
        assert "error" in await response.json()


async def test_standalone_process_serves_and_stops_on_sigterm(keyring):
    env = {**os.environ, "TOKEND_SIM_CLIENT_SECRET": "standalone-secret"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tokend.testing.simulator", "--port", "0", "--latency-ms", "5",
         "--rotate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        base_url = line.strip()
        assert base_url.startswith("http://127.0.0.1:")
        provider = providers.build(config.ProviderConfig(
            name="ebay-sim", type="ebay", environment="sandbox",
            client_id=simulator.DEFAULT_CLIENT_ID, client_secret="standalone-secret",
            scopes=(SCOPE,), token_url=base_url + simulator.TOKEN_PATH, client_auth="basic",
            daily_quota=None), request_timeout_seconds=5.0)
        async with aiohttp.ClientSession() as session:
            result = await refresh(provider, session, keyring)
        assert result.ok and result.grant.refresh_token
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


async def test_it_keeps_up_with_a_burst(sim, session, keyring):
    """A smoke check of speed (the benchmarks measure it): 500 refreshes, bounded time."""
    provider = client_for(sim)
    prepared = [provider.prepare(new_token()) for _ in range(500)]
    gate = asyncio.Semaphore(50)

    async def one(p):
        async with gate:
            return await provider.send(session, p)

    started = time.monotonic()
    results = await asyncio.gather(*(one(p) for p in prepared))
    assert all(r.ok for r in results)
    assert time.monotonic() - started < 10
    assert sim.max_in_flight_per_token == 1


# -- the client_credentials grant and the Notification API -----------------------------------


async def test_client_credentials_grant_through_the_provider_client(sim, session) -> None:
    provider = client_for(sim)
    result = await provider.send(session, provider.prepare_client_credentials([SCOPE]))
    assert result.ok and result.grant.refresh_token is None
    assert result.grant.access_token.startswith(simulator.APP_TOKEN_PREFIX)
    assert sim.app_token_valid(result.grant.access_token)
    assert "client_credentials" in result.request["body"]
    assert result.response["body"]["access_token"] != result.grant.access_token  # masked
    refused = await provider.send(session, provider.prepare_client_credentials([INVENTORY]))
    assert refused.error_code == "invalid_scope"  # a user scope is no application's
    wrong = client_for(sim, client_secret="not-the-secret")
    result = await wrong.send(session, wrong.prepare_client_credentials([SCOPE]))
    assert result.error_code == "invalid_client"
    assert sim.app_token_grants == 1


async def test_get_public_key_wants_a_live_application_token(sim, session) -> None:
    provider = client_for(sim)
    app_token = (await provider.send(session, provider.prepare_client_credentials([SCOPE]))
                 ).grant.access_token
    user_token = (await refresh(provider, session, None)).grant.access_token
    url = sim.public_key_url + sim.default_kid
    for headers in ({}, {"Authorization": f"Bearer {user_token}"},
                    {"Authorization": f"Basic {app_token}"}):
        async with session.get(url, headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["errors"][0]["errorId"] == 1001
    bearer = {"Authorization": f"Bearer {app_token}"}
    async with session.get(sim.public_key_url + "nope", headers=bearer) as response:
        assert response.status == 404
    async with session.get(url, headers=bearer) as response:
        body = await response.json()
    assert (body["algorithm"], body["digest"]) == ("ECDSA", "SHA1")
    assert body["key"].startswith("-----BEGIN PUBLIC KEY-----M") and "\n" not in body["key"]
    assert sim.public_key_calls == 5
