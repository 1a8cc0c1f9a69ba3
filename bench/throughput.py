"""Refresh throughput: N due accounts, PostgreSQL, against the simulator in a separate
process. Run: `python -m bench.throughput [--curve]`.

By default, side by side in one run against the same simulator process: the real daemon
(`tokend run` as a child process) and the peer (`bench.peer`: Authlib + httpx + asyncpg +
Fernet under a semaphore of the same concurrency, also a child; `--peer-variants` runs
only the peer, each way of setting up its HTTP clients), printing both and their
ratio. Each process's CPU time is read from /proc.

`--in-process` runs tokend's loop inside this process instead, built with
`daemon.assemble`, one `Loop.cycle()` until nothing is due; `--breakdown` times its claims
and group commits there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import common
from tokend import crypto, daemon, logs, store

CURVE = [(concurrency, latency_ms) for latency_ms in (50.0, 0.0) for concurrency in (16, 64, 256)]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_calls(db: store.Store) -> dict[str, list[float]]:
    """Time the store's claim and save as the loop sees them (pool wait included)."""
    durations: dict[str, list[float]] = {"claim": [], "save": [], "batch": [], "saves": []}

    def timed(name: str, method: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            result = await method(*args, **kwargs)
            durations[name].append(time.perf_counter() - began)
            if name == "claim":
                durations["batch"].append(len(result))
            else:
                durations["saves"].append(len(result))
            return result
        return call

    db.claim_due = timed("claim", db.claim_due)  # type: ignore[method-assign]
    # The refresher's saves are group-committed: a "save" is one batch's transaction.
    db.finish_many = timed("save", db.finish_many)  # type: ignore[method-assign]
    return durations


async def run_once(url: str, sim: common.SimulatorProcess, keyring: crypto.Keyring,
                   key_line: str, *, accounts: int, concurrency: int, latency_ms: float,
                   pool_max_size: int, profile: str | None = None,
                   breakdown: bool = False) -> dict[str, Any]:
    await common.empty_tables(url)
    seeded_at = common.utcnow()
    await common.seed_sealed(url, keyring, accounts, seeded_at, due=True)
    sim.configure(latency_seconds=latency_ms / 1000.0, reset_stats=True)

    cfg = common.tokend_config(url, sim.token_url, key_line, pool_max_size=pool_max_size,
                               concurrency=concurrency, lease_seconds=600.0,
                               request_timeout_seconds=15.0)
    db = await store.connect(url, pool_max_size=pool_max_size)
    durations = time_calls(db) if breakdown else None
    side: list[asyncio.Task] = []
    try:
        async with daemon.assemble(cfg, db=db, keyring=keyring, instance="bench") as parts:
            worker, refresh_loop, hub = parts.refresher, parts.loop, parts.hub
            stats = parts.stats
            side = [asyncio.create_task(coro, name=name) for name, coro in hub.side_tasks(db)]
            await asyncio.wait_for(hub.listening.wait(), 10)

            with common.py_spy(profile):
                machine_before, sim_before = common.MachineCpu.read(), sim.cpu_seconds()
                pg_before = common.postgres_cpu_by_pid()
                cpu_before, began = cpu_seconds(), time.perf_counter()
                cycles = 0
                while cycles < 10:
                    if not await refresh_loop.cycle():
                        raise RuntimeError("a cycle failed on the database")
                    cycles += 1
                    if await db.count_due(common.utcnow(), expiry_threshold_seconds=900.0,
                                          max_age_seconds=3600.0) == 0:
                        break
                wall = time.perf_counter() - began
                cpu = cpu_seconds() - cpu_before
                sim_cpu = sim.cpu_seconds() - sim_before
                machine = common.MachineCpu.read().percent_since(machine_before)
            await worker.drain()
            pg_cpu = await common.backend_cpu_seconds_since(url, pg_before)
    finally:
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        await db.close()

    conn = await asyncpg.connect(url, timeout=10)
    try:
        refreshed = await conn.fetchval(
            "SELECT count(*) FROM accounts WHERE last_refresh_at >= $1", seeded_at)
        failed = await conn.fetchval("SELECT count(*) FROM refresh_log WHERE NOT success")
    finally:
        await conn.close()
    sim_stats = sim.stats()
    # Provider call time as tokend saw it (event-loop delays included), from its own metrics.
    samples = {m.name: m.value for metric in stats.refresh_seconds.collect()
               for m in metric.samples}
    call = samples.get("tokend_refresh_duration_seconds_sum", 0.0) / max(
        samples.get("tokend_refresh_duration_seconds_count", 0.0), 1.0)
    ideal = math.ceil(accounts / concurrency) * latency_ms / 1000.0
    return {
        "wall": wall, "ideal": ideal, "ratio": wall / ideal if ideal else None,
        "rate": refreshed / wall, "cpu_ms": 1000.0 * cpu / max(refreshed, 1),
        "sim_cpu_ms": 1000.0 * sim_cpu / max(refreshed, 1),
        "pg_cpu_ms": 1000.0 * pg_cpu / max(refreshed, 1), "machine": machine,
        "refreshed": refreshed, "failed": failed, "cycles": cycles, "call_ms": 1000.0 * call,
        # How long each of the `concurrency` slots was taken per refresh, on average.
        "slot_ms": 1000.0 * wall * concurrency / max(refreshed, 1),
        "max_in_flight": sim_stats["max_in_flight"], "sim_calls": sim_stats["calls"],
        "durations": durations,
    }


# -- side by side: the real daemon and the peer ------------------------------------------


def _start_daemon(config_path: Path, log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "tokend", "--config", str(config_path), "run"],
            stdout=log_file, stderr=subprocess.STDOUT, env=common.child_env(),
            cwd=common.REPO)


def _find_event(log_path: Path, proc: subprocess.Popen, name: str) -> dict[str, Any] | None:
    for line in log_path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            event = orjson.loads(line)
            if event.get("event") == name:
                return event
    if proc.poll() is not None:
        raise RuntimeError(f"tokend run exited {proc.returncode}: "
                           f"{log_path.read_text()[-2000:]}")
    return None


async def _wait_for_event(log_path: Path, proc: subprocess.Popen, name: str,
                          within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (event := _find_event(log_path, proc, name)) is not None:
            return event
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no {name} from tokend run within {within} s")


async def daemon_once(url: str, sim: common.SimulatorProcess, keyring: crypto.Keyring,
                      key_line: str, *, accounts: int, concurrency: int,
                      pool_max_size: int, profile: str | None) -> dict[str, Any]:
    """`tokend run` refreshes `accounts` accounts that come due while it runs."""
    await common.empty_tables(url)
    with tempfile.TemporaryDirectory(prefix="tokend-bench-") as tmp:
        config_path = common.write_toml(
            Path(tmp) / "tokend.toml", url, sim.token_url, key_line,
            pool_max_size=pool_max_size, concurrency=concurrency, interval_seconds=0.2,
            lease_seconds=600.0, request_timeout_seconds=15.0)
        log_path = Path(tmp) / "daemon.log"
        proc = _start_daemon(config_path, log_path)
        try:
            await _wait_for_event(log_path, proc, "daemon_ready")
            conn = await asyncpg.connect(url, timeout=10)
            try:
                with common.py_spy(profile, proc.pid):
                    cpu_before, sim_before = (common.process_cpu_seconds(proc.pid),
                                              sim.cpu_seconds())
                    seeded_at = common.utcnow()
                    await common.seed_sealed(url, keyring, accounts, seeded_at, due=True)
                    deadline = time.monotonic() + 600
                    while await conn.fetchval(
                            "SELECT count(*) FROM accounts WHERE last_refresh_at >= $1",
                            seeded_at) < accounts:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise RuntimeError("tokend run did not refresh every account")
                        await asyncio.sleep(0.02)
                    done_at = time.time()
                    cpu = common.process_cpu_seconds(proc.pid) - cpu_before
                    sim_cpu = sim.cpu_seconds() - sim_before
                first = await conn.fetchval("SELECT min(started_at) FROM refresh_log")
                failed = await conn.fetchval(
                    "SELECT count(*) FROM refresh_log WHERE NOT success")
            finally:
                await conn.close()
        finally:
            common.stop_process(proc)
    wall = done_at - first.timestamp()
    return {"wall": wall, "cpu": cpu, "sim_cpu": sim_cpu, "refreshed": accounts,
            "failed": failed}


async def peer_once(url: str, sim: common.SimulatorProcess, *, accounts: int,
                    concurrency: int, variant: str = "shards") -> dict[str, Any]:
    from cryptography.fernet import Fernet

    from bench import peer  # the bench extras: authlib, httpx, cryptography

    key = Fernet.generate_key()
    await peer.seed(url, key, {common.account_id(i): common.refresh_token()
                               for i in range(1, accounts + 1)})
    sim_before = sim.cpu_seconds()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.peer", "--db", url, "--token-url", sim.token_url,
        "--key", key.decode(), "--concurrency", str(concurrency), "--variant", variant,
        stdout=subprocess.PIPE, env=common.child_env(), cwd=common.REPO)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the peer exited {proc.returncode}")
    result = orjson.loads(out.splitlines()[-1])
    result["sim_cpu"] = sim.cpu_seconds() - sim_before
    return result


async def side_by_side(args: argparse.Namespace) -> None:
    points = CURVE if args.curve else [(args.concurrency, args.latency_ms)]
    machine = await common.describe_machine(args.admin_url)
    common.print_machine(machine)
    print(f"accounts {args.accounts}, pool_max_size {args.pool_max_size}, runs per point "
          f"{args.repeat} (tokend then the peer each time); best run shown", flush=True)
    key_line = crypto.generate_key_line("bench")
    keyring = crypto.Keyring.from_lines([key_line])
    rows = []
    with common.simulator_process(points[0][1]) as sim:
        async with common.database(args.admin_url) as url:
            for concurrency, latency_ms in points:
                best: dict[str, dict[str, Any]] = {}
                for n in range(args.repeat):
                    sim.configure(latency_seconds=latency_ms / 1000.0, reset_stats=True)
                    t = await daemon_once(
                        url, sim, keyring, key_line, accounts=args.accounts,
                        concurrency=concurrency, pool_max_size=args.pool_max_size,
                        profile=args.profile if not rows and n == 0 else None)
                    sim.configure(latency_seconds=latency_ms / 1000.0, reset_stats=True)
                    p = await peer_once(url, sim, accounts=args.accounts,
                                        concurrency=concurrency)
                    for who, r in (("tokend", t), ("peer", p)):
                        print(f"  run: {who}, concurrency {concurrency}, latency "
                              f"{latency_ms:g} ms: {r['wall']:.2f} s, "
                              f"{r['refreshed'] / r['wall']:.0f}/s, "
                              f"{1000 * r['cpu'] / r['refreshed']:.2f} CPU ms per refresh, "
                              f"{r['failed']} failed, load {common.load_average()}", flush=True)
                        if who not in best or r["wall"] < best[who]["wall"]:
                            best[who] = r
                ideal = math.ceil(args.accounts / concurrency) * latency_ms / 1000.0
                t, p = best["tokend"], best["peer"]
                rate_t, rate_p = t["refreshed"] / t["wall"], p["refreshed"] / p["wall"]
                rows.append([
                    concurrency, f"{latency_ms:g}",
                    f"{t['wall']:.2f}", f"{p['wall']:.2f}",
                    f"{t['wall'] / ideal:.2f}" if ideal else "-",
                    f"{p['wall'] / ideal:.2f}" if ideal else "-",
                    f"{rate_t:.0f}", f"{rate_p:.0f}", f"{rate_t / rate_p:.2f}",
                    f"{1000 * t['cpu'] / t['refreshed']:.2f}",
                    f"{1000 * p['cpu'] / p['refreshed']:.2f}"])
    print()
    common.print_table(
        ["concurrency", "latency ms", "tokend wall s", "peer wall s", "tokend wall/ideal",
         "peer wall/ideal", "tokend refreshes/s", "peer refreshes/s", "tokend / peer",
         "tokend CPU ms/refresh", "peer CPU ms/refresh"], rows)
    print(f"\nload after: {common.load_average()}")
    if args.profile:
        print()
        common.summarize_profile(args.profile)


async def peer_variants(args: argparse.Namespace) -> None:
    """Only the peer, each of its HTTP client variants in turn, `--repeat` rounds."""
    from bench import peer

    machine = await common.describe_machine(args.admin_url)
    common.print_machine(machine)
    print(f"accounts {args.accounts}, concurrency {args.concurrency}, latency "
          f"{args.latency_ms:g} ms, rounds {args.repeat} (each variant once a round); "
          "median shown", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in peer.VARIANTS}
    with common.simulator_process(args.latency_ms) as sim:
        async with common.database(args.admin_url) as url:
            for _ in range(args.repeat):
                for variant in peer.VARIANTS:
                    sim.configure(latency_seconds=args.latency_ms / 1000.0, reset_stats=True)
                    r = await peer_once(url, sim, accounts=args.accounts,
                                        concurrency=args.concurrency, variant=variant)
                    runs[variant].append(r)
                    print(f"  run: {variant}: {r['wall']:.2f} s, "
                          f"{r['refreshed'] / r['wall']:.0f}/s, "
                          f"{1000 * r['cpu'] / r['refreshed']:.2f} CPU ms per refresh, "
                          f"{r['failed']} failed, load {common.load_average()}", flush=True)
    ideal = math.ceil(args.accounts / args.concurrency) * args.latency_ms / 1000.0
    rows = []
    for variant, rs in runs.items():
        wall = common.median([r["wall"] for r in rs])
        cpu = common.median([1000 * r["cpu"] / r["refreshed"] for r in rs])
        rows.append([variant, f"{wall:.2f}", common.spread([r["wall"] for r in rs]),
                     f"{wall / ideal:.2f}" if ideal else "-", f"{cpu:.2f}"])
    print()
    common.print_table(["variant", "wall s", "spread s", "wall/ideal", "CPU ms/refresh"], rows)


# -- in process -------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> None:
    points = CURVE if args.curve else [(args.concurrency, args.latency_ms)]
    machine = await common.describe_machine(args.admin_url)
    common.print_machine(machine)
    print(f"accounts {args.accounts}, pool_max_size {args.pool_max_size}, "
          f"runs per point {args.repeat}; best run shown, spread = wall time min-max",
          flush=True)
    key_line = crypto.generate_key_line("bench")
    keyring = crypto.Keyring.from_lines([key_line])
    rows = []
    with common.simulator_process(points[0][1]) as sim:
        async with common.database(args.admin_url) as url:
            for concurrency, latency_ms in points:
                runs = []
                for _ in range(args.repeat):
                    runs.append(await run_once(
                        url, sim, keyring, key_line, accounts=args.accounts,
                        concurrency=concurrency, latency_ms=latency_ms,
                        pool_max_size=args.pool_max_size,
                        profile=args.profile if not rows and not runs else None,
                        breakdown=args.breakdown))
                    r = runs[-1]
                    print(f"  run: concurrency {concurrency}, latency {latency_ms:g} ms: "
                          f"{r['wall']:.2f} s, {r['rate']:.0f}/s, {r['cpu_ms']:.2f} CPU ms "
                          f"per refresh (PostgreSQL {r['pg_cpu_ms']:.2f}, "
                          f"machine {r['machine']:.0f} %), "
                          f"{r['refreshed']} refreshed, {r['failed']} failed, "
                          f"load {common.load_average()}", flush=True)
                    if r["durations"]:
                        d = r["durations"]
                        print(f"    breakdown: provider call {r['call_ms']:.1f} ms mean; "
                              f"{len(d['save'])} group commits of "
                              f"{common.median(d['saves']):.0f} saves median, "
                              f"{1000 * common.median(d['save']):.1f} ms median, "
                              f"{1000 * sum(d['save']) / len(d['save']):.1f} mean; "
                              f"{len(d['claim'])} claims of {common.median(d['batch']):.0f} "
                              f"accounts median, {1000 * common.median(d['claim']):.1f} ms "
                              f"median, {sum(d['claim']):.2f} s in all (the loop waits on "
                              "each); slot per refresh "
                              f"{r['slot_ms']:.1f} ms", flush=True)
                best = min(runs, key=lambda r: r["wall"])
                rows.append([
                    concurrency, f"{latency_ms:g}", f"{best['wall']:.2f}",
                    common.spread([r["wall"] for r in runs]),
                    f"{best['ideal']:.2f}" if best["ideal"] else "-",
                    f"{best['ratio']:.2f}" if best["ratio"] else "-",
                    f"{best['rate']:.0f}", f"{best['cpu_ms']:.2f}", f"{best['sim_cpu_ms']:.2f}",
                    f"{best['pg_cpu_ms']:.2f}",
                    f"{best['slot_ms']:.1f}", f"{best['call_ms']:.1f}",
                    f"{best['machine']:.0f} %", best["max_in_flight"],
                    f"{best['refreshed']}/{args.accounts}"])
    print()
    common.print_table(
        ["concurrency", "latency ms", "wall s", "spread s", "ideal s", "ratio", "refreshes/s",
         "tokend CPU ms/refresh", "simulator CPU ms/refresh", "PostgreSQL CPU ms/refresh",
         "slot ms/refresh", "provider call ms (mean)", "machine CPU", "max in flight",
         "refreshed"], rows)
    print(f"\nload after: {common.load_average()}; target: ratio <= 1.3 "
          f"(concurrency 64, latency 50 ms)")
    if args.profile:
        print()
        common.summarize_profile(args.profile)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--curve", action="store_true",
                        help="concurrency 16, 64, 256 at latency 50 ms and at 0 ms")
    parser.add_argument("--repeat", type=int, default=2, help="runs per point")
    parser.add_argument("--pool-max-size", type=int, default=10,
                        help="[database].pool_max_size (default: tokend's default, 10)")
    parser.add_argument("--admin-url", default=common.ADMIN_URL)
    parser.add_argument("--log-file", default=os.devnull,
                        help="where tokend's JSON log lines go (default: discarded)")
    parser.add_argument("--breakdown", action="store_true",
                        help="with --in-process: time every claim and group commit")
    parser.add_argument("--profile", metavar="PATH",
                        help="sample tokend in the first run with py-spy into PATH "
                             "(raw collapsed stacks)")
    parser.add_argument("--in-process", action="store_true",
                        help="tokend's loop inside this process, without the peer")
    parser.add_argument("--peer-variants", action="store_true",
                        help="only the peer, each of its HTTP client variants")
    args = parser.parse_args()
    if args.peer_variants:
        asyncio.run(peer_variants(args))
        return
    if not args.in_process:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(side_by_side(args))
        return
    with open(args.log_file, "w") as log_stream, contextlib.suppress(KeyboardInterrupt):
        logs.setup(level="info", stream=log_stream, json=True)
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
