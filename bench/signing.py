"""The signature route beside access-token vending: rate and latency of
`POST /api/providers/{name}/signature` and `GET /api/accounts/{id}/access-token` (a stored
token, no refresh) on a real `tokend run` child process, plus the cost of one signature
in process. Run: `python -m bench.signing [--requests 3000 --concurrency 8 --backend both]`.

The key is made by the simulator's createSigningKey through `tokend ebay signing-key
create`; the routes are measured in alternating rounds so both see the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import common
from bench.webhooks import all_refreshed, percentile, seed, start_daemon
from tokend import crypto
from tokend.ebay import signatures
from tokend.testing import simulator

CONSUMER = "bench-consumer-token-0123456789abcdef"
BODY = b'{"amount": {"value": "12.50", "currency": "EUR"}, "reason": "BUYER_CANCEL"}'
ROUNDS = 3


def in_process_microseconds(cipher: str, n: int) -> float:
    """One signature's cost without HTTP: the base, the key operation, the header values."""
    if cipher == signatures.ED25519:
        from cryptography.hazmat.primitives.asymmetric import ed25519
        key: signatures.PrivateKey = ed25519.Ed25519PrivateKey.generate()
    else:
        from cryptography.hazmat.primitives.asymmetric import rsa
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    target = signatures.target("POST", "https://apiz.ebay.com/sell/fulfillment/v1/order/"
                                       "12-34567-89012/issue_refund")
    digest = signatures.content_digest(BODY)
    jwe = "eyJ" + "x" * 600
    began = time.perf_counter()
    for _ in range(n):
        signatures.headers(key, jwe, target, created=1_700_000_000, digest=digest)
    return (time.perf_counter() - began) / n * 1e6


async def signer_in_process(n: int, tmp: Path) -> tuple[float, float, float]:
    """`Signer.sign` itself on SQLite, the key loaded, its entries queued and written in
    batches: (calls per second, median us, p99 us)."""
    from tokend import daemon, store

    url = f"sqlite://{tmp / 'signer.db'}"
    db = await store.connect(url)
    await db.migrate()
    await db.close()
    async with simulator.Simulator() as sim:
        cfg = common.tokend_config(url, sim.token_url, crypto.generate_key_line("bench"))
        provider = dataclasses.replace(cfg.providers[common.PROVIDER],
                                       key_management_url=sim.key_management_url)
        cfg = dataclasses.replace(cfg, providers={common.PROVIDER: provider})
        async with daemon.assemble(cfg) as parts:
            await parts.signer.create(common.PROVIDER)
            digest = signatures.content_digest(BODY)
            url = "https://apiz.ebay.com/sell/finances/v1/transfer"
            await parts.signer.sign(common.PROVIDER, "POST", url, digest)
            latencies = []
            began = time.perf_counter()
            for i in range(n):
                one = time.perf_counter()
                await parts.signer.sign(common.PROVIDER, "POST", url, digest)
                latencies.append((time.perf_counter() - one) * 1e6)
                if i % 100 == 0:
                    await asyncio.sleep(0)  # let the entry writer run, as a server would
            rate = n / (time.perf_counter() - began)
            await parts.signer.drain()
    return rate, statistics.median(latencies), percentile(latencies, 99)


async def load(http: aiohttp.ClientSession, method: str, url: str, json: object | None,
               requests: int, concurrency: int) -> tuple[float, list[float]]:
    """`requests` calls, `concurrency` at a time; (calls per second, latencies in ms)."""
    latencies: list[float] = []
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            began = time.perf_counter()
            async with http.request(method, url, json=json) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{method} {url}: {response.status}")
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return requests / (time.perf_counter() - began), latencies


async def run_backend(backend: str, requests: int, concurrency: int, tmp: Path,
                      ) -> dict[str, tuple[list[float], list[float]]]:
    key_line = crypto.generate_key_line("bench")
    keyring = crypto.Keyring.from_lines([key_line])
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(common.backend_database(backend, tmp))
        (account_id, _), = (await seed(url, keyring, 1)).items()
        sim = await stack.enter_async_context(simulator.Simulator())
        path = common.write_toml(tmp / f"{backend}.toml", url, sim.token_url, key_line,
                                 interval_seconds=600)
        text = path.read_text().replace(
            f'admin_token = "{common.ADMIN_TOKEN}"',
            f'admin_token = "{common.ADMIN_TOKEN}"\nconsumer_token = "{CONSUMER}"').replace(
            f'token_url = "{sim.token_url}"',
            f'token_url = "{sim.token_url}"\nkey_management_url = "{sim.key_management_url}"')
        path.write_text(text)
        created = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tokend", "--config", str(path), "ebay", "signing-key",
            "create", "--provider", common.PROVIDER, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=common.child_env())
        out, err = await created.communicate()
        if created.returncode:
            raise SystemExit(f"signing-key create failed: {err.decode()}")
        proc, base, drain = await start_daemon(path)
        try:
            while not await all_refreshed(url):  # noqa: ASYNC110 (the first cycle)
                await asyncio.sleep(0.2)
            headers = {"Authorization": f"Bearer {CONSUMER}"}
            vend = ("GET", f"{base}/api/accounts/{account_id}/access-token", None)
            sign = ("POST", f"{base}/api/providers/{common.PROVIDER}/signature",
                    {"method": "POST", "content_digest": signatures.content_digest(BODY),
                     "url": "https://apiz.ebay.com/sell/finances/v1/transfer"})
            results: dict[str, tuple[list[float], list[float]]] = {"vend": ([], []),
                                                                   "signature": ([], [])}
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
                for call in (vend, sign):  # warm up
                    await load(http, *call, requests=200, concurrency=concurrency)
                for _ in range(ROUNDS):
                    for name, call in (("vend", vend), ("signature", sign)):
                        rate, ms = await load(http, *call, requests=requests // ROUNDS,
                                              concurrency=concurrency)
                        results[name][0].append(rate)
                        results[name][1].extend(ms)
        finally:
            proc.terminate()
            await proc.wait()
            await drain
        print(f"{backend}: key {out.decode().strip()}", file=sys.stderr)
        return results


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per route and backend")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    common.print_machine(await common.describe_machine())
    print(f"load average before: {common.load_average()}")
    cost = [(cipher, f"{in_process_microseconds(cipher, 2000 if cipher == 'ED25519' else 200):.0f}")
            for cipher in signatures.CIPHERS]
    common.print_table(("cipher", "one signature in process, us"), cost)
    with tempfile.TemporaryDirectory() as tmp:
        rate, median, p99 = await signer_in_process(5000, Path(tmp))
    common.print_table(("Signer.sign (SQLite, entries batched)", "calls/s", "median us",
                        "p99 us"), [("in process", f"{rate:.0f}", f"{median:.0f}", f"{p99:.0f}")])
    rows = []
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        with tempfile.TemporaryDirectory() as tmp:
            results = await run_backend(backend, args.requests, args.concurrency, Path(tmp))
        for name, (rates, ms) in results.items():
            rows.append((backend, name, len(ms), args.concurrency,
                         common.spread(rates, "{:.0f}"), f"{statistics.median(ms):.2f}",
                         f"{percentile(ms, 99):.2f}", f"{max(ms):.1f}"))
    common.print_table(("backend", "route", "calls", "concurrency", "calls/s (rounds)",
                        "median ms", "p99 ms", "max ms"), rows)
    print(f"load average after: {common.load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
