"""Vending near the box's limit: `GET /api/accounts/{id}/access-token` on `tokend run`
(PostgreSQL, 1,000 accounts with valid tokens) against a bare aiohttp app that answers a
fixed JSON body of the same shape, side by side in one run, loaded by `wrk` (keep-alive
connections, a random account per request). Run: `python -m bench.vend [--repeat 3]`.

Each round measures the bare app, then tokend, and prints both rates, p99, CPU per
request and tokend's share of the bare rate; the median round is the figure. A last check
writes a new token to one account behind tokend's back, as another replica's refresh
would, and measures how long vending keeps answering the old one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import common
from tokend import crypto

CONSUMER_TOKEN = "bench-consumer-token-0123456789abcdef"
BODY = orjson.dumps({"access_token": "v^1.1#i^1#p^3#r^0#I^3#f^0#t^" + "x" * 128,
                     "expires_at": "2030-01-01T00:00:00+00:00", "expires_in": 3600,
                     "token_type": "Bearer"})

WRK_SCRIPT = """
local accounts = tonumber(os.getenv("VEND_ACCOUNTS"))
local auth = "Bearer " .. os.getenv("VEND_TOKEN")
local path = os.getenv("VEND_PATH")
local counter = 0
request = function()
  counter = counter + 1
  local id = string.format("acct-%07d", (counter * 7919) % accounts + 1)
  return wrk.format("GET", path or ("/api/accounts/" .. id .. "/access-token"),
                    {["Authorization"] = auth})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors":%d,"non_2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_app(port: int) -> None:
    """The limit: aiohttp answering a fixed body, nothing else."""
    from aiohttp import web

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/accounts/{id}/access-token", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def spawn(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    with log_path.open("wb") as log_file:
        return subprocess.Popen([sys.executable, *args], stdout=log_file,
                                stderr=subprocess.STDOUT, env=common.child_env(**env),
                                cwd=common.REPO)


def tail(path: Path) -> str:
    return path.read_text()[-2000:]


@contextlib.asynccontextmanager
async def child(args: list[str], port: int, log_path: Path,
                **env: str) -> AsyncIterator[subprocess.Popen]:
    """A child process serving on `port`, stopped with SIGTERM on the way out."""
    proc = spawn(args, log_path, env)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not start: {tail(log_path)}")
            await asyncio.sleep(0.1)
        yield proc
    finally:
        common.stop_process(proc)


async def wrk(port: int, *, accounts: int, seconds: float, connections: int,
              threads: int, script: Path, path: str | None = None) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s",
        "-s", str(script), f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "VEND_ACCOUNTS": str(accounts), "VEND_TOKEN": CONSUMER_TOKEN,
             **({"VEND_PATH": path} if path else {})})
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    for line in out.decode().splitlines():
        if line.startswith("RESULT "):
            result = orjson.loads(line.removeprefix("RESULT "))
            result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk printed no result: {out.decode()[-2000:]}")


async def measure(proc: subprocess.Popen, port: int, **load: Any) -> dict[str, Any]:
    # A short warm-up first: connections, caches, the first plans.
    await wrk(port, **{**load, "seconds": 2})
    before = common.process_cpu_seconds(proc.pid)
    result = await wrk(port, **load)
    result["cpu_ms"] = 1000 * (common.process_cpu_seconds(proc.pid) - before) / max(
        1, result["requests"])
    return result


async def staleness(url: str, port: int, keyring: crypto.Keyring) -> float:
    """Seconds until vending answers a token another replica just stored."""
    account_id = common.account_id(1)
    fresh = "v^1.1#i^1#p^3#r^0#I^3#f^0#t^replica-" + os.urandom(16).hex()
    sealed = keyring.encrypt(fresh, account_id=account_id, column="access_token")
    headers = {"Authorization": f"Bearer {CONSUMER_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        path = f"http://127.0.0.1:{port}/api/accounts/{account_id}/access-token"
        async with http.get(path, headers=headers) as response:  # now in any cache
            assert response.status == 200
        await common.execute(url, (
            "UPDATE accounts SET access_token = '" + sealed + "', last_refresh_at = now(), "
            f"version = version + 1, updated_at = now() WHERE id = '{account_id}'"))
        written = time.monotonic()
        while time.monotonic() - written < 10:
            async with http.get(path, headers=headers) as response:
                if (await response.json())["access_token"] == fresh:
                    return time.monotonic() - written
            await asyncio.sleep(0.005)
    raise RuntimeError("vending never answered the token another replica stored")


async def main_async(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.vend needs wrk (apt-get install wrk)")
    machine = await common.describe_machine(args.admin_url)
    common.print_machine(machine)
    print(f"accounts {args.accounts}, wrk -t{args.threads} -c{args.connections} "
          f"-d{args.seconds:g}s, {args.repeat} rounds (bare app, then tokend)", flush=True)
    key_line = crypto.generate_key_line("bench")
    keyring = crypto.Keyring.from_lines([key_line])
    rounds = []
    with tempfile.TemporaryDirectory(prefix="tokend-vend-") as tmp, \
            common.simulator_process(0.0) as sim:
        script = Path(tmp) / "vend.lua"
        script.write_text(WRK_SCRIPT)
        load = {"accounts": args.accounts, "seconds": args.seconds,
                "connections": args.connections, "threads": args.threads, "script": script}
        async with common.database(args.admin_url) as url:
            await common.seed_sealed(url, keyring, args.accounts, common.utcnow(), due=False)
            config_path = common.write_toml(Path(tmp) / "tokend.toml", url, sim.token_url,
                                            key_line, interval_seconds=60.0)
            for n in range(args.repeat):
                bare_port, tokend_port = free_port(), free_port()
                async with child(["-m", "bench.vend", "--bare-app", str(bare_port)],
                                 bare_port, Path(tmp) / "bare.log") as proc:
                    bare = await measure(proc, bare_port, **load)
                text = config_path.read_text().replace("port = 0", f"port = {tokend_port}")
                config_path.write_text(text)
                async with child(["-m", "tokend", "--config", str(config_path), "run"],
                                 tokend_port, Path(tmp) / "tokend.log",
                                 TOKEND_CONSUMER_TOKEN=CONSUMER_TOKEN) as proc:
                    profile = args.profile if n == 0 else None
                    with common.py_spy(profile, proc.pid):
                        vend = await measure(proc, tokend_port, **load,
                                             path=args.tokend_path)
                    seen_after = await staleness(url, tokend_port, keyring)
                    config_path.write_text(text.replace(f"port = {tokend_port}", "port = 0"))
                ratio = vend["rate"] / bare["rate"]
                rounds.append((ratio, bare, vend, seen_after))
                for who, r in (("bare", bare), ("tokend", vend)):
                    print(f"  round {n + 1} {who}: {r['rate']:,.0f}/s, p50 "
                          f"{r['p50_us'] / 1000:.2f} ms, p99 {r['p99_us'] / 1000:.2f} ms, "
                          f"max {r['max_us'] / 1000:.1f} ms, {r['cpu_ms']:.3f} CPU ms/request, "
                          f"{r['errors']} errors, {r['non_2xx']} non-2xx", flush=True)
                print(f"  round {n + 1}: tokend / bare {ratio:.2f}; a token stored by "
                      f"another replica served after {1000 * seen_after:.0f} ms; "
                      f"load {common.load_average()}", flush=True)
    rounds.sort(key=lambda r: r[0])
    ratio, bare, vend, seen_after = rounds[len(rounds) // 2]
    print()
    common.print_table(
        ["", "requests/s", "p50 ms", "p99 ms", "max ms", "CPU ms/request"],
        [[who, f"{r['rate']:,.0f}", f"{r['p50_us'] / 1000:.2f}", f"{r['p99_us'] / 1000:.2f}",
          f"{r['max_us'] / 1000:.1f}", f"{r['cpu_ms']:.3f}"]
         for who, r in (("bare aiohttp", bare), ("tokend vend", vend))])
    print(f"\nmedian round: tokend / bare = {ratio:.2f} (all rounds: "
          f"{', '.join(f'{r[0]:.2f}' for r in sorted(rounds, key=lambda r: r[0]))}); "
          f"another replica's token seen after {1000 * seen_after:.0f} ms")
    if args.profile:
        print()
        common.summarize_profile(args.profile)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vend", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokend-path", help="load this route of tokend instead (e.g. "
                        "/livez: what tokend's app costs before any vending)")
    parser.add_argument("--profile", help="py-spy raw profile of tokend's first round here")
    parser.add_argument("--admin-url", default=common.ADMIN_URL)
    parser.add_argument("--bare-app", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_app is not None:
        bare_app(args.bare_app)
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
