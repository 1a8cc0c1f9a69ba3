"""Stream fan-out: log entries published into the hub at a fixed rate, delivered over /ws/logs
to subscribers in another process, with and without one subscriber that never reads.
Run: `python -m bench.fanout [--subscribers 100 --rate 1000 --seconds 30]`.

This process is the daemon side only: the store, hub, refresh loop and web app built the way
`tokend.daemon.run` builds them, a publisher, and quiet `Loop.cycle()` calls timed beside it.
The subscribers live in a child process (`--child`) with a lean WebSocket reader, so the
figures are the server's cost, not the clients'. Latency is the time from `hub.publish`
(the entry's `created_at` is stamped just before) to the frame's arrival in the child; both
read the same wall clock.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import dataclasses
import os
import resource
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import common
from tokend import crypto, daemon, logs, model, store

ID_BASE = 1_000_000_000  # published ids start here: far above the store's own entries
CYCLE_EVERY_SECONDS = 0.1  # quiet cycles, one every 100 ms: 10 heartbeat entries a second
LAG_PROBE_SECONDS = 0.01
DRAIN_SECONDS = 5.0  # after the last publish, time for the subscribers to catch up
CONNECT_TIMEOUT_SECONDS = 60.0
TOKEN_ENV = "FANOUT_TOKEN"
ENTRY_PREFIX = b'{"type":"entry",'
CREATED_KEY = b'"created_at":"'


def now() -> datetime:
    return datetime.now(UTC)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarize(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": percentile(ordered, 0.50),
            "p99": percentile(ordered, 0.99), "max": ordered[-1] if ordered else float("nan")}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def counter_value(counter: Any) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def gauge_value(gauge: Any) -> float:
    return sum(s.value for m in gauge.collect() for s in m.samples)


# -- the subscriber process -------------------------------------------------------------


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (clients must mask; the payload is small)."""
    mask = secrets.token_bytes(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    header = (bytes([0x80 | opcode, 0x80 | length]) if length < 126
              else bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big"))
    return header + mask + masked


def upgrade_request(host: str, port: int) -> bytes:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    return (f"GET /ws/logs HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def hello(token: str) -> bytes:
    return frame(0x1, orjson.dumps({"type": "hello", "token": token, "since": None,
                                    "sources": None}))


class Subscriber(asyncio.Protocol):
    """A reading client: parses server frames (never masked) by hand, answers pings, and
    records each published entry's latency against the time its bytes arrived."""

    def __init__(self, host: str, port: int, token: str, ready: asyncio.Event,
                 on_ready: Any) -> None:
        self.host, self.port, self.token = host, port, token
        self.ready, self.on_ready = ready, on_ready
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.latencies = array.array("d")
        self.dropped = 0
        self.closed_by_server = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(upgrade_request(self.host, self.port))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_by_server = True

    def data_received(self, data: bytes) -> None:
        arrived = time.time()
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"upgrade refused: {bytes(buffer[:80])!r}")
            del buffer[:end + 4]
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(hello(self.token))
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            length, head = buffer[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2:pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            self.on_frame(buffer[pos] & 0x0F, bytes(buffer[pos + head:end]), arrived)
            pos = end
        del buffer[:pos]

    def on_frame(self, opcode: int, payload: bytes, arrived: float) -> None:
        if opcode == 0x9:  # ping: the server's heartbeat closes a peer that stays silent
            assert self.transport is not None
            self.transport.write(frame(0xA, payload))
            return
        if opcode == 0x8:
            self.closed_by_server = True
            return
        if opcode != 0x1:
            return
        if payload.startswith(ENTRY_PREFIX):
            # Only the two fields needed, found by position, so this process stays cheap
            # next to the server: `id` is the entry's last key, `created_at` an early one.
            entry_id = payload[payload.rindex(b'"id":') + 5:-1]
            if not entry_id.isdigit() or int(entry_id) < ID_BASE:
                return  # the loop's own heartbeat entries, and the backlog
            start = payload.index(CREATED_KEY) + len(CREATED_KEY)
            created = datetime.fromisoformat(payload[start:payload.index(b'"', start)].decode())
            self.latencies.append(arrived - created.timestamp())
            return
        message = orjson.loads(payload)
        kind = message.get("type")
        if kind == "entries":  # several entries ready together: one frame
            for entry in message["entries"]:
                if entry["id"] >= ID_BASE:
                    created = datetime.fromisoformat(entry["created_at"])
                    self.latencies.append(arrived - created.timestamp())
        elif kind == "dropped":
            self.dropped += message["count"]
        elif kind == "ready" and not self.ready.is_set():
            self.ready.set()
            self.on_ready()


def stalled_subscriber(host: str, port: int, token: str) -> socket.socket:
    """Connects, upgrades, says hello, and never reads again: its socket buffers fill."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(upgrade_request(host, port))
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the server closed the stalled subscriber during the upgrade")
        reply += chunk
    if not reply.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {reply[:80]!r}")
    sock.sendall(hello(token))
    return sock


async def child_main(args: argparse.Namespace) -> None:
    """Connect, print `ready`, record until stdin closes (or the bound), print one JSON line."""
    host, port = args.child.rsplit(":", 1)
    token = os.environ[TOKEN_ENV]
    event_loop = asyncio.get_running_loop()
    stalled = stalled_subscriber(host, int(port), token) if args.stalled else None
    all_ready = asyncio.Event()
    subscribers: list[Subscriber] = []
    ready_count = 0

    def one_ready() -> None:
        nonlocal ready_count
        ready_count += 1
        if ready_count == args.subscribers:
            all_ready.set()

    for _ in range(args.subscribers):
        subscriber = Subscriber(host, int(port), token, asyncio.Event(), one_ready)
        await event_loop.create_connection(lambda s=subscriber: s, host, int(port))
        subscribers.append(subscriber)
    await asyncio.wait_for(all_ready.wait(), CONNECT_TIMEOUT_SECONDS)
    print("ready", flush=True)

    stop = asyncio.Event()
    event_loop.add_reader(sys.stdin.fileno(), stop.set)  # any line, or EOF
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.seconds + 120.0)
    event_loop.remove_reader(sys.stdin.fileno())

    latencies = sorted(x for s in subscribers for x in s.latencies)
    per_subscriber_p99 = [percentile(sorted(s.latencies), 0.99) for s in subscribers]
    result = {
        "received": len(latencies), "p50": percentile(latencies, 0.50),
        "p90": percentile(latencies, 0.90), "p99": percentile(latencies, 0.99),
        "p999": percentile(latencies, 0.999), "max": latencies[-1] if latencies else None,
        "worst_subscriber_p99": max(per_subscriber_p99) if per_subscriber_p99 else None,
        "dropped": sum(s.dropped for s in subscribers),
        "closed": sum(s.closed_by_server for s in subscribers),
    }
    for subscriber in subscribers:
        if subscriber.transport is not None:
            subscriber.transport.abort()
    if stalled is not None:
        stalled.close()
    print(orjson.dumps(result).decode(), flush=True)


class SubscriberProcess:
    def __init__(self, url: str, args: argparse.Namespace, *, stalled: bool) -> None:
        command = [sys.executable, "-m", "bench.fanout", "--child", url.removeprefix("http://"),
                   "--subscribers", str(args.subscribers), "--seconds", str(args.seconds)]
        if stalled:
            command.append("--stalled")
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=common.child_env(**{TOKEN_ENV: common.ADMIN_TOKEN}), cwd=common.REPO)

    async def wait_ready(self) -> None:
        line = await self._line(CONNECT_TIMEOUT_SECONDS + 10)
        if line != "ready":
            raise RuntimeError(f"the subscriber process did not connect (printed {line!r})")

    async def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        line = await self._line(120)
        self.proc.wait(10)
        return orjson.loads(line)

    async def _line(self, timeout_seconds: float) -> str:
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        def read() -> str:
            ready, _, _ = select.select([stdout], [], [], timeout_seconds)
            return stdout.readline().decode().strip() if ready else ""

        return await asyncio.to_thread(read)

    def cpu_seconds(self) -> float:
        return common.process_cpu_seconds(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# -- the daemon side --------------------------------------------------------------------


def bench_entry(n: int) -> model.Entry:
    """A scheduled refresh's log entry, shaped like the refresher's (already masked)."""
    account = f"acct-{n % 5000:07d}"
    return model.Entry(
        action="token_refreshed", source="scheduled", created_at=now(), account_id=account,
        org_id=f"org-{n % 100:03d}", provider=common.PROVIDER, environment="sandbox",
        duration_ms=48.2, id=ID_BASE + n,
        request={"method": "POST", "url": "https://api.sandbox.ebay.com/identity/v1/oauth2/token",
                 "headers": {"Authorization": "Basic ****",
                             "Content-Type": "application/x-www-form-urlencoded"},
                 "body": "grant_type=refresh_token&refresh_token=v%5E1....abcd&scope=https%3A"
                         "%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope"},
        response={"status": 200, "reason": "OK", "headers": {"Content-Type": "application/json"},
                  "body": {"access_token": "v^1....wxyz", "expires_in": 7200,
                           "token_type": "User Access Token"}})


class Server:
    """The daemon's parts on a fresh store, its web app on 127.0.0.1."""

    def __init__(self, exits: contextlib.AsyncExitStack) -> None:
        self.exits = exits

    async def start(self, db_url: str) -> None:
        key_line = crypto.generate_key_line("bench")
        keyring = crypto.Keyring.from_lines([key_line])
        # No account is ever due, so the provider is never called: a dead URL will do.
        self.cfg = common.tokend_config(db_url, "http://127.0.0.1:9/token", key_line)
        self.db = await store.connect(db_url)
        self.exits.push_async_callback(self.db.close)
        await self.db.migrate()
        parts = await self.exits.enter_async_context(
            daemon.assemble(self.cfg, db=self.db, keyring=keyring, instance="bench"))
        self.stats, self.hub, self.loop = parts.stats, parts.hub, parts.loop
        listener = await self.exits.enter_async_context(
            daemon.listening(parts, "127.0.0.1", 0, shutdown_timeout=1.0))
        self.url = listener.url
        feeds = [asyncio.create_task(coro, name=name) for name, coro in self.hub.side_tasks(
            self.db)]

        async def stop_feeds() -> None:
            for task in feeds:
                task.cancel()
            await asyncio.gather(*feeds, return_exceptions=True)

        self.exits.push_async_callback(stop_feeds)
        if feeds:
            await asyncio.wait_for(self.hub.listening.wait(), 10)


async def publish_at_rate(server: Server, rate: float, seconds: float,
                          store_writes: bool) -> dict[str, float]:
    """`rate` entries a second for `seconds`, on schedule; late ones go out at once."""
    total = int(rate * seconds)
    began = time.monotonic()
    n = max_behind = 0
    while n < total:
        due = min(total, int((time.monotonic() - began) * rate) + 1)
        max_behind = max(max_behind, due - n - 1)
        while n < due:
            entry = bench_entry(n)
            if store_writes:
                entry = await server.db.add_entry(entry)
                entry = stream_entry(entry, n)
            server.hub.publish(entry)
            n += 1
        await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
    return {"published": n, "publish_seconds": time.monotonic() - began,
            "max_behind": max_behind}


def stream_entry(stored: model.Entry, n: int) -> model.Entry:
    """The stored entry with the bench's id and a fresh created_at: latency counts from the
    publish, the write before it is the store's cost, not the stream's."""
    return dataclasses.replace(stored, id=ID_BASE + n, created_at=now())


async def time_cycles(server: Server, until: asyncio.Event) -> list[float]:
    """Quiet cycles, one every CYCLE_EVERY_SECONDS; each one's wall time in ms."""
    times: list[float] = []
    while not until.is_set():
        began = time.perf_counter()
        if not await server.loop.cycle():
            raise RuntimeError("a quiet cycle failed on the database")
        times.append(1000.0 * (time.perf_counter() - began))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), CYCLE_EVERY_SECONDS)
    return times


async def probe_lag(until: asyncio.Event) -> list[float]:
    """How late a 10 ms sleep wakes up: the event loop's backlog, in ms."""
    lags: list[float] = []
    while not until.is_set():
        began = time.perf_counter()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        lags.append(1000.0 * (time.perf_counter() - began - LAG_PROBE_SECONDS))
    return lags


async def watch_stall(server: Server, until: asyncio.Event, began: float,
                      subscribers: int) -> dict[str, float | None]:
    """When drops began, and when the stalled subscriber was closed (heartbeat timeout)."""
    first_drop = closed = None
    while not until.is_set():
        if first_drop is None and counter_value(server.stats.stream_dropped) > 0:
            first_drop = time.monotonic() - began
        if closed is None and gauge_value(server.stats.stream_subscribers) <= subscribers:
            closed = time.monotonic() - began
        await asyncio.sleep(0.05)
    return {"first_drop_s": first_drop, "stalled_closed_s": closed}


async def run_once(args: argparse.Namespace, config_name: str,
                   profile: str | None) -> dict[str, Any]:
    subscribers = 0 if config_name == "loop alone" else args.subscribers
    stalled = config_name == "with stalled"
    async with contextlib.AsyncExitStack() as exits:
        tmp = exits.enter_context(tempfile.TemporaryDirectory(prefix="tokend-fanout-"))
        if args.store == "sqlite":
            db_url = f"sqlite://{Path(tmp) / 'tokend.db'}"
        else:
            db_url = await exits.enter_async_context(common.database(args.admin_url))
        server = Server(exits)
        await server.start(db_url)
        child = None
        if subscribers:
            child = SubscriberProcess(server.url, args, stalled=stalled)
            exits.callback(child.close)
            await child.wait_ready()
            expected = subscribers + (1 if stalled else 0)
            for _ in range(200):
                if gauge_value(server.stats.stream_subscribers) >= expected:
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the backlog sent, the connections settled

        until = asyncio.Event()
        began = time.monotonic()
        with common.py_spy(profile):
            cpu_before, machine_before = cpu_seconds(), common.MachineCpu.read()
            child_before = child.cpu_seconds() if child else 0.0
            cycles = asyncio.create_task(time_cycles(server, until))
            lags = asyncio.create_task(probe_lag(until))
            stall_stop = asyncio.Event()  # the stall is watched through the drain too
            stall = asyncio.create_task(watch_stall(server, stall_stop, began, subscribers))
            if subscribers:
                published = await publish_at_rate(server, args.rate, args.seconds,
                                                  args.store_writes)
            else:
                await asyncio.sleep(args.seconds)
                published = {"published": 0, "publish_seconds": args.seconds,
                             "max_behind": 0}
            until.set()
            cycle_times, lag_times = await asyncio.gather(cycles, lags)
            window = time.monotonic() - began
            cpu = cpu_seconds() - cpu_before
            machine = common.MachineCpu.read().percent_since(machine_before)
            # Let the subscribers catch up before they stop counting.
            await asyncio.sleep(DRAIN_SECONDS if subscribers else 0.0)
            stall_stop.set()
            stall_times = await stall
            child_cpu = (child.cpu_seconds() - child_before) if child else 0.0
            cpu_drained = cpu_seconds() - cpu_before
        received = await child.finish() if child else {}
        dropped_total = counter_value(server.stats.stream_dropped)
    # Per frame delivered to a reading subscriber: what the fan-out costs the server.
    delivered = received.get("received", 0)
    return {"config": config_name, **published, "window": window,
            "expected": published["published"] * subscribers,
            "lost": published["published"] * subscribers - delivered,
            "frame_us": 1e6 * cpu_drained / delivered if delivered else None,
            "server_cpu": 100.0 * cpu / window, "child_cpu": 100.0 * child_cpu / window,
            "machine": machine, "cycle": summarize(cycle_times), "lag": summarize(lag_times),
            "received": received, "server_dropped": dropped_total, **stall_times}


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000.0 * seconds:.1f}"


def fmt_s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


def describe(r: dict[str, Any]) -> str:
    got = r["received"]
    text = (f"  run: {r['config']}: server CPU {r['server_cpu']:.0f} %, subscriber process "
            f"{r['child_cpu']:.0f} %, machine {r['machine']:.0f} %, cycle p50/p99/max "
            f"{r['cycle']['p50']:.1f}/{r['cycle']['p99']:.1f}/{r['cycle']['max']:.1f} ms "
            f"({r['cycle']['n']} cycles), event-loop lag p99 {r['lag']['p99']:.1f} ms")
    if got:
        text += (f"\n       delivery p50/p90/p99/p99.9/max {fmt_ms(got['p50'])}/"
                 f"{fmt_ms(got['p90'])}/{fmt_ms(got['p99'])}/{fmt_ms(got['p999'])}/"
                 f"{fmt_ms(got['max'])} ms, worst subscriber p99 "
                 f"{fmt_ms(got['worst_subscriber_p99'])} ms; received {got['received']}/"
                 f"{r['expected']}, lost {r['lost']}, dropped markers {got['dropped']}, "
                 f"closed {got['closed']}; published {r['published']} in "
                 f"{r['publish_seconds']:.1f} s (max {r['max_behind']:.0f} behind schedule)"
                 f"; server dropped {r['server_dropped']:.0f}; server CPU per frame "
                 f"{r['frame_us']:.1f} us")
        if r["config"] == "with stalled":
            text += (f"\n       stalled subscriber: first drop at {fmt_s(r['first_drop_s'])}, "
                     f"closed by the server at {fmt_s(r['stalled_closed_s'])}")
    return text + f", load {common.load_average()}"


async def main_async(args: argparse.Namespace) -> None:
    machine = await common.describe_machine(args.admin_url)
    common.print_machine(machine)
    print(f"subscribers {args.subscribers}, rate {args.rate:g}/s, {args.seconds:g} s, "
          f"store {args.store}, publisher "
          f"{'store.add_entry + hub.publish' if args.store_writes else 'hub.publish'}, "
          f"quiet cycle every {CYCLE_EVERY_SECONDS * 1000:.0f} ms, runs {args.runs}",
          flush=True)
    configs = [c for c in ("loop alone", "subscribers", "with stalled")
               if c in args.configs.split(",")] if args.configs else \
        ["loop alone", "subscribers", "with stalled"]
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for run in range(args.runs):
        for name in configs:
            profile = (f"{args.profile}.{name.replace(' ', '-')}"
                       if args.profile and run == 0 and name != "loop alone" else None)
            r = await run_once(args, name, profile)
            results[name].append(r)
            print(describe(r), flush=True)
            if profile:
                common.summarize_profile(profile)
    print()
    rows = []
    for name, runs in results.items():
        got = [r["received"] for r in runs]
        rows.append([
            name,
            " / ".join(fmt_ms(g.get("p50")) for g in got) if got[0] else "-",
            " / ".join(fmt_ms(g.get("p99")) for g in got) if got[0] else "-",
            " / ".join(fmt_ms(g.get("max")) for g in got) if got[0] else "-",
            " / ".join(str(r["lost"]) for r in runs) if got[0] else "-",
            " / ".join(f"{r['cycle']['p50']:.1f}" for r in runs),
            " / ".join(f"{r['cycle']['p99']:.1f}" for r in runs),
            " / ".join(f"{r['lag']['p99']:.1f}" for r in runs),
            " / ".join(f"{r['server_cpu']:.0f}" for r in runs),
            " / ".join(f"{r['frame_us']:.1f}" for r in runs) if got[0] else "-",
            " / ".join(f"{r['child_cpu']:.0f}" for r in runs),
        ])
    common.print_table(["configuration", "delivery p50 ms", "delivery p99 ms",
                        "delivery max ms", "lost (reading subscribers)", "cycle p50 ms",
                        "cycle p99 ms", "event-loop lag p99 ms", "server CPU %",
                        "server CPU us/frame", "subscriber process CPU %"], rows)
    print(f"load {common.load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="entries per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="publishing window")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--configs", default="",
                        help="comma-separated subset of: loop alone,subscribers,with stalled")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--store-writes", action="store_true",
                        help="write each entry with store.add_entry before publishing it")
    parser.add_argument("--profile", help="py-spy this process into PATH.<configuration>")
    parser.add_argument("--log-file", default=os.devnull,
                        help="where tokend's JSON log lines go (they are written, as in "
                             "production, and cost what they cost)")
    parser.add_argument("--admin-url", default=common.ADMIN_URL)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--stalled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_main(args))
        return
    with open(args.log_file, "a") as log_stream:
        logs.setup(level="info", stream=log_stream, json=True)
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
