"""eBay digital signatures end to end, on both backends: a key made by the simulator's
createSigningKey and kept sealed, requests signed by `POST /api/providers/{name}/signature`
and sent to the simulator's Finances endpoint, which verifies them as eBay's reference
verifier does; tampering refused there; another replica, key rotation and renewal."""

from __future__ import annotations

import base64
from datetime import timedelta

import aiohttp
import orjson
import pytest
import webstack
import yarl

from tokend import crypto, rotation, vocabulary
from tokend.ebay import signatures, signing
from tokend.testing import simulator
from tokend.web import common

PROVIDER = webstack.PROVIDER
PATH = f"/api/providers/{PROVIDER}/signature"
USER_TOKEN = "v^1.1#i^1#p^3#r^1#I^3#f^0#t^sim-user-token"


@pytest.fixture
async def sim():
    async with simulator.Simulator() as sim:
        yield sim


@pytest.fixture
async def stack(store, keyring, sim):
    async with webstack.running(store, keyring, sim=sim,
                                provider={"key_management_url": sim.key_management_url}) as s:
        yield s


def signer_of(stack: webstack.Stack) -> signing.Signer:
    return stack.app[common.SIGNER]


def replica(stack: webstack.Stack, owner: str, keyring: crypto.Keyring | None = None,
            ) -> signing.Signer:
    """Another process's signer on the same database."""
    return signing.Signer(db=stack.db, keyring=keyring or stack.keyring,
                          providers=stack.cfg.providers, app_tokens=stack.app_tokens,
                          session=stack.worker.session, hub=stack.hub, stats=stack.stats,
                          settings=stack.cfg.refresh, owner=owner)


async def ask(stack: webstack.Stack, body, token: str = webstack.CONSUMER,
              path: str = PATH) -> tuple[int, dict]:
    async with stack.http.post(stack.url + path, data=orjson.dumps(body),
                               headers=stack.auth(token)) as response:
        return response.status, await response.json(content_type=None)


async def signed_call(stack: webstack.Stack, method: str, url: str, body: bytes = b"",
                      ) -> dict[str, str]:
    ask_for = {"method": method, "url": url}
    if body:
        ask_for["content_digest"] = signatures.content_digest(body)
    status, answer = await ask(stack, ask_for)
    assert status == 200, answer
    return answer["headers"]


async def send(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
               body: bytes = b"") -> tuple[int, dict]:
    """Send the request as signed: the URL exactly as written (no re-quoting)."""
    async with http.request(method, yarl.URL(url, encoded=True), data=body or None,
                            headers={**headers, "Authorization": f"Bearer {USER_TOKEN}",
                                     "Content-Type": "application/json"}) as response:
        return response.status, await response.json(content_type=None)


def requests_to_sign(sim: simulator.Simulator) -> list[tuple[str, str, bytes]]:
    finances = sim.finances_url
    return [
        ("GET", finances + "transaction", b""),
        ("GET", finances + "transaction?filter=transactionDate:%5B2024-01-01T00:00:00.000Z..%5D"
                           "&limit=20&offset=0", b""),
        ("GET", finances + "payout/5%2F1/%C3%A9t%C3%A9;v=1?q=a+b&&x=", b""),
        ("GET", finances + "seller_funds_summary/", b""),
        ("POST", finances + "transfer", b'{"hello": "world"}'),
        ("POST", finances + "transfer/ABC-123?x=%20y", '{"betrag": "12,50 \u20ac"}'.encode()),
        ("PUT", finances + "a/b/../c/./d", "{\"note\": \"caf\u00e9 \\\\n\"}".encode()),
        ("DELETE", finances + "x", b""),
    ]


async def test_no_key_is_409_and_logged(stack):
    status, body = await ask(stack, {"method": "GET", "url": "https://apiz.ebay.com/x"})
    assert status == 409 and "signing-key create" in body["error"]
    await signer_of(stack).drain()
    _, logs = await stack.get_json(f"/api/logs?source={vocabulary.VEND}")
    (entry,) = logs["entries"]
    assert entry["action"] == vocabulary.REQUEST_SIGNING_REFUSED
    assert entry["error"]["code"] == "no_signing_key"


@pytest.mark.parametrize("cipher", [signatures.ED25519, signatures.RSA])
async def test_created_key_signs_what_the_verifier_accepts(stack, sim, cipher):
    key = await signer_of(stack).create(PROVIDER, cipher)
    assert key.cipher == cipher and sim.signing_keys == {key.id: cipher}
    assert key.expires_at is not None and key.private_key.startswith("ENC:v1:")
    for method, url, body in requests_to_sign(sim):
        headers = await signed_call(stack, method, url, body)
        expected = {"x-ebay-signature-key", "Signature-Input", "Signature"}
        assert set(headers) == expected | ({"Content-Digest"} if body else set())
        status, answer = await send(stack.http, method, url, headers, body)
        assert status == 200, (method, url, answer)
    assert sim.signed_calls == {"verified": len(requests_to_sign(sim))}


async def test_tampering_is_refused_by_the_verifier(stack, sim):
    await signer_of(stack).create(PROVIDER)
    url, body = sim.finances_url + "transfer?limit=1", b'{"amount": "10.00"}'
    headers = await signed_call(stack, "POST", url, body)
    assert (await send(stack.http, "POST", url, headers, body))[0] == 200
    other_key = await signed_call(stack, "GET", sim.finances_url + "x")  # same key, new call
    assert other_key["x-ebay-signature-key"] == headers["x-ebay-signature-key"]
    assert (await send(stack.http, "POST", url, headers, b'{"amount": "99.00"}'))[0] == 403
    assert "Content-Digest value is invalid" in sim.last_signature_refusal
    assert (await send(stack.http, "PUT", url, headers, body))[0] == 403
    assert sim.last_signature_refusal == "Signature invalid"
    assert (await send(stack.http, "POST", sim.finances_url + "transfers?limit=1", headers,
                       body))[0] == 403
    assert sim.last_signature_refusal == "Signature invalid"
    # A query string is not signed (eBay's components): another one still verifies.
    assert (await send(stack.http, "POST", sim.finances_url + "transfer?limit=2", headers,
                       body))[0] == 200
    # Another key's JWE, and a JWE that is not eBay's.
    sim_other = await signer_of(stack).create(PROVIDER)  # now in use
    fresh = await signed_call(stack, "POST", url, body)
    assert fresh["x-ebay-signature-key"] != headers["x-ebay-signature-key"]
    swapped = {**headers, "x-ebay-signature-key": fresh["x-ebay-signature-key"]}
    assert (await send(stack.http, "POST", url, swapped, body))[0] == 403
    assert sim.last_signature_refusal == "Signature invalid"
    forged = {**headers, "x-ebay-signature-key": headers["x-ebay-signature-key"][:-6] + "AAAAAA"}
    assert (await send(stack.http, "POST", url, forged, body))[0] == 403
    assert "JWE" in sim.last_signature_refusal
    assert (await send(stack.http, "POST", url, {}, body))[0] == 403
    assert sim_other.id in {k["signing_key_id"] for k in await signer_of(stack).listing()}


async def test_answer_shape_created_and_log_entry(stack, sim):
    key = await signer_of(stack).create(PROVIDER)
    digest = signatures.content_digest(b'{"hello": "world"}')
    assert digest == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    before = int(webstack.now().timestamp())
    status, body = await ask(stack, {"method": "POST", "content_digest": digest,
                                     "url": "https://apiz.ebay.com/sell/finances/v1/transfer"})
    assert status == 200 and body["signing_key_id"] == key.id
    headers = body["headers"]
    assert headers["Content-Digest"] == digest
    prefix = ('sig1=("content-digest" "x-ebay-signature-key" "@method" "@path" "@authority")'
              ";created=")
    assert headers["Signature-Input"].startswith(prefix)
    created = int(headers["Signature-Input"].removeprefix(prefix))
    assert before - 1 <= created <= int(webstack.now().timestamp()) + 1
    assert headers["Signature"].startswith("sig1=:") and headers["Signature"].endswith(":")
    assert len(base64.b64decode(headers["Signature"][6:-1])) == 64  # Ed25519
    await signer_of(stack).drain()
    _, logs = await stack.get_json(f"/api/logs?source={vocabulary.VEND}")
    signed = [e for e in logs["entries"] if e["action"] == vocabulary.REQUEST_SIGNED]
    assert len(signed) == 1 and signed[0]["provider"] == PROVIDER
    assert signed[0]["details"] == {"signing_key_id": key.id, "method": "POST",
                                    "authority": "apiz.ebay.com",
                                    "path": "/sell/finances/v1/transfer",
                                    "content_digest": True}
    metrics = await (await stack.http.get(stack.url + "/metrics")).text()
    assert f'tokend_signatures_total{{outcome="signed",provider="{PROVIDER}"}} 1.0' in metrics
    assert (f'tokend_signing_keys_created_total{{outcome="created",provider="{PROVIDER}"}} 1.0'
            in metrics)


@pytest.mark.parametrize(("body", "status"), [
    ({"method": "get", "url": "https://apiz.ebay.com/x"}, 400),
    ({"method": "GET"}, 400),
    ({"method": "GET", "url": "/relative"}, 400),
    ({"method": "GET", "url": "https://apiz.ebay.com/x", "content_digest": "md5=:x:"}, 400),
    ({"method": "GET", "url": "https://apiz.ebay.com/x", "content_digest": 5}, 400),
    ({"method": "GET", "url": "https://apiz.ebay.com/x", "extra": 1}, 400),
    ({"method": "GET", "url": "https://apiz.ebay.com/" + "x" * 9000}, 400),
    ([], 400),
    ("not json", 400),
])
async def test_bad_input_is_a_4xx(stack, body, status):
    await signer_of(stack).create(PROVIDER)
    data = body.encode() if isinstance(body, str) else orjson.dumps(body)
    async with stack.http.post(stack.url + PATH, data=data,
                               headers=stack.auth(webstack.CONSUMER)) as response:
        assert response.status == status
        assert "error" in await response.json()


async def test_tokens_and_providers(stack):
    await signer_of(stack).create(PROVIDER)
    good = {"method": "GET", "url": "https://apiz.ebay.com/sell/finances/v1/payout"}
    assert (await ask(stack, good, token=webstack.CONSUMER_ACME))[0] == 200
    assert (await ask(stack, good, token=webstack.ADMIN))[0] == 401  # not a consumer token
    assert (await ask(stack, good, token="nope"))[0] == 401
    assert (await ask(stack, good, path="/api/providers/nope/signature"))[0] == 404


async def test_a_replica_that_did_not_create_the_key_signs_with_it(stack, sim):
    key = await signer_of(stack).create(PROVIDER)
    other = replica(stack, "replica-2")
    url, body = sim.finances_url + "transfer", b'{"n": 1}'
    signed = await other.sign(PROVIDER, "POST", url, signatures.content_digest(body))
    assert signed.signing_key_id == key.id
    assert (await send(stack.http, "POST", url, signed.headers, body))[0] == 200
    await other.drain()


async def test_rotate_keys_keeps_it_usable(stack, sim, rotated_keyring):
    key = await signer_of(stack).create(PROVIDER)
    counts = await rotation.rotate(stack.db, rotated_keyring)
    assert counts.failed == 0 and counts.rotated >= 1
    (row,) = await stack.db.list_signing_keys(PROVIDER)
    assert row.private_key.startswith(rotated_keyring.current_prefix)
    assert row.private_key != key.private_key
    # Bound to its row: the envelope does not open as another key's.
    with pytest.raises(crypto.DecryptError):
        rotated_keyring.decrypt(row.private_key, account_id=signing.aad_id("other"),
                                column=signing.COLUMN)
    fresh = replica(stack, "after-rotation", rotated_keyring)
    url = sim.finances_url + "transaction"
    signed = await fresh.sign(PROVIDER, "GET", url, None)
    assert (await send(stack.http, "GET", url, signed.headers))[0] == 200
    await fresh.drain()


async def test_a_key_near_expiry_is_renewed_once_and_the_old_one_kept(stack, sim):
    sim.signing_key_lifetime_seconds = 10 * 86400  # within the renewal margin
    old = await signer_of(stack).create(PROVIDER)
    sim.signing_key_lifetime_seconds = simulator.SIGNING_KEY_LIFETIME_SECONDS
    first, second = replica(stack, "r1"), replica(stack, "r2")
    results = [await first.renew(PROVIDER), await second.renew(PROVIDER)]
    renewed = [key for key in results if key is not None]
    assert len(renewed) == 1 and renewed[0].id != old.id
    assert len(sim.signing_keys) == 2
    listing = {k["signing_key_id"]: k for k in await signer_of(stack).listing(PROVIDER)}
    assert listing[old.id]["in_use"] is False and listing[renewed[0].id]["in_use"] is True
    # Signing asks the database again and uses the new key; the old one still verifies.
    url = sim.finances_url + "payout"
    signed = await replica(stack, "r3").sign(PROVIDER, "GET", url, None)
    assert signed.signing_key_id == renewed[0].id
    assert (await send(stack.http, "GET", url, signed.headers))[0] == 200
    # Nothing left to renew.
    assert await first.renew(PROVIDER) is None


async def test_signing_notices_a_key_near_expiry_and_renews_it(stack, sim):
    sim.signing_key_lifetime_seconds = 10 * 86400
    old = await signer_of(stack).create(PROVIDER)
    sim.signing_key_lifetime_seconds = simulator.SIGNING_KEY_LIFETIME_SECONDS
    fresh = replica(stack, "r1")
    signed = await fresh.sign(PROVIDER, "GET", sim.finances_url + "x", None)
    assert signed.signing_key_id == old.id  # signs at once with the key it has
    await fresh.drain()  # the renewal it started
    assert (await stack.db.signing_key_in_use(PROVIDER)).id != old.id
    _, logs = await stack.get_json(f"/api/logs?action={vocabulary.SIGNING_KEY_CREATED}")
    assert [e["details"].get("renews") for e in logs["entries"]] == [old.id, None]


async def test_create_failures_keep_nothing(stack, sim):
    sim.configure(fail_mode="500")  # the application token cannot be had
    with pytest.raises(signing.Unavailable):
        await signer_of(stack).create(PROVIDER)
    sim.configure(fail_mode=None)
    sim.client_id = "another-app"  # app tokens now refused: 401 from the token endpoint
    with pytest.raises(signing.Unavailable):
        await signer_of(stack).create(PROVIDER)
    assert await stack.db.list_signing_keys() == []


async def test_import_keeps_an_operators_key(stack, sim):
    from test_signatures import ED25519_JWE, ED25519_PEM

    key = await signer_of(stack).import_key(PROVIDER, "imported-1", ED25519_JWE, ED25519_PEM)
    assert key.cipher == signatures.ED25519 and key.expires_at is None
    signed = await signer_of(stack).sign(PROVIDER, "GET", "https://apiz.ebay.com/x", None)
    assert signed.headers["x-ebay-signature-key"] == ED25519_JWE
    with pytest.raises(signing.ImportRefused, match="kept already"):
        await signer_of(stack).import_key(PROVIDER, "imported-1", ED25519_JWE, ED25519_PEM)
    with pytest.raises(signing.ImportRefused) as refused:
        await signer_of(stack).import_key(PROVIDER, "imported-2", ED25519_JWE,
                                          ED25519_PEM.replace("MC4C", "XX4C"))
    assert "MC4C" not in str(refused.value) and "XX4C" not in str(refused.value)


async def test_the_private_key_is_nowhere_but_sealed(stack, sim, capsys):
    key = await signer_of(stack).create(PROVIDER)
    text = stack.keyring.decrypt(key.private_key, account_id=signing.aad_id(key.id),
                                 column=signing.COLUMN)
    private, _ = signatures.load_private_key(text)
    der_b64 = "".join(text.splitlines()[1:-1])
    raw = private.private_bytes_raw()  # the Ed25519 seed itself
    shapes = {der_b64, der_b64[-24:], der_b64[20:44], base64.b64encode(raw).decode(),
              raw.hex()}
    answers = []
    for method, url, body in requests_to_sign(sim):
        digest = signatures.content_digest(body) if body else None
        _, answer = await ask(stack, {"method": method, "url": url,
                                      **({"content_digest": digest} if digest else {})})
        answers.append(orjson.dumps(answer).decode())
    answers.append(orjson.dumps(await ask(stack, {"method": "x"})).decode())
    await signer_of(stack).drain()
    _, logs = await stack.get_json("/api/logs?limit=1000")
    rows = repr(await stack.db.list_signing_keys())
    listing = orjson.dumps(await signer_of(stack).listing()).decode()
    out = capsys.readouterr()
    for where, haystack in {"answers": "\n".join(answers), "logs": orjson.dumps(logs).decode(),
                            "rows": rows, "listing": listing,
                            "stdout": out.out + out.err}.items():
        for shape in shapes:
            assert shape not in haystack, f"private key in {where}"
    created = [e for e in logs["entries"] if e["action"] == vocabulary.SIGNING_KEY_CREATED]
    assert created[0]["response"]["body"]["privateKey"] == "(sealed, kept)"


async def test_a_failed_renewal_waits_for_its_lease(stack, sim):
    sim.signing_key_lifetime_seconds = 10 * 86400
    old = await signer_of(stack).create(PROVIDER)
    sim.signing_key_lifetime_seconds = simulator.SIGNING_KEY_LIFETIME_SECONDS
    sim.client_id = "another-app"  # eBay refuses the application token now
    stack.app_tokens.clock = lambda: webstack.now() + timedelta(hours=3)
    with pytest.raises(signing.Unavailable):
        await replica(stack, "r1").renew(PROVIDER)
    sim.client_id = simulator.DEFAULT_CLIENT_ID
    assert await replica(stack, "r2").renew(PROVIDER) is None  # the lease still runs
    assert (await stack.db.signing_key_in_use(PROVIDER)).id == old.id
