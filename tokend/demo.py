"""`tokend demo`: the whole daemon on a temporary SQLite file against the simulator.

Twelve accounts, one whose refresh token the provider has revoked (`invalid_grant`
-> `reauth_required`), one whose stored ciphertext was copied from another row
(`decrypt_failed`, nothing sent) and one whose refresh token expires within a week (a
`refresh_token_expiring` notice, which stays: like eBay, the simulator hands out no new
refresh token on a refresh). Tokens live three minutes, so refreshes, quiet
heartbeats and both failures all show within the first two minutes. While it runs, eBay
(the simulator, signing with its own key) notifies that one seller revoked the app's
access and that another seller's account was deleted. It also prints a connect link:
opened in a browser, it walks the simulator's consent page and comes back with a
thirteenth account. A seller in Germany has to sign its Finances calls (eBay's digital
signatures): the demo makes a signing key with the simulator's createSigningKey, and the
app asks tokend for a token and a signature and calls the simulator's Finances API.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import aiohttp

from tokend import clock, config, connect, crypto, daemon, model, store
from tokend.ebay import profile as ebay_profile
from tokend.testing import simulator

ACCOUNTS = 12
TOKEN_LIFETIME_SECONDS = 180
REVOKED_AT_SECONDS = 15  # after start: eBay's AUTHORIZATION_REVOCATION for REVOKED
DELETED_AT_SECONDS = 25  # ...and MARKETPLACE_ACCOUNT_DELETION for DELETED
REVOKED, DELETED = "acct_08", "acct_11"
SIGNED_AT_SECONDS = 8  # after start: the app's signed Finances call for EUROPEAN
EUROPEAN = "acct_04"  # a seller in the EU: its Finances calls must be signed
PROVIDER = "ebay-sandbox"
RUNAME = "tokend_demo-tokendde-SBX-0demo0000-00000000"  # the app's RuName at the simulator
SELLERS = ["acme-outdoor", "bluebird-books", "cobalt-audio", "delta-vintage", "ember-tea",
           "fjord-knits", "granite-tools", "harbor-toys", "iris-prints", "juniper-home",
           "kestrel-bikes", "lumen-lamps"]


def user_id(account_id: str) -> str:
    """The seller's eBay user id in the demo."""
    return "demo" + account_id.replace("_", "")


def demo_config(workdir: Path, sim: simulator.Simulator, port: int) -> config.Config:
    return config.parse({
        "database": {"url": f"sqlite://{workdir / 'tokend.db'}"},
        "refresh": {"interval_seconds": 20, "expiry_threshold_seconds": 120,
                    "max_age_seconds": 3600, "concurrency": 4,
                    "request_timeout_seconds": 5, "lease_seconds": 30,
                    "backoff_base_seconds": 10, "backoff_max_seconds": 300,
                    "shutdown_grace_seconds": 10},
        "crypto": {"keys": [crypto.generate_key_line("demo")]},
        "server": {"host": "127.0.0.1", "port": port,
                   "admin_token": "demo-" + secrets.token_urlsafe(18),
                   "consumer_token": "demo-app-" + secrets.token_urlsafe(18),
                   "drain_seconds": 0,  # no load balancer to wait for on Ctrl-C
                   "public_url": f"http://127.0.0.1:{port}"},
        "providers": {PROVIDER: {
            "type": "ebay", "environment": "sandbox", "token_url": sim.token_url,
            "authorize_url": sim.authorize_url, "identity_url": sim.identity_url,
            "redirect_uri": RUNAME, "key_management_url": sim.key_management_url,
            "client_id": simulator.DEFAULT_CLIENT_ID,
            "client_secret": simulator.DEFAULT_CLIENT_SECRET,
        }},
        "ebay_notifications": {
            "verification_token": "demo-" + secrets.token_hex(20),
            "endpoint": f"http://127.0.0.1:{port}/ebay/notifications",
            "provider": PROVIDER, "public_key_url": sim.public_key_url},
    }, workdir)


async def seed(cfg: config.Config, sim: simulator.Simulator) -> None:
    keyring = cfg.crypto.keyring()
    async with store.open(cfg.database.url, check_schema=False) as db:
        await db.migrate()
        now = clock.now()
        for n, seller in enumerate(SELLERS[:ACCOUNTS]):
            account_id = f"acct_{n + 1:02d}"
            token = f"v^1.1#i^1#r^1#demo^{seller}#t^{secrets.token_urlsafe(32)}"
            sealed = keyring.encrypt(token, account_id=account_id, column="refresh_token")
            if n == 2:
                sim.revoke(token)
            if n == 5:  # a ciphertext that belongs to another row: it must not open here
                sealed = keyring.encrypt(token, account_id="acct_01", column="refresh_token")
            lifetime = timedelta(days=5) if n == 8 else timedelta(
                seconds=ebay_profile.REFRESH_TOKEN_LIFETIME_SECONDS)
            await db.add_account(model.NewAccount(
                id=account_id, org="demo" if n % 3 else "acme", provider=PROVIDER,
                name=seller, scopes=(), refresh_token=sealed, refresh_expires_at=now + lifetime),
                now)
            await db.set_provider_user(account_id, user_id(account_id), seller, now)


async def connect_link(url: str, admin_token: str) -> str:
    """A link made the way an operator makes one: through the admin API."""
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/api/connect-links", json={"provider": PROVIDER, "org": "demo"},
            headers={"Authorization": f"Bearer {admin_token}"}) as response:
        response.raise_for_status()
        return (await response.json())["url"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def notify(url: str, sim: simulator.Simulator) -> None:
    """eBay's two notifications, signed by the simulator, POSTed as eBay does."""
    revoked = sim.notification("AUTHORIZATION_REVOCATION", user_id(REVOKED),
                               username=SELLERS[7], revokeReason="REVOKED_BY_USER")
    deleted = sim.notification("MARKETPLACE_ACCOUNT_DELETION", user_id(DELETED),
                               username=SELLERS[10])
    delays = (REVOKED_AT_SECONDS, DELETED_AT_SECONDS - REVOKED_AT_SECONDS)
    for delay, message in zip(delays, (revoked, deleted), strict=True):
        await asyncio.sleep(delay)
        try:
            await sim.deliver(url, message)
        except (aiohttp.ClientError, OSError) as exc:  # the daemon is stopping
            print(f"  notification not delivered: {type(exc).__name__}", file=sys.stderr)


async def create_signing_key(cfg: config.Config) -> str:
    """A signing key, made as `tokend ebay signing-key create` makes it."""
    async with daemon.assemble(cfg) as parts:
        return (await parts.signer.create(PROVIDER)).id


async def signed_finances_call(url: str, cfg: config.Config, sim: simulator.Simulator) -> None:
    """What an app does for a seller in the EU: an access token and a signature from
    tokend, then the Finances call, which eBay (the simulator) verifies."""
    await asyncio.sleep(SIGNED_AT_SECONDS)
    target = sim.finances_url + "transaction?limit=20"
    auth = {"Authorization": f"Bearer {cfg.server.consumer_token}"}
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(f"{url}/api/accounts/{EUROPEAN}/access-token") as response:
                response.raise_for_status()
                token = (await response.json())["access_token"]
            async with http.post(f"{url}/api/providers/{PROVIDER}/signature",
                                 json={"method": "GET", "url": target}) as response:
                response.raise_for_status()
                signed = await response.json()
            headers = {**signed["headers"], "Authorization": f"Bearer {token}",
                       "X-EBAY-C-MARKETPLACE-ID": "EBAY_DE"}
            async with aiohttp.ClientSession() as ebay, ebay.get(target, headers=headers) as r:
                status, answer = r.status, await r.json(content_type=None)
    except (aiohttp.ClientError, OSError, KeyError) as exc:  # the daemon is stopping
        print(f"  signed call not made: {type(exc).__name__}", file=sys.stderr)
        return
    seller = SELLERS[int(EUROPEAN[-2:]) - 1]
    outcome = (f"{status}, {answer.get('total', 0)} transaction(s)" if status == 200 else
               f"{status}, refused: {answer['errors'][0]['longMessage']}")
    print(f"\n  signed call  GET /sell/finances/v1/transaction for {seller} (EBAY_DE), "
          f"signed by tokend with key {signed['signing_key_id'][:8]}... -> eBay says "
          f"{outcome}\n               Signature-Input: {signed['headers']['Signature-Input']}\n",
          file=sys.stdout, flush=True)


async def run(*, port: int = 8765, seconds: float | None = None) -> None:
    # The connect link and the consent page's way back need the port before we listen.
    port = port or _free_port()
    with tempfile.TemporaryDirectory(prefix="tokend-demo-") as tmp:
        workdir = Path(tmp)
        # As eBay answers: no new refresh token on a refresh, so the seller whose refresh
        # token expires in 5 days stays shown as expiring until it is reconnected.
        sim = simulator.Simulator(latency_seconds=0.15, expires_in=TOKEN_LIFETIME_SECONDS)
        await sim.start()
        try:
            cfg = demo_config(workdir, sim, port)
            sim.register_redirect(RUNAME, cfg.server.public_url + connect.CALLBACK_PATH)
            await seed(cfg, sim)
            await create_signing_key(cfg)
            stop = asyncio.Event()
            notifying: list[asyncio.Task] = []

            async def announce(url: str) -> None:
                link = await connect_link(url, cfg.server.admin_token)
                print(f"\n  tokend demo is running ({ACCOUNTS} accounts, provider simulator at "
                      f"{sim.token_url})\n\n  console      {url}/\n"
                      f"  terminal     {url}/terminal\n"
                      f"  admin token  {cfg.server.admin_token}\n"
                      f"  loop status  {url}/loop-status\n"
                      f"  eBay         notifies that {REVOKED} revoked access after "
                      f"{REVOKED_AT_SECONDS} s and that {DELETED} was deleted after "
                      f"{DELETED_AT_SECONDS} s\n"
                      f"  connect      {link}\n"
                      f"               (open it in a browser: the simulator's consent page "
                      f"signs in as {sim.seller.username};\n               it works once, "
                      f"for {connect.LINK_LIFETIME_SECONDS / 60:g} minutes)\n\n"
                      f"  Ctrl-C stops it.\n", file=sys.stdout, flush=True)
                notifying.append(asyncio.create_task(notify(url + "/ebay/notifications", sim),
                                                     name="demo-notifications"))
                notifying.append(asyncio.create_task(signed_finances_call(url, cfg, sim),
                                                     name="demo-signed-call"))
                if seconds is not None:
                    asyncio.get_running_loop().call_later(seconds, stop.set)

            await daemon.run(cfg, stop=stop, on_ready=announce)
        finally:
            for task in notifying:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await sim.stop()
