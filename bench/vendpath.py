"""CPU per request of the vend route with no socket and no load generator: raw HTTP
requests fed one at a time into aiohttp's protocol, in one process, for the bare app of
`bench.vend`, tokend's `GET /api/accounts/{id}/access-token` (PostgreSQL, 1,000 accounts
with valid tokens, everything `tokend run` assembles) and tokend's `/livez` (what tokend's
app costs before any vending). Run: `python -m bench.vendpath [--requests 20000]`.

Each figure is the best of three passes in thread CPU time. `bench.vend` measures the
rate under load; this one is steady to about a microsecond, so a change to the route
shows here first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from bench import common, vend
from tokend import config, crypto, daemon, logs

PASSES = 3


class Transport(asyncio.Transport):
    """A connection that keeps nothing: it hands each answer to whoever awaits it."""

    def __init__(self) -> None:
        super().__init__()
        self.answer: asyncio.Future[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(bytes(data))

    def writelines(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def requests(paths: Sequence[str]) -> list[bytes]:
    return [(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             f"Authorization: Bearer {vend.CONSUMER_TOKEN}\r\n\r\n").encode() for path in paths]


async def cost(app: web.Application, raw: list[bytes], count: int) -> float:
    """Microseconds of this thread's CPU per request, best of `PASSES` passes."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    protocol = runner.server()
    transport = Transport()
    protocol.connection_made(transport)
    event_loop = asyncio.get_running_loop()

    async def ask(request: bytes) -> bytes:
        transport.answer = event_loop.create_future()
        protocol.data_received(request)
        return await transport.answer

    try:
        first = await ask(raw[0])
        if not first.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"the route answered {first[:200]!r}")
        for request in raw[:2000]:  # warm: the account rows, the opened envelopes
            await ask(request)
        best = float("inf")
        for _ in range(PASSES):
            began = time.thread_time()
            for n in range(count):
                await ask(raw[n % len(raw)])
            best = min(best, (time.thread_time() - began) / count * 1e6)
        return best
    finally:
        protocol.connection_lost(None)
        await runner.cleanup()


def bare_app() -> web.Application:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=vend.BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/accounts/{id}/access-token", answer)
    return app


async def main_async(args: argparse.Namespace) -> None:
    logs.setup(level="warning", stream=sys.stderr)  # the daemon's start, not its requests
    common.print_machine(await common.describe_machine(args.admin_url))
    print(f"accounts {args.accounts}, {args.requests} requests a pass, best of {PASSES}",
          flush=True)
    vend_paths = [f"/api/accounts/{common.account_id(n)}/access-token"
                  for n in range(1, args.accounts + 1)]
    rows = [["bare aiohttp", await cost(bare_app(), requests(vend_paths), args.requests)]]
    key_line = crypto.generate_key_line("bench")
    keyring = crypto.Keyring.from_lines([key_line])
    with tempfile.TemporaryDirectory(prefix="tokend-vendpath-") as tmp, \
            common.simulator_process(0.0) as sim:
        async with common.database(args.admin_url) as url:
            await common.seed_sealed(url, keyring, args.accounts, common.utcnow(), due=False)
            path = common.write_toml(Path(tmp) / "tokend.toml", url, sim.token_url, key_line,
                                     interval_seconds=60.0)
            os.environ["TOKEND_CONSUMER_TOKEN"] = vend.CONSUMER_TOKEN
            async with daemon.assemble(config.load(path)) as parts:
                rows.append(["tokend vend", await cost(parts.app, requests(vend_paths),
                                                       args.requests)])
                rows.append(["tokend /livez", await cost(parts.app, requests(["/livez"]),
                                                         args.requests)])
    bare = rows[0][1]
    print()
    common.print_table(["", "CPU us/request", "x bare"],
                       [[who, f"{us:.1f}", f"{us / bare:.2f}"] for who, us in rows])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vendpath",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--admin-url", default=common.ADMIN_URL)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
