"""`tokend refresh ID`: one manual refresh from the shell, through the daemon's own path."""

from __future__ import annotations

from typing import IO

from tokend import config, daemon, logclient, metrics, refresher, store, stream


async def refresh_once(cfg: config.Config, account_id: str, *, source: str) -> refresher.Outcome:
    keyring = cfg.crypto.keyring()
    db = await store.connect(cfg.database.url, pool_max_size=1)
    try:
        await db.check_schema()
        stats = metrics.Metrics()
        async with daemon.http_session(cfg.refresh) as session:
            worker = daemon.make_refresher(
                cfg, keyring, db=db, session=session, stats=stats,
                hub=stream.Hub(queue_size=1, stats=stats), owner=f"cli:{daemon.instance_name()}")
            return await worker.refresh_now(account_id, source=source)
    finally:
        await db.close()


def print_outcome(outcome: refresher.Outcome, out: IO[str]) -> None:
    out.write(logclient.render(outcome.entry.to_dict(), color=out.isatty()) + "\n")
    if outcome.success:
        out.write("refreshed\n")
    else:
        out.write(f"failed: {outcome.error_code}: {outcome.error_description}\n")
