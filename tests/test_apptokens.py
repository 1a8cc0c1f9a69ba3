"""Application tokens (the client_credentials grant) over HTTP with the simulator: one
grant per scope set, cached sealed in the database, renewed before expiry, single
flight in a process and across replicas, refusals, and the masked log entry."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest
import webstack
from kit import wait_until

from tokend import apptokens, crypto, store
from tokend.testing import simulator

CONSUMER, CONSUMER_ACME = webstack.CONSUMER, webstack.CONSUMER_ACME
PATH = f"/api/providers/{webstack.PROVIDER}/app-token"
FEED = "https://api.ebay.com/oauth/api_scope/buy.item.feed"


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


def replica(stack: webstack.Stack, owner: str, **kwargs) -> apptokens.AppTokens:
    """Another process's app tokens on the same database."""
    return apptokens.AppTokens(db=stack.db, keyring=stack.keyring,
                               clients=stack.worker.clients, session=stack.worker.session,
                               hub=stack.hub, settings=stack.cfg.refresh, owner=owner, **kwargs)


async def test_one_grant_is_cached_sealed_and_logged_masked(stack):
    status, body = await stack.get_json(PATH, token=CONSUMER)
    assert status == 200, body
    assert set(body) == {"access_token", "token_type", "expires_in", "expires_at"}
    assert body["token_type"] == "Bearer"
    assert 7000 < body["expires_in"] <= 7200
    assert body["access_token"].startswith(simulator.APP_TOKEN_PREFIX)
    assert stack.sim.app_token_valid(body["access_token"])
    # Again, and with another consumer token: the same token, no second grant.
    assert await stack.get_json(PATH, token=CONSUMER) == (200, body)
    status, again = await stack.get_json(PATH, token=CONSUMER_ACME)
    assert again["access_token"] == body["access_token"]
    assert stack.sim.app_token_grants == 1
    # Stored sealed, bound to its row.
    key = apptokens.token_id(webstack.PROVIDER, "https://api.ebay.com/oauth/api_scope")
    row = await stack.db.get_app_token(key)
    assert row.access_token.startswith("ENC:v1:")
    assert body["access_token"] not in row.access_token
    assert row.lease_owner is None
    with pytest.raises(crypto.DecryptError):
        stack.keyring.decrypt(row.access_token, account_id="app-token:other", column="access_token")
    # One masked vend entry for the one exchange.
    _, logs = await stack.get_json("/api/logs?source=vend")
    (entry,) = logs["entries"]
    assert entry["action"] == "app_token_issued" and entry["account_id"] is None
    assert entry["request"]["headers"]["Authorization"] == "Basic ****"
    assert "grant_type=client_credentials" in entry["request"]["body"]
    assert entry["response"]["status"] == 200
    text = orjson.dumps(entry).decode()
    assert body["access_token"] not in text and body["access_token"][:12] not in text[
        text.index("response"):].replace(body["access_token"][:4], "")


async def test_each_scope_set_has_its_own_token(stack):
    _, default = await stack.get_json(PATH, token=CONSUMER)
    _, feed = await stack.get_json(f"{PATH}?scopes=https://api.ebay.com/oauth/api_scope%20{FEED}",
                                   token=CONSUMER)
    _, same = await stack.get_json(f"{PATH}?scopes={FEED},https://api.ebay.com/oauth/api_scope",
                                   token=CONSUMER)
    assert default["access_token"] != feed["access_token"] == same["access_token"]
    assert stack.sim.app_token_grants == 2


async def test_fifty_concurrent_requests_make_one_grant(stack):
    stack.sim.configure(latency_seconds=0.2)
    answers = await asyncio.gather(*(stack.get_json(PATH, token=CONSUMER) for _ in range(50)))
    assert {status for status, _ in answers} == {200}
    assert len({body["access_token"] for _, body in answers}) == 1
    assert stack.sim.app_token_grants == 1


async def test_two_replicas_share_one_grant(stack):
    stack.sim.configure(latency_seconds=0.3)
    a, b = replica(stack, "replica-a"), replica(stack, "replica-b")
    issued = await asyncio.gather(*(r.get(webstack.PROVIDER) for r in (a, b, a, b)))
    assert len({i.access_token for i in issued}) == 1
    assert stack.sim.app_token_grants == 1
    assert sum(i.renewed for i in issued) >= 1


async def test_a_token_is_renewed_before_it_expires(stack):
    stack.sim.configure(expires_in=3600)
    first = await stack.app_tokens.get(webstack.PROVIDER)
    # Within the expiry threshold (900 s) of its end, the next request renews it.
    later = replica(stack, webstack.INSTANCE,
                    clock=lambda: webstack.now() + timedelta(seconds=3600 - 899))
    renewed = await later.get(webstack.PROVIDER)
    assert renewed.renewed and renewed.access_token != first.access_token
    assert stack.sim.app_token_grants == 2
    # Tokens shorter-lived than the threshold: renewed at half their life, not on every
    # request.
    stack.sim.configure(expires_in=600)
    one = await stack.app_tokens.get(webstack.PROVIDER, [FEED])
    assert (await stack.app_tokens.get(webstack.PROVIDER, [FEED])).access_token == \
        one.access_token
    assert stack.sim.app_token_grants == 3
    halfway = replica(stack, webstack.INSTANCE,
                      clock=lambda: webstack.now() + timedelta(seconds=301))
    assert (await halfway.get(webstack.PROVIDER, [FEED])).renewed
    assert stack.sim.app_token_grants == 4


async def test_an_undecryptable_cached_token_is_replaced(stack, rotated_keyring):
    await stack.app_tokens.get(webstack.PROVIDER)
    other_key = crypto.Keyring.from_lines([crypto.generate_key_line("zz")])
    fresh = replica(stack, "replica-b")
    fresh.keyring = other_key  # a keyring that no longer holds the sealing key
    issued = await fresh.get(webstack.PROVIDER)
    assert issued.renewed and stack.sim.app_token_grants == 2


@pytest.mark.parametrize("token", [None, "", webstack.ADMIN, webstack.ORG_ACME, "wrong"])
async def test_only_consumer_tokens_get_app_tokens(stack, token):
    status, body = await stack.get_json(PATH, token=token)
    assert status == 401 and body["error"]
    assert stack.sim.app_token_grants == 0


@pytest.mark.parametrize("query, status", [
    ("?scope=x", 400), ("?scopes=" + "x" * 301, 400), ("?scopes=" + "%20".join("ab" * 51), 400),
    ("?scopes=a%00b", 400)])
async def test_bad_queries_are_a_400(stack, query, status):
    got, body = await stack.get_json(PATH + query, token=CONSUMER)
    assert (got, bool(body["error"])) == (status, True)
    assert stack.sim.app_token_grants == 0


async def test_an_unknown_provider_is_a_404(stack):
    status, body = await stack.get_json("/api/providers/nope/app-token", token=CONSUMER)
    assert (status, body) == (404, {"error": "unknown provider"})


async def test_scopes_the_provider_refuses_are_a_400_and_a_logged_failure(stack):
    status, body = await stack.get_json(f"{PATH}?scopes=https://api.ebay.com/oauth/api_scope/"
                                        "sell.inventory", token=CONSUMER)
    assert status == 400 and "invalid_scope" in body["error"]
    _, logs = await stack.get_json("/api/logs?source=vend")
    (entry,) = logs["entries"]
    assert entry["action"] == "app_token_failed"
    assert entry["error"]["code"] == "invalid_scope"
    # Nothing cached, the lease released: the next good request gets a token at once.
    status, _ = await stack.get_json(PATH, token=CONSUMER)
    assert status == 200


async def test_a_live_lease_elsewhere_is_waited_for(stack, monkeypatch):
    key = apptokens.token_id(webstack.PROVIDER, "https://api.ebay.com/oauth/api_scope")
    claimed = await stack.db.claim_app_token(key, webstack.PROVIDER,
                                             "https://api.ebay.com/oauth/api_scope",
                                             "replica-b", webstack.now(), lease_seconds=60)
    assert claimed is not None
    refused = []  # the waiter's claims that found replica-b's lease live
    claim = stack.db.claim_app_token

    async def counted_claim(*args, **kwargs):
        row = await claim(*args, **kwargs)
        if row is None:
            refused.append(args)
        return row

    monkeypatch.setattr(stack.db, "claim_app_token", counted_claim)
    waiter = asyncio.create_task(stack.app_tokens.get(webstack.PROVIDER))
    await wait_until(lambda: len(refused) >= 2, 5)
    assert not waiter.done() and stack.sim.app_token_grants == 0
    # replica-b stores a token and releases: the waiter takes it without a grant of its own.
    sealed = stack.keyring.encrypt(simulator.APP_TOKEN_PREFIX + "from-b",
                                   account_id=f"app-token:{key}", column="access_token")
    applied, _ = await stack.db.finish_app_token(
        key, "replica-b", access_token=sealed, expires_at=webstack.now() + timedelta(hours=2),
        entry=None, now=webstack.now())
    assert applied
    issued = await asyncio.wait_for(waiter, 5)
    assert issued.access_token == simulator.APP_TOKEN_PREFIX + "from-b"
    assert stack.sim.app_token_grants == 0


async def test_the_lease_is_only_taken_when_free(store: store.Store):
    now = webstack.now()
    first = await store.claim_app_token("p:x", "p", "s", "a", now, lease_seconds=30)
    assert first is not None and first.lease_owner == "a"
    assert await store.claim_app_token("p:x", "p", "s", "b", now, lease_seconds=30) is None
    later = now + timedelta(seconds=31)
    assert (await store.claim_app_token("p:x", "p", "s", "b", later, lease_seconds=30)
            ).lease_owner == "b"
    applied, _ = await store.finish_app_token("p:x", "a", access_token=None, expires_at=None,
                                              entry=None, now=later)
    assert not applied  # a lost lease cannot write
