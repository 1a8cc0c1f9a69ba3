"""Webhook delivery latency: from a state change's commit to the receiver.
Run: `python -m bench.webhooks [--events 200 --rate 20 --backend both]`.

A real `tokend run` child process on each backend, one `[[webhooks]]` endpoint pointing at a
receiver in this process (it verifies every signature with the `standardwebhooks` reference
code and notes the arrival time). The state changes are real: the simulator (also here)
revokes an account's refresh token and the admin API refreshes it, so the daemon moves it to
reauth_required and writes account.reauth_required in that transaction. Latency is the
receiver's arrival time minus the event's `timestamp` (stamped by the daemon just before the
commit); both read the same wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import orjson
import standardwebhooks
from aiohttp import web

from bench import common
from tokend import clock, crypto, model, store
from tokend.testing import simulator

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a fixed bench key, not a credential


class Receiver:
    def __init__(self) -> None:
        self.verifier = standardwebhooks.Webhook(SECRET)
        self.latencies: dict[str, float] = {}  # webhook-id -> seconds
        self.bad = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        try:
            payload = self.verifier.verify(body, dict(request.headers))
        except standardwebhooks.WebhookVerificationError:
            self.bad += 1
            return web.Response(status=401)
        if payload["type"] == "account.reauth_required":
            stamped = datetime.fromisoformat(payload["timestamp"]).timestamp()
            self.latencies.setdefault(request.headers["webhook-id"], arrived - stamped)
        return web.Response(status=204)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        try:
            yield
        finally:
            await runner.cleanup()


async def seed(url: str, keyring: crypto.Keyring, count: int) -> dict[str, str]:
    tokens = {common.account_id(i): common.refresh_token() for i in range(count)}
    async with store.open(url) as db:
        for account_id, token in tokens.items():
            await db.add_account(model.NewAccount(
                id=account_id, org="acme", provider=common.PROVIDER, name=account_id,
                scopes=(), refresh_token=keyring.encrypt(token, account_id=account_id,
                                                         column="refresh_token"),
                refresh_expires_at=None), clock.now())
    return tokens


async def all_refreshed(url: str) -> bool:
    async with store.open(url) as db:
        return all(a.access_token for a in await db.list_accounts())


async def start_daemon(path: Path) -> tuple[asyncio.subprocess.Process, str, asyncio.Task]:
    """`tokend run` on `path`; returns it, its URL, and the task that drains its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokend", "--config", str(path), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=common.child_env())
    assert proc.stdout is not None
    tail: list[bytes] = []
    async with asyncio.timeout(30):
        while line := await proc.stdout.readline():
            tail = [*tail[-20:], line]
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if event.get("event") == "daemon_ready":
                    return proc, event["url"], asyncio.create_task(proc.stdout.read())
    raise SystemExit("tokend exited: " + b"".join(tail).decode(errors="replace"))


async def run_backend(backend: str, events: int, rate: float, tmp: Path) -> list[float]:
    key_line = crypto.generate_key_line("bench")
    keyring = crypto.Keyring.from_lines([key_line])
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(common.backend_database(backend, tmp))
        tokens = await seed(url, keyring, events)
        sim = await stack.enter_async_context(simulator.Simulator())
        receiver = Receiver()
        await stack.enter_async_context(receiver.serving())
        path = common.write_toml(tmp / f"{backend}.toml", url, sim.token_url, key_line,
                                 interval_seconds=600)
        with path.open("a") as f:
            f.write(f'\n[[webhooks]]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n'
                    'events = ["account.reauth_required"]\n')
        proc, base, drain = await start_daemon(path)
        try:
            while not await all_refreshed(url):  # noqa: ASYNC110 (the first cycle: no events)
                await asyncio.sleep(0.2)
            headers = {"Authorization": f"Bearer {common.ADMIN_TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                began = time.monotonic()
                for n, (account_id, token) in enumerate(tokens.items()):
                    sim.revoke(token)
                    async with http.post(f"{base}/api/accounts/{account_id}/refresh") as r:
                        await r.read()
                    await asyncio.sleep(max(0.0, began + (n + 1) / rate - time.monotonic()))
            async with asyncio.timeout(60):
                while len(receiver.latencies) < events:  # noqa: ASYNC110 (polling the receiver)
                    await asyncio.sleep(0.05)
        finally:
            proc.terminate()
            await proc.wait()
            await drain
        if receiver.bad:
            raise SystemExit(f"{receiver.bad} deliveries failed verification")
        return list(receiver.latencies.values())


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 \
        else max(values)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="state changes per second")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    common.print_machine(await common.describe_machine())
    rows = []
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        with tempfile.TemporaryDirectory() as tmp:
            latencies = await run_backend(backend, args.events, args.rate, Path(tmp))
        ms = [v * 1000 for v in latencies]
        rows.append((backend, len(ms), f"{args.rate:g}/s", f"{statistics.median(ms):.1f}",
                     f"{percentile(ms, 99):.1f}", f"{max(ms):.1f}"))
    common.print_table(("backend", "events", "rate", "median ms", "p99 ms", "max ms"), rows)


if __name__ == "__main__":
    asyncio.run(main())
