"""`tokend refresh ID`: one manual refresh from the shell, through the daemon's own path."""

from __future__ import annotations

from typing import IO

from tokend import config, daemon, logclient, refresher


async def refresh_once(cfg: config.Config, account_id: str, *, source: str) -> refresher.Outcome:
    async with daemon.assemble(cfg, instance=f"cli:{daemon.instance_name()}") as parts:
        return await parts.refresher.refresh_now(account_id, source=source)


def print_outcome(outcome: refresher.Outcome, out: IO[str]) -> None:
    out.write(logclient.render(outcome.entry.to_dict(), color=out.isatty()) + "\n")
    if outcome.success:
        out.write("refreshed\n")
    else:
        out.write(f"failed: {outcome.error_code}: {outcome.error_description}\n")
