"""The console's accounts page on PostgreSQL at 100,000 accounts (target: under 20 ms a page).
Run: `python -m bench.console_query [--size 100000] [--repeat 30] [--updates 2000]`.

Each figure is one `Store.page_accounts` call, the statement behind `GET /api/accounts`
(limit 101: the 100 rows of a page and one more that says whether there is a next), through
the store's pool as the server runs it: the first page, a deep page reached by its keyset
cursor (the 50,000th row), the same for other sort keys, and filtered searches.

Then what the console's indexes cost the loop: a refresh's save (the columns
`finish_successes` writes for a save, one row, one commit) with and without the
0006_console indexes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta
from typing import Any

import asyncpg

from bench import common
from tokend import model, store

PAGE = 101

# Some variety over the seed: failing, reauth and disabled accounts, refresh-token
# expiries on half, a provider user name on every one.
_VARIETY = """
UPDATE accounts SET
    provider_user_name = 'user_' || substr(id, 6),
    refresh_expires_at = CASE WHEN substr(id, 6)::int % 2 = 0
                              THEN created_at + make_interval(days => substr(id, 6)::int % 500)
                         END,
    consecutive_failures = CASE WHEN substr(id, 6)::int % 50 = 0 THEN 3 ELSE 0 END,
    last_error = CASE WHEN substr(id, 6)::int % 50 = 0 THEN 'server_error' END,
    state = CASE WHEN substr(id, 6)::int % 200 = 1 THEN 'reauth_required'
                 WHEN substr(id, 6)::int % 300 = 2 THEN 'disabled' ELSE 'active' END
"""


async def row_at(url: str, position: int, key: str, *, descending: bool = False,
                 ) -> tuple[Any, str]:
    """The (sort value, id) of the row at `position`: what a cursor after it carries."""
    direction = "DESC" if descending else ""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow(
            f"SELECT {key} AS key, id FROM accounts "
            f"ORDER BY {key} {direction}, id {direction} OFFSET $1 LIMIT 1", position - 1)
    finally:
        await conn.close()
    return row["key"], row["id"]


async def measure(db: store.Store, page: model.AccountPage, repeat: int) -> tuple[list[float], int]:
    await db.page_accounts(page)  # the statement prepared, the pages cached
    times, rows = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        rows = len(await db.page_accounts(page))
        times.append((time.perf_counter() - began) * 1000)
    return times, rows


async def run(args: argparse.Namespace) -> None:
    machine = await common.describe_machine(args.admin_url)
    common.print_machine(machine)
    async with common.database(args.admin_url) as url:
        seeded = await common.seed_series(url, args.size, common.utcnow(), due_every=100)
        await common.execute(url, _VARIETY, "VACUUM ANALYZE accounts")
        print(f"\n{args.size} accounts seeded in {seeded:.1f} s\n")
        middle = args.size // 2
        never = "'9999-01-01 00:00:00+00'::timestamptz"
        name_key = await row_at(url, middle, "name")
        expiry_key = await row_at(url, middle, f"coalesce(access_expires_at, {never})",
                                  descending=True)
        refresh_key = await row_at(url, middle, f"coalesce(refresh_expires_at, {never})")
        cases = [
            ("first page, by name", model.AccountPage(limit=PAGE)),
            (f"page at row {middle:,} (cursor), by name", model.AccountPage(
                limit=PAGE, after_key=name_key[0], after_id=name_key[1])),
            (f"page at row {middle:,}, access expiry desc", model.AccountPage(
                sort="access_expires_at", descending=True, limit=PAGE,
                after_key=expiry_key[0], after_id=expiry_key[1])),
            (f"page at row {middle:,}, refresh expiry", model.AccountPage(
                sort="refresh_expires_at", limit=PAGE,
                after_key=refresh_key[0], after_id=refresh_key[1])),
            ("first page, failures desc", model.AccountPage(
                sort="consecutive_failures", descending=True, limit=PAGE)),
            ("search q=seller-0077 (1,000 hits)", model.AccountPage(q="seller-0077", limit=PAGE)),
            ("search q=USER_0099999 (1 hit)", model.AccountPage(q="USER_0099999", limit=PAGE)),
            ("state=failing, by name", model.AccountPage(
                state=model.ACTIVE, failing=True, limit=PAGE)),
            ("state=reauth_required, by next attempt", model.AccountPage(
                state=model.REAUTH_REQUIRED, sort="next_attempt_at", limit=PAGE)),
            ("org token (1% of accounts), by name", model.AccountPage(org="org-042", limit=PAGE)),
            ("org + state=failing + q=seller", model.AccountPage(
                org="org-050", state=model.ACTIVE, failing=True, q="seller", limit=PAGE)),
        ]
        rows = []
        async with store.open(url) as db:
            for label, page in cases:
                times, count = await measure(db, page, args.repeat)
                rows.append((label, count, f"{common.median(times):.2f}",
                             f"{max(times):.2f}", "yes" if common.median(times) < 20 else "no"))
        common.print_table(["page", "rows", "median ms", "max ms", "< 20 ms"], rows)
        with_indexes = await save_times(url, args.size, args.updates)
        await common.execute(url, *(f"DROP INDEX {name}" for name in CONSOLE_INDEXES))
        without = await save_times(url, args.size, args.updates)
        print()
        common.print_table(["one refresh's save", "median ms", "mean ms"], [
            (label, f"{common.median(t):.3f}", f"{sum(t) / len(t):.3f}")
            for label, t in (("with the console indexes", with_indexes),
                             ("without them", without))])


CONSOLE_INDEXES = (
    "accounts_console_name", "accounts_console_next_attempt", "accounts_console_failures",
    "accounts_console_access_expiry", "accounts_console_refresh_expiry",
    "accounts_console_last_refresh", "accounts_console_org", "accounts_console_state",
    "accounts_console_search_id", "accounts_console_search_name",
    "accounts_console_search_user",
)
_SAVE = """
UPDATE accounts SET access_expires_at = $2, last_refresh_at = $3, next_attempt_at = $4,
       consecutive_failures = 0, last_error = NULL, lease_owner = NULL,
       lease_expires_at = NULL, version = version + 1, updated_at = $3
WHERE id = $1
"""


async def save_times(url: str, size: int, updates: int) -> list[float]:
    """One saved refresh per account, spread over the table, each its own commit."""
    conn = await asyncpg.connect(url, timeout=10)
    times = []
    try:
        step = max(1, size // updates)
        for n in range(updates):
            now = common.utcnow()
            began = time.perf_counter()
            await conn.execute(_SAVE, common.account_id(1 + (n * step) % size),
                               now + timedelta(hours=2), now, now + timedelta(hours=1))
            times.append((time.perf_counter() - began) * 1000)
        await conn.execute("VACUUM accounts")
    finally:
        await conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--admin-url", default=common.ADMIN_URL)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
