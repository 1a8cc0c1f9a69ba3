"""Connect and reconnect (SPEC 9) over real HTTP against the simulator's consent page, code
grant and Identity API, on both backends: every route's good path and what it refuses."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from datetime import timedelta

import aiohttp
import connectflow
import pytest
import webstack
from connectflow import consent, create_link, get, open_link, walk
from test_security import assert_nowhere
from test_security import dump_tables as security_dump

import tokend.store as st
from tokend import clock, connect, model, throttle, vocabulary
from tokend.ebay import profile as ebay_profile
from tokend.providers.client import basic_credentials
from tokend.testing import simulator
from tokend.web import common

pytestmark = pytest.mark.timeout(60)

API_SCOPE = "https://api.ebay.com/oauth/api_scope"
INVENTORY = "https://api.ebay.com/oauth/api_scope/sell.inventory"


async def connect_entries(db: st.Store) -> list[model.Entry]:
    return list(reversed(await db.list_entries(source=[vocabulary.CONNECT])))


async def events(db: st.Store, type_: str) -> list[model.Event]:
    return [e for e in await db.list_events() if e.type == type_]


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


async def test_a_link_connects_an_active_ebay_account(store, keyring) -> None:
    async with connectflow.stack(store, keyring) as s:
        status, body = await create_link(s)
        assert status == 201
        assert body["url"].startswith(s.cfg.server.public_url + "/connect/")
        status, _, authorize = await open_link(s, body["url"])
        assert status == 302
        assert authorize.startswith(s.sim.authorize_url + "?")
        params = query_of(authorize)
        assert params["client_id"] == simulator.DEFAULT_CLIENT_ID
        assert params["redirect_uri"] == connectflow.RUNAME  # eBay: the RuName
        assert params["response_type"] == "code" and params["scope"] == API_SCOPE
        assert len(params["state"]) >= 43 and "code_challenge" not in params
        status, page, _ = await get(s, authorize)
        assert status == 200 and 'id="agree"' in page
        back = await consent(s, authorize)
        assert back.startswith(s.url + connect.CALLBACK_PATH)
        code = query_of(back)["code"]
        status, page, headers = await get(s, back)
        assert status == 200, page
        assert "Account connected" in page and simulator.DEFAULT_SELLER.username in page
        assert "script" not in page.lower()
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["Referrer-Policy"] == "no-referrer"

        (account,) = await store.list_accounts()
        assert account.state == model.ACTIVE and account.org == "acme"
        assert account.provider_user_id == simulator.DEFAULT_SELLER.user_id
        assert account.provider_user_name == simulator.DEFAULT_SELLER.username
        assert account.name == simulator.DEFAULT_SELLER.username
        assert account.scopes == (API_SCOPE,)
        assert account.id in page
        lifetime = ebay_profile.REFRESH_TOKEN_LIFETIME_SECONDS
        left = (account.refresh_expires_at - clock.now()).total_seconds()
        assert lifetime - 60 < left <= lifetime
        refresh = keyring.decrypt(account.refresh_token, account_id=account.id,
                                  column="refresh_token")
        access = keyring.decrypt(account.access_token, account_id=account.id,
                                 column="access_token")
        assert s.sim.user_of(refresh) == s.sim.user_of(access) == simulator.DEFAULT_SELLER
        assert s.sim.code_exchanges == 1 and s.sim.identity_calls == 1

        (event,) = await events(store, vocabulary.ACCOUNT_CONNECTED)
        assert event.data == {"account_id": account.id, "org": "acme",
                              "provider": webstack.PROVIDER, "state": "active",
                              "reason": "connected"}
        entries = await connect_entries(store)
        assert [e.action for e in entries] == [
            vocabulary.CONNECT_AUTHORIZE, vocabulary.CONNECT_EXCHANGE,
            vocabulary.CONNECT_IDENTITY, vocabulary.ACCOUNT_CONNECTED_ACTION]
        exchange = entries[1]
        assert "grant_type=authorization_code" in exchange.request["body"]
        assert f"redirect_uri={connectflow.RUNAME}" in exchange.request["body"]
        assert exchange.request["headers"]["Authorization"] == "Basic ****"
        assert entries[2].request["headers"]["Authorization"] == "Bearer ****"
        assert_nowhere({"code": code, "state": query_of(back)["state"], "refresh": refresh,
                        "access": access, "link": body["url"].rsplit("/", 1)[1]},
                       {"entries": repr([e.to_dict() for e in entries]), "page": page,
                        "links": repr(await store.find_connect_link(
                            token_hash=connect.token_hash(body["url"].rsplit("/", 1)[1]))),
                        "accounts": repr(account)})

        # The loop keeps it fresh like any other account.
        outcome = await s.worker.refresh_now(account.id)
        assert outcome.success
        assert s.sim.calls_for(refresh) == 1


async def test_a_link_works_once_and_not_after_fifteen_minutes(store, keyring,
                                                              monkeypatch) -> None:
    async with connectflow.stack(store, keyring) as s:
        _, body = await create_link(s)
        assert (await open_link(s, body["url"]))[0] == 302
        status, page, location = await open_link(s, body["url"])
        assert (status, location) == (410, None) and "already been used" in page
        status, page, _ = await open_link(s, s.url + "/connect/not-a-link")
        assert status == 404 and "does not exist" in page

        _, late = await create_link(s)
        later = clock.now() + timedelta(seconds=connect.LINK_LIFETIME_SECONDS + 1)
        monkeypatch.setattr(clock, "now", lambda: later)
        status, page, location = await open_link(s, late["url"])
        assert (status, location) == (410, None) and "expired" in page
        refused = [e for e in await connect_entries(store)
                   if e.action == vocabulary.CONNECT_REFUSED]
        assert [e.error["code"] for e in refused] == ["link_used", "unknown_link",
                                                      "link_expired"]
        assert await store.list_accounts() == []


async def test_a_replayed_callback_is_refused_and_stores_nothing_more(store, keyring) -> None:
    async with connectflow.stack(store, keyring) as s:
        status, _, back = await walk(s)
        assert status == 200
        (account,) = await store.list_accounts()
        status, page, _ = await get(s, back)
        assert status == 409 and "already been used" in page
        assert await store.list_accounts() == [account]
        assert s.sim.code_exchanges == 1  # the replay never reached the provider


async def test_unknown_missing_and_expired_states_are_refused(store, keyring,
                                                              monkeypatch) -> None:
    async with connectflow.stack(store, keyring) as s:
        callback = s.url + connect.CALLBACK_PATH
        status, page, _ = await get(s, callback + "?code=abc&state=forged")
        assert status == 400 and "does not belong" in page
        status, page, _ = await get(s, callback + "?code=abc")
        assert status == 400 and "without a state" in page
        _, body = await create_link(s)
        _, _, authorize = await open_link(s, body["url"])
        back = await consent(s, authorize)
        later = clock.now() + timedelta(seconds=connect.STATE_LIFETIME_SECONDS + 1)
        monkeypatch.setattr(clock, "now", lambda: later)
        status, page, _ = await get(s, back)
        assert status == 410 and "too long" in page
        assert await store.list_accounts() == [] and s.sim.code_exchanges == 0
        codes = [e.error["code"] for e in await connect_entries(store) if e.error]
        assert codes == ["unknown_state", "missing_state", "state_expired"]


async def test_a_flood_of_bad_callbacks_is_answered_but_not_logged_row_by_row(
        store, keyring) -> None:
    """Anyone can send a browser to the callback: every refusal is a page, but only a
    bounded number become log rows, and the next row says how many were left out."""
    now = [0.0]
    async with connectflow.stack(store, keyring) as s:
        s.app[common.CONNECT].refusals = throttle.Throttle(per_second=1.0, burst=20,
                                                           clock=lambda: now[0])
        callback = s.url + connect.CALLBACK_PATH
        for n in range(50):
            status, page, _ = await get(s, callback + f"?code=abc&state=forged-{n}")
            assert status == 400 and "does not belong" in page
        assert len(await connect_entries(store)) == 20
        now[0] += 1.0
        status, _, _ = await get(s, callback + "?code=abc&state=one-more")
        assert status == 400
        newest = (await connect_entries(store))[-1]
        assert newest.details == {"refusals_not_logged": 30}


async def test_declined_consent_stores_nothing(store, keyring) -> None:
    async with connectflow.stack(store, keyring) as s:
        status, page, back = await walk(s, decision="decline")
        assert query_of(back)["error"] == "access_denied"
        assert status == 403 and "declined" in page
        assert await store.list_accounts() == [] and s.sim.code_exchanges == 0
        assert await events(store, vocabulary.ACCOUNT_CONNECTED) == []
        (refused,) = [e for e in await connect_entries(store) if e.error]
        assert refused.error["code"] == "access_denied"
        # The state is spent: coming back again with a code changes nothing.
        status, _, _ = await get(s, back.replace("error=access_denied", "code=x"))
        assert status == 409


async def test_a_failed_exchange_is_a_4xx_page_and_a_masked_entry(store, keyring) -> None:
    async with connectflow.stack(store, keyring) as s:
        s.sim.code_lifetime_seconds = 0  # the code is dead before it is exchanged
        status, page, back = await walk(s)
        assert status == 400 and "did not accept" in page
        assert await store.list_accounts() == []
        (exchange,) = [e for e in await connect_entries(store)
                       if e.action == vocabulary.CONNECT_EXCHANGE]
        assert exchange.error["code"] == "invalid_grant"
        assert exchange.response["status"] == 400
        assert_nowhere({"code": query_of(back)["code"]},
                       {"entry": repr(exchange.to_dict())})


async def test_the_code_is_single_use_and_bound_to_the_runame(keyring) -> None:
    """The simulator as eBay: a code works once, for the RuName it was issued to."""
    async with simulator.Simulator() as sim, aiohttp.ClientSession() as http:
        sim.register_redirect("my-runame", "http://127.0.0.1:9/back")
        codes = []
        for _ in range(2):
            async with http.post(sim.authorize_url, allow_redirects=False, data={
                    "client_id": sim.client_id, "redirect_uri": "my-runame",
                    "response_type": "code", "scope": API_SCOPE, "state": "s",
                    "decision": "accept"}) as response:
                codes.append(query_of(response.headers["Location"])["code"])

        async def exchange(code: str, runame: str) -> tuple[int, dict]:
            auth = "Basic " + basic_credentials(sim.client_id, sim.client_secret)
            async with http.post(sim.token_url, headers={"Authorization": auth}, data={
                    "grant_type": "authorization_code", "code": code,
                    "redirect_uri": runame}) as response:
                return response.status, await response.json()

        assert (await exchange(codes[0], "other-runame"))[1]["error"] == "invalid_grant"
        assert (await exchange(codes[0], "my-runame"))[1]["error"] == "invalid_grant"  # spent
        status, grant = await exchange(codes[1], "my-runame")
        assert status == 200 and grant["refresh_token_expires_in"] > 0
        assert (await exchange(codes[1], "my-runame"))[1]["error"] == "invalid_grant"
        async with http.get(sim.authorize_url, params={
                "client_id": sim.client_id, "redirect_uri": "unregistered",
                "response_type": "code", "state": "s"}) as response:
            assert response.status == 400


async def test_a_reconnect_keeps_the_id_and_returns_to_active(store, keyring) -> None:
    async with connectflow.stack(store, keyring) as s:
        await walk(s)
        (before,) = await store.list_accounts()
        await store.set_state(before.id, model.REAUTH_REQUIRED, clock.now())
        status, page, _ = await walk(s, account_id=before.id)
        assert status == 200 and "Account reconnected" in page
        (after,) = await store.list_accounts()
        assert after.id == before.id and after.state == model.ACTIVE
        assert after.state_reason is None and after.version > before.version
        assert after.refresh_token != before.refresh_token
        reasons = [e.data["reason"] for e in await events(store, vocabulary.ACCOUNT_CONNECTED)]
        assert reasons == ["connected", "reconnected"]


async def test_a_reconnect_by_another_ebay_user_is_refused(store, keyring) -> None:
    async with connectflow.stack(store, keyring) as s:
        await walk(s)
        (before,) = await store.list_accounts()
        s.sim.seller = simulator.Seller("someone-else-01", "other-seller")
        status, page, _ = await walk(s, account_id=before.id)
        assert status == 409 and "different user" in page.lower()
        assert await store.list_accounts() == [before]
        assert len(await events(store, vocabulary.ACCOUNT_CONNECTED)) == 1
        # A new link for the same seller in the same org names the account to reconnect.
        s.sim.seller = simulator.DEFAULT_SELLER
        status, page, _ = await walk(s)
        assert status == 409 and "already connected" in page


async def test_narrower_granted_scopes_are_recorded_and_shown(store, keyring) -> None:
    async with connectflow.stack(store, keyring) as s:
        s.sim.grant_scopes = frozenset({API_SCOPE})
        status, page, _ = await walk(s, scopes=[API_SCOPE, INVENTORY])
        assert status == 200
        (account,) = await store.list_accounts()
        assert account.scopes == (API_SCOPE,)
        assert "not granted" in page and INVENTORY in page
        (done,) = [e for e in await connect_entries(store)
                   if e.action == vocabulary.ACCOUNT_CONNECTED_ACTION]
        assert done.details["not_granted"] == [INVENTORY]


async def test_a_generic_provider_uses_pkce_and_the_callback_url(store, keyring) -> None:
    async with connectflow.stack(store, keyring, generic=True) as s:
        _, body = await create_link(s)
        _, _, authorize = await open_link(s, body["url"])
        params = query_of(authorize)
        assert params["redirect_uri"] == s.url + connect.CALLBACK_PATH
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
        link = await store.find_connect_link(
            token_hash=connect.token_hash(body["url"].rsplit("/", 1)[1]))
        assert link.code_verifier.startswith("ENC:v1:")
        verifier = keyring.decrypt(link.code_verifier, account_id=link.id,
                                   column="code_verifier")
        assert connect.pkce_challenge(verifier) == params["code_challenge"]
        status, page, _ = await get(s, await consent(s, authorize))
        assert status == 200, page
        (account,) = await store.list_accounts()
        assert account.provider_user_id is None and s.sim.identity_calls == 0
        (exchange,) = [e for e in await connect_entries(store)
                       if e.action == vocabulary.CONNECT_EXCHANGE]
        assert verifier not in repr(exchange.to_dict())
        assert "code_verifier=" in exchange.request["body"]


async def test_the_link_api_refuses_what_it_must(store, keyring) -> None:
    async with connectflow.stack(store, keyring) as s:
        await webstack.add_account(store, keyring, "globex-1", org="globex")
        assert (await create_link(s, token="wrong"))[0] == 401
        assert (await create_link(s, token=webstack.ORG_ACME, org="globex"))[0] == 403
        assert (await create_link(s, provider="nope"))[0] == 400
        assert (await create_link(s, account_id="missing"))[0] == 404
        assert (await create_link(s, token=webstack.ORG_ACME, account_id="globex-1"))[0] == 404
        assert (await create_link(s, scopes="x"))[0] == 400
        assert (await create_link(s, extra=1))[0] == 400
        async with s.http.post(s.url + "/api/connect-links", data=b"{",
                               headers=s.auth()) as response:
            assert response.status == 400
        await store.set_state("globex-1", model.DELETED, clock.now())
        assert (await create_link(s, org="globex", account_id="globex-1"))[0] == 409
        assert (await create_link(s, token=webstack.ORG_ACME))[0] == 201


async def test_no_public_url_means_no_links(store, keyring) -> None:
    async with webstack.running(store, keyring) as s:
        status, body = await create_link(s)
        assert status == 409 and "public_url" in body["error"]


async def dump_tables(db_url: str) -> str:
    if db_url.startswith("postgresql"):
        return await security_dump(db_url)
    with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite://"))) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(f"-- {t}\n" + "\n".join(map(repr, conn.execute(f'SELECT * FROM "{t}"')))
                         for t in tables)


@pytest.mark.parametrize("generic", [False, True], ids=["ebay", "pkce"])
async def test_no_secret_of_the_flow_is_kept_anywhere(store, db_url, keyring, capsys,
                                                      generic) -> None:
    """Codes, states, link tokens, the PKCE verifier, every token issued and the client
    secret appear in no table, log entry, log line or page, through a connect, a
    reconnect, a replay and a failed exchange."""
    async with connectflow.stack(store, keyring, generic=generic) as s:
        seen: dict[str, str] = {"client_secret": s.sim.client_secret}
        pages: dict[str, str] = {}

        async def flow(label: str, **link) -> None:
            _, body = await create_link(s, **link)
            seen[f"{label}-link"] = body["url"].rsplit("/", 1)[1]
            _, pages[f"{label}-open"], authorize = await open_link(s, body["url"])
            back = await consent(s, authorize)
            params = query_of(back)
            seen[f"{label}-code"], seen[f"{label}-state"] = params["code"], params["state"]
            stored = await store.find_connect_link(state_hash=connect.token_hash(params["state"]))
            if stored.code_verifier:
                seen[f"{label}-verifier"] = keyring.decrypt(
                    stored.code_verifier, account_id=stored.id, column="code_verifier")
            _, pages[label], _ = await get(s, back)
            _, pages[f"{label}-replay"], _ = await get(s, back)

        await flow("connect")
        (account,) = await store.list_accounts()
        await flow("reconnect", account_id=account.id)
        s.sim.code_lifetime_seconds = 0
        await flow("failed", account_id=account.id)
        assert (await s.worker.refresh_now(account.id)).success
        for n, token in enumerate(s.sim._users):
            seen[f"issued-{n}"] = token
        assert len(seen) >= 10
        lines = capsys.readouterr().out
        assert "connect_exchange" in lines and "account_connected" in lines
        assert_nowhere(seen, {"tables": await dump_tables(db_url), "log lines": lines,
                              **pages})


def test_connect_configuration_defaults_and_errors(tmp_path) -> None:
    from tokend import config

    base = {"client_id": "id", "client_secret": "secret"}
    cfg = config.parse({"providers": {
        "sbx": {**base, "environment": "sandbox", "redirect_uri": "my-runame"},
        "gen": {**base, "type": "oauth2", "token_url": "https://a.example/token",
                "authorize_url": "https://a.example/authorize"}},
        "server": {"public_url": "https://tokens.example.com/"}}, tmp_path)
    sbx, gen = cfg.providers["sbx"], cfg.providers["gen"]
    assert sbx.authorize_url == ebay_profile.AUTHORIZE_URLS["sandbox"]
    assert sbx.identity_url == ebay_profile.IDENTITY_URLS["sandbox"]
    assert sbx.redirect_uri == "my-runame"
    assert (gen.authorize_url, gen.identity_url) == ("https://a.example/authorize", "")
    assert cfg.server.public_url == "https://tokens.example.com"
    for data, key in (({"server": {"public_url": "tokens.example.com"}}, "server.public_url"),
                      ({"providers": {"p": {**base, "authorize_url": "ftp://x"}}},
                       "providers.p.authorize_url"),
                      ({"providers": {"p": {**base, "identity_url": 3}}},
                       "providers.p.identity_url")):
        with pytest.raises(config.ConfigError) as error:
            config.parse(data, tmp_path)
        assert error.value.key == key


async def test_the_redirect_target_is_only_the_configured_authorize_url(store, keyring) -> None:
    """Nothing a visitor adds to the link moves the redirect; a HEAD spends nothing."""
    async with connectflow.stack(store, keyring) as s:
        _, body = await create_link(s)
        async with s.http.head(body["url"], allow_redirects=False) as response:
            assert response.status == 405
        status, _, location = await open_link(
            s, body["url"] + "?redirect_uri=https://evil.example/&authorize_url=https://evil.example/")
        assert status == 302 and location.startswith(s.sim.authorize_url + "?")
        assert query_of(location)["redirect_uri"] == connectflow.RUNAME
        status, page, headers = await get(s, s.url + connect.CALLBACK_PATH
                                          + "?state=x&next=https://evil.example/")
        assert status == 400 and "Location" not in headers and "evil" not in page
