"""What `PRAGMA synchronous = FULL` costs the embedded SQLite store: the refresh saves
(`Store.finish`, one transaction each: account, refresh-log row, HTTP-log row) per second
and their latency, with FULL (tokend's setting) against NORMAL, on a file on this disk;
and FULL with group commit (`tokend.groupcommit`, what the daemon's refresher uses).

    .venv/bin/python -m bench.sqlite_sync [--saves 2000] [--concurrency 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench import common
from tokend import crypto, groupcommit, model, store


async def one_run(path: Path, mode: str, saves: int, concurrency: int, *,
                  grouped: bool) -> tuple[float, float]:
    """(saves per second, median ms per save) with `mode`, `concurrency` savers at once."""
    keyring = crypto.Keyring.from_lines([crypto.generate_key_line("k1")])
    db = await store.connect(f"sqlite://{path}")
    await db.migrate()
    await db._db._conn.execute(f"PRAGMA synchronous = {mode}")  # the knob under test
    now = common.utcnow()
    for i in range(saves):
        account_id = common.account_id(i)
        await db.add_account(model.NewAccount(
            id=account_id, org="acme", provider=common.PROVIDER, name=account_id, scopes=(),
            refresh_token=keyring.encrypt("r", account_id=account_id, column="refresh_token"),
            refresh_expires_at=None), now)
    claimed = await db.claim_due("bench", now, limit=saves, lease_seconds=600,
                                 expiry_threshold_seconds=900, max_age_seconds=3600)
    queue = list(claimed)
    latencies: list[float] = []
    finish = groupcommit.GroupCommit(db).finish if grouped else db.finish

    async def saver() -> None:
        while queue:
            account = queue.pop()
            outcome = model.Success(
                access_token=keyring.encrypt("a", account_id=account.id, column="access_token"),
                access_expires_at=now + timedelta(hours=2),
                refresh_token=keyring.encrypt("r2", account_id=account.id,
                                              column="refresh_token"),
                refresh_expires_at=now + timedelta(days=500), refreshed_at=now,
                next_attempt_at=now + timedelta(hours=1))
            attempt = model.Attempt(account.id, "scheduled", now, now, True, None, None)
            entry = model.Entry(action="token_refreshed", source="scheduled", created_at=now,
                                account_id=account.id, org_id="acme",
                                provider=common.PROVIDER)
            started = time.perf_counter()
            await finish(account, "bench", outcome, attempt, entry, now)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(saver() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    await db.close()
    return saves / wall, common.median(latencies) * 1000


async def main(args: argparse.Namespace) -> None:
    print(f"load {common.load_average()}")
    rows = []
    for mode, grouped in (("NORMAL", False), ("FULL", False), ("FULL", True)):
        rates, medians = [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="tokend-sqlite-sync-",
                                             dir=args.dir) as tmp:
                rate, ms = await one_run(Path(tmp) / "tokend.db", mode, args.saves,
                                         args.concurrency, grouped=grouped)
            rates.append(rate)
            medians.append(ms)
        label = f"{mode}, group commit" if grouped else f"{mode}, a transaction per save"
        rows.append([label, f"{max(rates):.0f}", common.spread(rates, "{:.0f}"),
                     f"{min(medians):.2f}", common.spread(medians)])
    common.print_table(["synchronous", "saves/s (best)", "spread", "ms per save (median)",
                        "spread ms"], rows)
    print(f"load {common.load_average()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the database file goes")
    asyncio.run(main(parser.parse_args()))
