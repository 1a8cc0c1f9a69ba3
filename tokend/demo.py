"""`tokend demo`: the whole daemon on a temporary SQLite file against the simulator.

Twelve accounts, one whose refresh token the provider has revoked (`invalid_grant`
-> `reauth_required`) and one whose stored ciphertext was copied from another row
(`decrypt_failed`, nothing sent). Tokens live three minutes, so refreshes, quiet
heartbeats and both failures all show within the first two minutes.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from tokend import clock, config, crypto, daemon, store
from tokend.testing import simulator

ACCOUNTS = 12
TOKEN_LIFETIME_SECONDS = 180
SELLERS = ["acme-outdoor", "bluebird-books", "cobalt-audio", "delta-vintage", "ember-tea",
           "fjord-knits", "granite-tools", "harbor-toys", "iris-prints", "juniper-home",
           "kestrel-bikes", "lumen-lamps"]


def demo_config(workdir: Path, token_url: str, port: int) -> config.Config:
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
                   "drain_seconds": 0},  # no load balancer to wait for on Ctrl-C
        "providers": {"ebay-sandbox": {
            "type": "ebay", "environment": "sandbox", "token_url": token_url,
            "client_id": simulator.DEFAULT_CLIENT_ID,
            "client_secret": simulator.DEFAULT_CLIENT_SECRET,
        }},
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
            await db.add_account(store.NewAccount(
                id=account_id, org="demo" if n % 3 else "acme", provider="ebay-sandbox",
                name=seller, scopes=(), refresh_token=sealed, refresh_expires_at=None), now)


async def run(*, port: int = 8765, seconds: float | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="tokend-demo-") as tmp:
        workdir = Path(tmp)
        sim = simulator.Simulator(latency_seconds=0.15, rotate=True,
                                  expires_in=TOKEN_LIFETIME_SECONDS)
        await sim.start()
        try:
            cfg = demo_config(workdir, sim.token_url, port)
            await seed(cfg, sim)
            stop = asyncio.Event()

            def announce(url: str) -> None:
                print(f"\n  tokend demo is running ({ACCOUNTS} accounts, provider simulator at "
                      f"{sim.token_url})\n\n  terminal     {url}/terminal\n"
                      f"  admin token  {cfg.server.admin_token}\n"
                      f"  loop status  {url}/loop-status\n\n  Ctrl-C stops it.\n",
                      file=sys.stdout, flush=True)
                if seconds is not None:
                    asyncio.get_running_loop().call_later(seconds, stop.set)

            await daemon.run(cfg, stop=stop, on_ready=announce)
        finally:
            await sim.stop()
