"""eBay's notifications, signed for real by the simulator's own EC keys and verified
through getPublicKey: the challenge, account deletion, authorization revocation, every
way a signature can fail (nothing changes), replays, and what the log keeps."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import sqlite3
from datetime import timedelta

import connectflow
import orjson
import pytest
import webstack
from cryptography.hazmat.primitives.asymmetric import ec

from tokend import model, throttle, vocabulary
from tokend.ebay import notifications
from tokend.testing import simulator
from tokend.web import common

DELETION, REVOCATION = "MARKETPLACE_ACCOUNT_DELETION", "AUTHORIZATION_REVOCATION"
USERNAME = "jane_doe_private"


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring, notifications=True) as s:
        yield s


def endpoint(stack: webstack.Stack) -> str:
    return stack.url + "/ebay/notifications"


async def seller(stack: webstack.Stack, account_id: str, user_id: str, *,
                 org: str = "acme") -> model.Account:
    """An active seller known by eBay user id, with a fresh access token, and an entry
    holding personal data (as the Identity call of the connect flow logs it)."""
    await webstack.add_account(stack.db, stack.keyring, account_id, org)
    await stack.db.set_provider_user(account_id, user_id, USERNAME, webstack.now())
    outcome = await stack.worker.refresh_now(account_id)
    assert outcome.success
    await stack.db.add_entry(model.Entry(
        action="token_refreshed", source="connect", created_at=webstack.now(),
        account_id=account_id, org_id=org, provider=webstack.PROVIDER,
        message=f"connected {USERNAME}", request={"method": "GET", "url": "/identity"},
        response={"status": 200, "body": {"username": USERNAME, "userId": user_id}}))
    return await stack.db.get_account(account_id)


async def events(stack: webstack.Stack) -> list[model.Event]:
    return await stack.db.list_events()


async def ebay_entries(stack: webstack.Stack,
                       action: str | None = vocabulary.EBAY_NOTIFICATION) -> list[model.Entry]:
    """Entries about notifications, newest first (`action=None`: every ebay entry)."""
    return await stack.db.list_entries(source=["ebay"], action=action)


# -- the challenge ---------------------------------------------------------------------


async def test_the_challenge_is_answered_as_ebay_computes_it(stack):
    code = "a8628072-3d33-45ee-9004-bee86830a22d"
    status, body = await stack.get_json(f"/ebay/notifications?challenge_code={code}",
                                        token=None)
    expected = hashlib.sha256(
        (code + webstack.VERIFICATION_TOKEN + webstack.ENDPOINT).encode()).hexdigest()
    assert (status, body) == (200, {"challengeResponse": expected})
    for query in ("", "?challenge_code=", "?challenge_code=a%00b"):
        status, body = await stack.get_json("/ebay/notifications" + query, token=None)
        assert status == 400 and body["error"]


async def test_without_configuration_the_route_is_a_404(store, keyring):
    async with webstack.running(store, keyring) as stack:
        status, body = await stack.get_json("/ebay/notifications?challenge_code=x", token=None)
        assert (status, body) == (404, {"error": "eBay notifications are not configured"})
        status = await stack.sim.deliver(endpoint(stack),
                                         stack.sim.notification(DELETION, "u1"))
        assert status == 404


# -- account deletion ------------------------------------------------------------------


async def test_a_signed_deletion_purges_the_seller_once(stack):
    before = await seller(stack, "acct-1", "ebayUser1")
    bystander = await seller(stack, "acct-2", "ebayUser2")
    message = stack.sim.notification(DELETION, "ebayUser1", username=USERNAME)
    assert await stack.sim.deliver(endpoint(stack), message) == 204

    after = await stack.db.get_account("acct-1")
    assert after.state == model.DELETED
    assert after.state_reason == "marketplace_account_deletion"
    assert (after.refresh_token, after.access_token) == (None, None)
    assert (after.provider_user_id, after.provider_user_name) == (None, None)
    assert after.name == "(deleted) acct-1" and after.org == before.org
    assert after.version > before.version
    # The seller's logged exchanges lose what they said; the bystander keeps everything.
    for entry in await stack.db.list_entries(account_id="acct-1"):
        if entry.source != "ebay":
            assert (entry.request, entry.response, entry.details) == (None, None, None)
            assert USERNAME not in (entry.message or "")
    kept = await stack.db.list_entries(account_id="acct-2", source=["connect"])
    assert kept[0].response["body"]["username"] == USERNAME
    assert (await stack.db.get_account("acct-2")) == bystander

    (event,) = await events(stack)
    assert event.type == vocabulary.ACCOUNT_DELETED
    assert event.data == {"account_id": "acct-1", "org": "acme", "provider": webstack.PROVIDER,
                          "state": "deleted", "reason": "marketplace_account_deletion"}
    (entry,) = await ebay_entries(stack)
    assert entry.action == vocabulary.EBAY_NOTIFICATION and entry.account_id == "acct-1"
    assert entry.details == {"topic": DELETION, "outcome": "deleted",
                             "notification_id": message["notification"]["notificationId"]}
    assert "ebayUser1" not in orjson.dumps(entry.to_dict()).decode()
    assert USERNAME not in orjson.dumps(entry.to_dict()).decode()

    # eBay delivers again (at least once): 204, nothing changes, one more entry.
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    assert await stack.db.get_account("acct-1") == after
    assert len(await events(stack)) == 1
    replay = (await ebay_entries(stack))[0]
    assert replay.details["outcome"] == "replay" and replay.account_id is None
    # The vault refuses the tombstone.
    status, body = await stack.get_json("/api/accounts/acct-1/access-token",
                                        token=webstack.CONSUMER)
    assert (status, body["state"]) == (409, "deleted")


async def test_a_deletion_reaches_every_org_holding_the_seller_and_unknown_sellers_are_fine(
        stack):
    await seller(stack, "acme-1", "shared")
    await seller(stack, "globex-1", "shared", org="globex")
    assert await stack.sim.deliver(endpoint(stack),
                                   stack.sim.notification(DELETION, "shared")) == 204
    for account_id in ("acme-1", "globex-1"):
        assert (await stack.db.get_account(account_id)).state == model.DELETED
    assert {e.data["org"] for e in await events(stack)} == {"acme", "globex"}
    assert {e.org_id for e in await ebay_entries(stack)} == {"acme", "globex"}
    # Nobody by that id (any more): accepted, recorded, nothing to change.
    assert await stack.sim.deliver(endpoint(stack),
                                   stack.sim.notification(DELETION, "shared")) == 204
    assert (await ebay_entries(stack))[0].details["outcome"] == "no_account"
    assert len(await events(stack)) == 2


async def full_dump(db_url: str) -> str:
    """Every row of every table, as the backend's own dump tool writes it."""
    if db_url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite://"))) as conn:
            return "\n".join(conn.iterdump())
    dump = await asyncio.create_subprocess_exec(
        "pg_dump", "--data-only", f"--dbname={db_url}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await dump.communicate()
    assert dump.returncode == 0, err.decode()
    return out.decode()


async def test_a_deleted_seller_who_connected_through_links_is_in_no_table(
        store, keyring, db_url):
    """The connect flow names the seller before the account exists (the identity answer,
    "signed in as", "already connected"), and reconnect links name the account: after the
    deletion a full dump holds neither the seller's username nor user id, while another
    seller's stay."""
    forgotten = simulator.Seller("ebayForgetMe42", "forget_me_seller")
    bystander = simulator.Seller("ebayStays7", "stays_seller")
    async with connectflow.stack(store, keyring, notifications=True) as s:
        s.sim.seller = forgotten
        status, page, _ = await connectflow.walk(s)
        assert status == 200 and forgotten.username in page, page
        (account,) = await store.list_accounts()
        status, page, _ = await connectflow.walk(s)  # again: "already connected"
        assert status == 409 and forgotten.username in page, page
        status, page, _ = await connectflow.walk(s, account_id=account.id)  # reconnect
        assert status == 200, page
        assert (await s.worker.refresh_now(account.id)).success
        s.sim.seller = bystander
        status, page, _ = await connectflow.walk(s, org="globex")
        assert status == 200, page

        before = await full_dump(db_url)
        for seller in (forgotten, bystander):
            assert seller.user_id in before and seller.username in before

        message = s.sim.notification(DELETION, forgotten.user_id, username=forgotten.username)
        assert await s.sim.deliver(s.url + "/ebay/notifications", message) == 204
        assert (await store.get_account(account.id)).state == model.DELETED

        after = await full_dump(db_url)
        leaks = [line[:300] for line in after.splitlines()
                 if forgotten.user_id in line or forgotten.username in line]
        assert not leaks, "\n".join(leaks)
        assert bystander.user_id in after and bystander.username in after


# -- authorization revocation ------------------------------------------------------------


async def test_a_signed_revocation_needs_reauth_at_once(stack):
    await seller(stack, "acct-1", "ebayUser1")
    message = stack.sim.notification(REVOCATION, "ebayUser1",
                                     revokeReason="REVOKED_BY_USER",
                                     revocationDate="2026-11-30T10:00:00.000Z")
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    account = await stack.db.get_account("acct-1")
    assert account.state == model.REAUTH_REQUIRED
    assert account.state_reason == "REVOKED_BY_USER"
    assert account.refresh_token is not None  # nothing personal to purge: the seller stays
    (event,) = await events(stack)
    assert (event.type, event.data["reason"]) == (vocabulary.ACCOUNT_REAUTH_REQUIRED,
                                                  "REVOKED_BY_USER")
    (entry,) = await ebay_entries(stack)
    assert entry.details["revoke_reason"] == "REVOKED_BY_USER"
    # Not vended, not refreshed by the loop, and a replay changes nothing.
    status, _ = await stack.get_json("/api/accounts/acct-1/access-token",
                                     token=webstack.CONSUMER)
    assert status == 409
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    assert await stack.db.get_account("acct-1") == account
    assert len(await events(stack)) == 1
    # Another revocation of an account already waiting for reauth: no second event.
    assert await stack.sim.deliver(endpoint(stack), stack.sim.notification(
        REVOCATION, "ebayUser1", revokeReason="PASSWORD_CHANGE")) == 204
    assert len(await events(stack)) == 1


async def test_a_topic_tokend_does_not_handle_is_acknowledged_and_ignored(stack):
    await seller(stack, "acct-1", "ebayUser1")
    message = stack.sim.notification("ITEM_PRICE_REVISION", "ebayUser1")
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    assert (await stack.db.get_account("acct-1")).state == model.ACTIVE
    assert (await ebay_entries(stack))[0].details["outcome"] == "ignored"


# -- signatures that fail ------------------------------------------------------------------


def tampered(message: dict) -> bytes:
    changed = json.loads(json.dumps(message))
    changed["notification"]["data"]["userId"] = "ebayUser2"
    return json.dumps(changed).encode()


def header(kid: str, signature: bytes, **extra) -> str:
    return base64.b64encode(json.dumps({
        "alg": "ECDSA", "kid": kid, "signature": base64.b64encode(signature).decode(),
        "digest": "SHA1", **extra}).encode()).decode()


def wrong_key_signature(sim: simulator.Simulator, message: dict) -> str:
    """Signed by a key of our own, announced under eBay's real key id."""
    return sim.sign(message, kid=sim.default_kid, key=ec.generate_private_key(ec.SECP256R1()))


CASES = {
    "missing header": lambda sim, m: ("", None),
    "not base64": lambda sim, m: ("%%%not-base64%%%", None),
    "not JSON": lambda sim, m: (base64.b64encode(b"alg=ECDSA").decode(), None),
    "no kid": lambda sim, m: (base64.b64encode(b'{"signature": "AAAA"}').decode(), None),
    "empty signature": lambda sim, m: (header(sim.default_kid, b""), None),
    "garbage signature": lambda sim, m: (header(sim.default_kid, b"\x30\x06garbage"), None),
    "tampered body": lambda sim, m: (sim.sign(m), tampered(m)),
    "wrong key": lambda sim, m: (wrong_key_signature(sim, m), None),
    "unknown kid": lambda sim, m: (sim.sign(m, kid="no-such-kid",
                                            key=sim.notification_keys[sim.default_kid]), None),
    "another message's signature": lambda sim, m: (
        sim.sign(sim.notification(DELETION, "ebayUser1")), None),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_an_unproven_notification_is_a_412_and_changes_nothing(stack, case):
    before = await seller(stack, "acct-1", "ebayUser1")
    await seller(stack, "acct-2", "ebayUser2")
    message = stack.sim.notification(DELETION, "ebayUser1")
    signature, body = CASES[case](stack.sim, message)
    status = await stack.sim.deliver(endpoint(stack), message, signature=signature, body=body)
    assert status == 412, case
    assert await stack.db.get_account("acct-1") == before
    assert (await stack.db.get_account("acct-2")).state == model.ACTIVE
    assert await events(stack) == []
    refused = await ebay_entries(stack, vocabulary.EBAY_NOTIFICATION_REFUSED)
    assert len(refused) == 1 and refused[0].error["code"]
    # The notification was not recorded: the genuine delivery still applies afterwards.
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    assert (await stack.db.get_account("acct-1")).state == model.DELETED


async def test_what_is_signed_is_the_message_not_its_formatting(stack):
    """eBay's SDKs verify JSON.stringify(message): compact or re-indented bodies verify."""
    await seller(stack, "acct-1", "ebayUser1")
    await seller(stack, "acct-2", "ebayUser2")
    first = stack.sim.notification(REVOCATION, "ebayUser1", revokeReason="R")
    compact = json.dumps(first, separators=(",", ":")).encode()
    assert await stack.sim.deliver(endpoint(stack), first, body=compact) == 204
    second = stack.sim.notification(REVOCATION, "ebayUser2", revokeReason="R")
    assert await stack.sim.deliver(endpoint(stack), second) == 204  # indented by default
    assert {a.state for a in await stack.db.list_accounts()} == {model.REAUTH_REQUIRED}


async def test_malformed_bodies_are_a_400_and_change_nothing(stack):
    await seller(stack, "acct-1", "ebayUser1")
    message = stack.sim.notification(DELETION, "ebayUser1")
    for body in (b"{", b"[1, 2]", b"NaN", b"\xff\xfe", b"[" * 5000):
        assert await stack.sim.deliver(endpoint(stack), message, body=body) == 400
    # Signed but without a notification id or user id: refused before any change.
    for broken in ({"metadata": {"topic": DELETION}},
                   {**message, "notification": {**message["notification"],
                                                "data": {"username": "x"}}}):
        assert await stack.sim.deliver(endpoint(stack), broken) == 400
    assert (await stack.db.get_account("acct-1")).state == model.ACTIVE
    assert await events(stack) == []


# -- the public key ------------------------------------------------------------------------


async def test_the_public_key_is_fetched_once_with_an_application_token(stack):
    await seller(stack, "acct-1", "ebayUser1")
    await seller(stack, "acct-2", "ebayUser2")
    for user in ("ebayUser1", "ebayUser2"):
        assert await stack.sim.deliver(endpoint(stack),
                                       stack.sim.notification(REVOCATION, user)) == 204
    assert (stack.sim.public_key_calls, stack.sim.app_token_grants) == (1, 1)
    fetched = await ebay_entries(stack, vocabulary.EBAY_PUBLIC_KEY_FETCHED)
    assert len(fetched) == 1
    assert fetched[0].request["headers"]["Authorization"] == "Bearer ****"
    # The application token's own grant is logged too, masked, with source ebay.
    (grant,) = await stack.db.list_entries(action=vocabulary.APP_TOKEN_ISSUED)
    assert grant.source == "ebay"
    # A rotated key: a new kid is fetched the first time it signs.
    kid = stack.sim.add_notification_key()
    await seller(stack, "acct-3", "ebayUser3")
    message = stack.sim.notification(REVOCATION, "ebayUser3")
    assert await stack.sim.deliver(endpoint(stack), message,
                                   signature=stack.sim.sign(message, kid=kid)) == 204
    assert stack.sim.public_key_calls == 2


async def test_an_unreachable_public_key_is_a_503_and_changes_nothing(stack):
    await seller(stack, "acct-1", "ebayUser1")
    stack.sim.configure(fail_mode="500")  # the token endpoint: no application token
    message = stack.sim.notification(DELETION, "ebayUser1")
    assert await stack.sim.deliver(endpoint(stack), message) == 503
    assert (await stack.db.get_account("acct-1")).state == model.ACTIVE
    stack.sim.configure(fail_mode=None)
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    assert (await stack.db.get_account("acct-1")).state == model.DELETED


async def test_a_flood_of_unproven_notifications_is_answered_but_not_logged_row_by_row(stack):
    now = [0.0]
    receiver = stack.app[common.EBAY_RECEIVER]
    receiver.refusals = throttle.Throttle(per_second=1.0, burst=20, clock=lambda: now[0])
    message = stack.sim.notification(DELETION, "ebayUser1")
    unsigned = header(stack.sim.default_kid, b"")
    for _ in range(50):
        assert await stack.sim.deliver(endpoint(stack), message, signature=unsigned) == 412
    assert len(await ebay_entries(stack, vocabulary.EBAY_NOTIFICATION_REFUSED)) == 20
    now[0] += 1.0
    assert await stack.sim.deliver(endpoint(stack), message, signature=unsigned) == 412
    newest = (await ebay_entries(stack, vocabulary.EBAY_NOTIFICATION_REFUSED))[0]
    assert newest.details == {"refusals_not_logged": 30}


async def test_key_lookups_for_made_up_key_ids_are_bounded(stack):
    """Key ids come from the request: a flood of invented ones must not become a flood of
    getPublicKey calls (eBay's quota) or a cache that grows without end."""
    now = [0.0]
    keys = stack.app[common.EBAY_RECEIVER].keys
    keys.lookups = throttle.Throttle(notifications.NEW_KID_LOOKUPS_PER_SECOND,
                                     notifications.NEW_KID_LOOKUPS_BURST, clock=lambda: now[0])
    message = stack.sim.notification(DELETION, "ebayUser1")
    real_key = stack.sim.notification_keys[stack.sim.default_kid]
    burst = notifications.NEW_KID_LOOKUPS_BURST
    statuses = [await stack.sim.deliver(endpoint(stack), message,
                                        signature=stack.sim.sign(message, kid=f"made-up-{n}",
                                                                 key=real_key))
                for n in range(burst + 5)]
    assert statuses == [412] * burst + [503] * 5  # no such key; then "ask again later"
    assert stack.sim.public_key_calls == burst
    # Once the bucket refills, eBay's real key is fetched and the notification applies.
    await seller(stack, "acct-1", "ebayUser1")
    now[0] += 1 / notifications.NEW_KID_LOOKUPS_PER_SECOND
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    assert (await stack.db.get_account("acct-1")).state == model.DELETED


# -- pieces ----------------------------------------------------------------------------------


def test_a_key_without_line_breaks_is_normalised():
    sim = simulator.Simulator()
    key = sim.notification_keys[sim.default_kid].public_key()
    from cryptography.hazmat.primitives import serialization
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    flat = "".join(pem.splitlines()[1:-1])
    for shape in (pem, f"-----BEGIN PUBLIC KEY-----{flat}-----END PUBLIC KEY-----",
                  f"-----BEGIN PUBLIC KEY-----\r\n{flat[:30]} {flat[30:]}\n"
                  "-----END PUBLIC KEY-----"):
        loaded = notifications.load_public_key("k", {"algorithm": "ECDSA", "digest": "SHA1",
                                                     "key": shape})
        assert loaded.key.public_numbers() == key.public_numbers()
    for bad in ({"algorithm": "RSA", "digest": "SHA1", "key": pem},
                {"algorithm": "ECDSA", "digest": "MD5", "key": pem},
                {"algorithm": "ECDSA", "digest": "SHA1", "key": "-----BEGIN PUBLIC KEY-----"
                 "AAAA-----END PUBLIC KEY-----"}, [], None):
        with pytest.raises(ValueError):
            notifications.load_public_key("k", bad)


def test_signed_bytes_match_javascripts_json_stringify():
    message = {"b": 1, "a": [True, None, 1.0, 2.5], "é": "ü/\"\n"}
    parsed = notifications.parse_message(json.dumps(message, indent=4).encode())
    assert notifications.signed_bytes(parsed) == \
        '{"b":1,"a":[true,null,1,2.5],"é":"ü/\\"\\n"}'.encode()


async def test_applied_ids_are_pruned_with_the_logs_and_a_late_copy_changes_nothing(stack):
    await seller(stack, "acct-1", "ebayUser1")
    message = stack.sim.notification(DELETION, "ebayUser1")
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    after = await stack.db.get_account("acct-1")
    pruned = await stack.db.prune_logs(webstack.now() + timedelta(days=1), 1000)
    assert pruned >= 1 and await ebay_entries(stack) == []
    # The id is forgotten, the tombstone is not: eBay's user id is gone from the account.
    assert await stack.sim.deliver(endpoint(stack), message) == 204
    assert await stack.db.get_account("acct-1") == after
    assert (await ebay_entries(stack))[0].details["outcome"] == "no_account"
    assert len(await events(stack)) == 1


async def test_ten_copies_at_once_apply_once(stack):
    await seller(stack, "acct-1", "ebayUser1")
    message = stack.sim.notification(DELETION, "ebayUser1")
    statuses = await asyncio.gather(*(stack.sim.deliver(endpoint(stack), message)
                                      for _ in range(10)))
    assert statuses == [204] * 10
    assert len(await events(stack)) == 1
    outcomes = sorted(e.details["outcome"] for e in await ebay_entries(stack))
    assert outcomes == ["deleted"] + ["replay"] * 9
    assert stack.sim.public_key_calls == 1 and stack.sim.app_token_grants == 1
