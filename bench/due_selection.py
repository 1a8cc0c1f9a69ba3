"""Due-selection cost on PostgreSQL at 10k, 100k and 1M accounts with 1% due.
Run: `python -m bench.due_selection [--sizes 10000,100000,1000000]`.

Two figures per size: claiming a batch (`claim_due`, limit 100, through the store and its
pool, the way the loop calls it), and a quiet cycle: one `Loop.cycle()` (heartbeat, empty
claim, finish, log entry) plus the `next_due_at` that plans the sleep, with every due
account already leased so nothing is refreshed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from bench import common
from tokend import crypto, daemon, logs, loop, model, store
from tokend.store import queries

LEASE_SECONDS = 3600.0  # claimed accounts stay leased for the whole benchmark
CLAIM_LIMIT = 100


def claim_args() -> dict[str, Any]:
    return {"limit": CLAIM_LIMIT, "lease_seconds": LEASE_SECONDS,
            "expiry_threshold_seconds": 900.0, "max_age_seconds": 3600.0}


async def claim_times(db: store.Store, url: str,
                      repeat: int) -> tuple[list[float], float, list[int]]:
    """Claim a batch `repeat` times; between claims the batch is handed back and the table
    vacuumed, so every claim sees the same table. Also the server's own execution time
    (median of three), and the WAL each claim wrote (the server's, other sessions' too)."""
    conn = await asyncpg.connect(url, timeout=10)
    times, wal = [], []
    try:
        for _ in range(repeat):
            now = common.utcnow()
            lsn = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
            began = time.perf_counter()
            batch = await db.claim_due("bench", now, **claim_args())
            times.append(time.perf_counter() - began)
            wal.append(int(await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", lsn)))
            if len(batch) != CLAIM_LIMIT:
                raise RuntimeError(f"claimed {len(batch)} accounts, expected {CLAIM_LIMIT}")
            await conn.execute(
                "UPDATE accounts SET lease_owner = NULL, lease_expires_at = NULL, "
                "next_attempt_at = $2 WHERE id = ANY($1)",
                [a.id for a in batch], now - timedelta(minutes=1))
            await conn.execute("VACUUM accounts", timeout=600)
            # A commit that flushes VACUUM's WAL, so the next claim's commit flushes only its own.
            await conn.execute("BEGIN; SELECT txid_current(); COMMIT")
        server = common.median([await explain_claim(conn) for _ in range(3)])
    finally:
        await conn.close()
    return times, server, wal


async def explain_claim(conn: asyncpg.Connection) -> float:
    """The claim statement's execution time as PostgreSQL reports it; rolled back, so
    every call claims the same rows."""
    now = common.utcnow()
    tr = conn.transaction()
    await tr.start()
    try:
        sql, names = queries.to_numbered(queries.load("postgresql")["claim_due"])
        params = {"owner": "bench", "limit": CLAIM_LIMIT,
                  "lease_until": now + timedelta(seconds=LEASE_SECONDS),
                  **store.due_params(now, 900.0, 3600.0)}
        plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql,
                                   *[params[n] for n in names])
    finally:
        await tr.rollback()
    return float(orjson.loads(plan)[0]["Execution Time"]) / 1000.0


async def lease_everything_due(db: store.Store, url: str) -> int:
    leased = 0
    while True:
        now = common.utcnow()
        batch = await db.claim_due("other-replica", now, **{**claim_args(), "limit": 1000})
        if not batch:
            break
        leased += len(batch)
    await common.execute(url, "VACUUM ANALYZE accounts")
    return leased


async def quiet_cycles(cfg: Any, db: store.Store, keyring: crypto.Keyring,
                       repeat: int) -> tuple[list[float], dict[str, list[float]]]:
    async with daemon.assemble(cfg, db=db, keyring=keyring, instance="bench") as parts:
        refresh_loop = parts.loop
        cycles = []
        for _ in range(repeat):
            began = time.perf_counter()
            if not await refresh_loop.cycle():
                raise RuntimeError("a cycle failed on the database")
            await db.next_due_at(common.utcnow())
            cycles.append(time.perf_counter() - began)
            if parts.stats.refreshes.collect()[0].samples:
                raise RuntimeError("the quiet cycle refreshed an account")

        # The same statements one by one, to see where a quiet cycle's time goes.
        s = cfg.refresh
        parts: dict[str, list[float]] = {name: [] for name in (
            "worker_started", "claim_due (empty)", "worker_finished", "add_entry",
            "next_due_at")}
        summary = {"status": "idle", "accounts_checked": 0}
        for _ in range(repeat):
            calls = {
                "worker_started": lambda: db.worker_started(
                    loop.NAME, "bench", s.interval_seconds, common.utcnow()),
                "claim_due (empty)": lambda: db.claim_due(
                    "bench", common.utcnow(), limit=s.concurrency,
                    lease_seconds=s.lease_seconds,
                    expiry_threshold_seconds=s.expiry_threshold_seconds,
                    max_age_seconds=s.max_age_seconds),
                "worker_finished": lambda: db.worker_finished(
                    loop.NAME, "bench", common.utcnow(), "idle", summary),
                "add_entry": lambda: db.add_entry(model.Entry(
                    action="worker_heartbeat", source="scheduled", created_at=common.utcnow(),
                    message=loop.QUIET_MESSAGE, details=summary)),
                "next_due_at": lambda: db.next_due_at(common.utcnow()),
            }
            for name, call in calls.items():
                began = time.perf_counter()
                result = await call()
                parts[name].append(time.perf_counter() - began)
                if name.startswith("claim_due") and result:
                    raise RuntimeError("the quiet claim found due accounts")
    return cycles, parts


async def measure(size: int, args: argparse.Namespace, keyring: crypto.Keyring,
                  key_line: str) -> dict[str, Any]:
    async with common.database(args.admin_url) as url:
        due_every = round(1 / args.due_fraction)
        seed_seconds = await common.seed_series(url, size, common.utcnow(), due_every=due_every)
        cfg = common.tokend_config(url, "http://127.0.0.1:9/unused", key_line)
        db = await store.connect(url, pool_max_size=cfg.database.pool_max_size)
        try:
            due = await db.count_due(common.utcnow(), expiry_threshold_seconds=900.0,
                                     max_age_seconds=3600.0)
            await db.ping()  # the pool's first connection is open before anything is timed
            claims, server, wal = await claim_times(db, url, args.repeat)
            leased = await lease_everything_due(db, url)
            cycles, parts = await quiet_cycles(cfg, db, keyring, args.quiet_repeat)
        finally:
            await db.close()
    return {"size": size, "due": due, "leased": leased, "seed_seconds": seed_seconds,
            "claims": claims, "claim_server": server, "claim_wal": wal, "cycles": cycles,
            "parts": parts}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def main_async(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    common.print_machine(await common.describe_machine(args.admin_url))
    print(f"due fraction {args.due_fraction}, claim limit {CLAIM_LIMIT}, {args.repeat} claims "
          f"and {args.quiet_repeat} quiet cycles per size, {args.runs} run(s) per size; "
          "best run's medians shown, spread = medians over runs", flush=True)
    key_line = crypto.generate_key_line("bench")
    keyring = crypto.Keyring.from_lines([key_line])
    results = []
    for size in sizes:
        runs = []
        for _ in range(args.runs):
            r = await measure(size, args, keyring, key_line)
            runs.append(r)
            print(f"  run: {size} accounts ({r['due']} due, seeded in {r['seed_seconds']:.1f} s):"
                  f" claim median {ms(common.median(r['claims']))} ms (server "
                  f"{ms(r['claim_server'])} ms), quiet cycle median "
                  f"{ms(common.median(r['cycles']))} ms, load {common.load_average()}",
                  flush=True)
        results.append(runs)

    rows, part_rows = [], []
    for runs in results:
        best_claim = min(runs, key=lambda r: common.median(r["claims"]))
        best_cycle = min(runs, key=lambda r: common.median(r["cycles"]))
        claim_medians = [common.median(r["claims"]) for r in runs]
        cycle_medians = [common.median(r["cycles"]) for r in runs]
        cycles_sorted = sorted(best_cycle["cycles"])
        rows.append([
            best_claim["size"], best_claim["due"], ms(common.median(best_claim["claims"])),
            common.spread([1000 * m for m in claim_medians]), ms(best_claim["claim_server"]),
            f"{common.median(best_claim['claim_wal']) / 1024:.0f}",
            ms(common.median(best_cycle["cycles"])),
            common.spread([1000 * m for m in cycle_medians]),
            ms(cycles_sorted[int(0.9 * (len(cycles_sorted) - 1))])])
        part_rows.append([best_cycle["size"]] + [
            ms(common.median(v)) for v in best_cycle["parts"].values()])
    print()
    common.print_table(
        ["accounts", "due", "claim ms (median)", "spread ms", "claim server ms",
         "claim WAL KiB", "quiet cycle ms (median)", "spread ms", "quiet cycle ms (p90)"], rows)
    print()
    common.print_table(["accounts", *(f"{name} ms" for name in results[0][0]["parts"])],
                       part_rows)
    def growth(key: Any) -> float:
        return min(key(r) for r in results[-1]) / min(key(r) for r in results[0])

    print(f"\nclaim growth {sizes[0]} -> {sizes[-1]} (target < 2): "
          f"x{growth(lambda r: common.median(r['claims'])):.2f} as the loop sees it, "
          f"x{growth(lambda r: r['claim_server']):.2f} for the statement in the server; "
          f"quiet cycle target < 10 ms at 1,000,000; load after: {common.load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.due_selection", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated account counts")
    parser.add_argument("--due-fraction", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=15,
                        help="claims timed per size and run")
    parser.add_argument("--quiet-repeat", type=int, default=30,
                        help="quiet cycles timed per size and run")
    parser.add_argument("--runs", type=int, default=2,
                        help="fresh database, seeding and measurement per size")
    parser.add_argument("--admin-url", default=common.ADMIN_URL)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if min(sizes) * args.due_fraction < CLAIM_LIMIT:
        parser.error(f"every size times --due-fraction must be at least {CLAIM_LIMIT} "
                     "(one full claim)")
    with open(os.devnull, "w") as log_stream, contextlib.suppress(KeyboardInterrupt):
        logs.setup(level="info", stream=log_stream, json=True)
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
