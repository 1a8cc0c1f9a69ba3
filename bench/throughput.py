"""Refresh throughput: N due accounts through tokend's real refresh loop, PostgreSQL store,
against the simulator in a separate process. Run: `python -m bench.throughput [--curve]`.

The loop is built the way `tokend.daemon.run` builds it (refresher, stream hub with its
NOTIFY feed, JSON logging) and one `Loop.cycle()` runs until nothing is due. Only this
process's CPU time counts as tokend's; the simulator's and the PostgreSQL backends' are
shown beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import time
from typing import Any

import asyncpg

from bench import common
from tokend import crypto, daemon, logs, store

CURVE = [(concurrency, latency_ms) for latency_ms in (50.0, 0.0) for concurrency in (16, 64, 256)]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_calls(db: store.Store) -> dict[str, list[float]]:
    """Time the store's claim and save as the loop sees them (pool wait included)."""
    durations: dict[str, list[float]] = {"claim": [], "save": [], "batch": []}

    def timed(name: str, method: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            result = await method(*args, **kwargs)
            durations[name].append(time.perf_counter() - began)
            if name == "claim":
                durations["batch"].append(len(result))
            return result
        return call

    db.claim_due = timed("claim", db.claim_due)  # type: ignore[method-assign]
    db.finish = timed("save", db.finish)  # type: ignore[method-assign]
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
                        print(f"    breakdown: provider call {r['call_ms']:.1f} ms mean; save "
                              f"(finish) {1000 * common.median(d['save']):.1f} ms median, "
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
                        help="time every claim and save, and print where a slot's time goes")
    parser.add_argument("--profile", metavar="PATH",
                        help="sample the first run with py-spy into PATH (raw collapsed stacks)")
    args = parser.parse_args()
    with open(args.log_file, "w") as log_stream, contextlib.suppress(KeyboardInterrupt):
        logs.setup(level="info", stream=log_stream, json=True)
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
