"""tokend against a real authorization server nobody here wrote: Django OAuth Toolkit with
refresh-token rotation and reuse protection, on loopback, with grants obtained through
its own authorization-code flow (PKCE)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator

import aiohttp
import dot
import proc
import pytest

from tokend import clock, config, crypto, daemon, model, providers, refresher, store

pytestmark = pytest.mark.timeout(180)
TOKEN_SECONDS = 20  # short, so the daemon test sees several rotations in under a minute


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dot.Server]:
    running = dot.Server(tmp_path_factory.mktemp("oauth-server"),
                         token_seconds=TOKEN_SECONDS).start()
    try:
        yield running
    finally:
        running.stop()


def provider_config(server: dot.Server, auth: str) -> config.ProviderConfig:
    client_id, secret = {
        "basic": (dot.BASIC_CLIENT, dot.BASIC_SECRET),
        "body": (dot.BODY_CLIENT, dot.BODY_SECRET),
        "none": (dot.PUBLIC_CLIENT, ""),
    }[auth]
    return config.ProviderConfig(
        name=f"dot-{auth}", type="oauth2", environment=None, client_id=client_id,
        client_secret=secret, scopes=("read",), token_url=server.token_url, client_auth=auth)


def credentials(auth: str) -> tuple[str, str | None]:
    return {"basic": (dot.BASIC_CLIENT, dot.BASIC_SECRET),
            "body": (dot.BODY_CLIENT, dot.BODY_SECRET), "none": (dot.PUBLIC_CLIENT, None)}[auth]


@pytest.mark.parametrize("auth", ["basic", "body", "none"])
async def test_basic_body_and_public_client_auth_all_refresh(server: dot.Server, auth: str):
    assert set("+%:/=") <= set(dot.BASIC_SECRET)
    client_id, secret = credentials(auth)
    first = await asyncio.to_thread(server.refresh_token, client_id, secret)
    provider = providers.build(provider_config(server, auth), request_timeout_seconds=10)
    async with aiohttp.ClientSession() as session:
        result = await provider.send(session, provider.prepare(first))
    assert result.ok, result.error
    assert result.grant.refresh_token and result.grant.refresh_token != first  # rotated
    assert result.grant.expires_in == TOKEN_SECONDS
    active = await asyncio.to_thread(server.introspect, result.grant.access_token)
    assert active["active"] is True and active["client_id"] == client_id


class Engine:
    """A refresher on a real store, configured for the server's three clients."""

    def __init__(self, db: store.Store, keyring: crypto.Keyring, worker: refresher.Refresher,
                 server: dot.Server) -> None:
        self.db, self.keyring, self.worker, self.server = db, keyring, worker, server

    async def add(self, account_id: str, auth: str = "basic") -> str:
        token = await asyncio.to_thread(self.server.refresh_token, *credentials(auth))
        await self.db.add_account(model.NewAccount(
            id=account_id, org="acme", provider=f"dot-{auth}", name=account_id, scopes=(),
            refresh_token=self.keyring.encrypt(token, account_id=account_id,
                                               column="refresh_token"),
            refresh_expires_at=None), clock.now())
        return token

    async def stored_refresh_token(self, account_id: str) -> str:
        account = await self.db.get_account(account_id)
        return self.keyring.decrypt(account.refresh_token, account_id=account_id,
                                    column="refresh_token")


@pytest.fixture
async def engine(server: dot.Server, store: store.Store,
                 keyring: crypto.Keyring) -> AsyncIterator[Engine]:
    cfg = config.Config(
        refresh=config.RefreshConfig(request_timeout_seconds=10.0),
        providers={p.name: p for p in (provider_config(server, a)
                                       for a in ("basic", "body", "none"))})
    async with daemon.assemble(cfg, db=store, keyring=keyring, instance="interop") as parts:
        yield Engine(store, keyring, parts.refresher, server)


async def test_three_refreshes_in_a_row_each_use_the_latest_rotated_token(engine: Engine):
    first = await engine.add("a1")
    seen = [first]
    for _ in range(3):
        outcome = await engine.worker.refresh_now("a1")
        assert outcome.success, outcome.error_description
        seen.append(await engine.stored_refresh_token("a1"))
    assert len(set(seen)) == 4  # every refresh rotated, and the rotated one was used next
    # Reuse protection is really on: replaying the first token is refused and revokes the
    # whole family, which the next scheduled refresh then reports as a dead grant.
    provider = engine.worker.clients["dot-basic"]
    replay = await provider.send(engine.worker.session, provider.prepare(first))
    assert replay.error_code == "invalid_grant"
    outcome = await engine.worker.refresh_now("a1")
    assert outcome.error_code == "invalid_grant"
    assert (await engine.db.get_account("a1")).state == model.REAUTH_REQUIRED


async def test_a_grant_revoked_at_the_server_lands_in_reauth_required(engine: Engine):
    await engine.add("a1", "body")
    assert (await engine.worker.refresh_now("a1")).success
    current = await engine.stored_refresh_token("a1")
    await asyncio.to_thread(engine.server.revoke, current, dot.BODY_CLIENT, dot.BODY_SECRET)
    outcome = await engine.worker.refresh_now("a1")
    assert outcome.error_code == "invalid_grant"
    after = await engine.db.get_account("a1")
    assert after.state == model.REAUTH_REQUIRED and after.last_error == "invalid_grant"


async def test_the_daemon_keeps_short_tokens_fresh_without_a_reuse(server: dot.Server,
                                                                   tmp_path, key_lines):
    """`tokend run` for about a minute against 20 s tokens: every refresh succeeds with
    the latest rotated token (a reuse would revoke the grant), and the vended token is
    one the server itself accepts."""
    db_url = f"sqlite://{tmp_path / 'tokend.db'}"
    consumer = "consumer-token-0123456789abcdef"
    path = proc.write_config(tmp_path / "tokend.toml", {
        "database": {"url": db_url},
        "refresh": {"interval_seconds": 1, "expiry_threshold_seconds": 12,
                    "request_timeout_seconds": 10, "lease_seconds": 30,
                    "shutdown_grace_seconds": 10, "backoff_base_seconds": 1},
        "crypto": {"keys": [key_lines[0]]},
        "server": {"host": "127.0.0.1", "port": 0, "admin_token": proc.ADMIN_TOKEN,
                   "consumer_token": consumer},
        **{f"providers.dot-{auth}": {
            "type": "oauth2", "token_url": server.token_url, "client_auth": auth,
            "client_id": credentials(auth)[0], "scopes": ["read"],
            **({"client_secret": credentials(auth)[1]} if auth != "none" else {})}
           for auth in ("basic", "body")},
    })
    assert (await proc.acli(path, "migrate")).returncode == 0
    for account_id, auth in (("a-basic", "basic"), ("a-body", "body")):
        token = await asyncio.to_thread(server.refresh_token, *credentials(auth))
        added = await proc.acli(path, "accounts", "add", "--provider", f"dot-{auth}",
                                "--org", "acme", "--name", account_id, "--id", account_id,
                                stdin=token + "\n")
        assert added.returncode == 0, added.stderr
    running = proc.Daemon(path, tmp_path / "daemon.log")
    try:
        url = await running.url()
        db = await store.connect(db_url)
        try:
            async def refreshed(account_id: str) -> int:
                entries = await db.list_entries(account_id=account_id, limit=1000)
                return sum(e.action == "token_refreshed" for e in entries)

            # First refresh at once (never refreshed), then one about every 8 s.
            async with asyncio.timeout(120):
                while min([await refreshed("a-basic"), await refreshed("a-body")]) < 5:
                    await asyncio.sleep(1)
            async with aiohttp.ClientSession() as http, http.get(
                    f"{url}/api/accounts/a-basic/access-token",
                    headers={"Authorization": f"Bearer {consumer}"}) as response:
                assert response.status == 200
                vended = await response.json()
            assert 0 < vended["expires_in"] <= TOKEN_SECONDS
            introspected = await asyncio.to_thread(server.introspect, vended["access_token"])
            assert introspected["active"] is True
            assert introspected["client_id"] == dot.BASIC_CLIENT
            running.signal(signal.SIGTERM)
            assert await running.wait() == 0
            for account_id in ("a-basic", "a-body"):
                account = await db.get_account(account_id)
                assert account.state == model.ACTIVE and account.consecutive_failures == 0
                entries = await db.list_entries(account_id=account_id, limit=1000)
                assert entries and all(e.action == "token_refreshed" for e in entries), \
                    [(e.action, e.error) for e in entries]
        finally:
            await db.close()
    finally:
        running.kill()
