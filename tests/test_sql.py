"""The SQL files: every named query is defined and used, and due selection uses its index."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import tokend.store as st
from tokend.store import queries

BACKENDS = {"sqlite": "sqlite.py", "postgresql": "postgres.py"}
# Statements with no counterpart on the other backend.
ONLY = {"postgresql": {"lock_migrations", "unlock_migrations"}, "sqlite": set()}
USE = re.compile(r'(?:_Q\[|_one\(|_all\()\s*"([a-z0-9_]+)"')

ACCOUNTS = 1_000_000
DUE = 100


def used_names(backend: str) -> set[str]:
    source = (Path(st.__file__).parent / BACKENDS[backend]).read_text()
    return set(USE.findall(source))


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_query_used_exists_and_every_query_is_used(backend):
    defined = set(queries.load(backend))
    used = used_names(backend)
    assert used - defined == set(), "used but not in queries.sql"
    assert defined - used == set(), "in queries.sql but never used"


def test_backends_define_the_same_queries():
    sqlite, postgresql = set(queries.load("sqlite")), set(queries.load("postgresql"))
    assert sqlite - ONLY["sqlite"] == postgresql - ONLY["postgresql"]


def test_backends_ship_the_same_migrations():
    names = [name for name, _ in queries.migrations("sqlite")]
    assert names == [name for name, _ in queries.migrations("postgresql")]
    assert names == sorted(names) and names[0] == "0001_initial"


def test_parse():
    text = "-- preface\n\n-- name: one\n-- why\nSELECT 1\n\n-- name: two\nSELECT 2;\n"
    assert queries.parse(text) == {"one": "-- why\nSELECT 1", "two": "SELECT 2;"}
    with pytest.raises(ValueError, match="twice"):
        queries.parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_sql_dir_is_found():
    assert (queries.SQL_DIR / "postgresql" / "queries.sql").is_file()
    assert (queries.SQL_DIR / "sqlite" / "migrations" / "0001_initial.sql").is_file()


def claim_args(now: datetime) -> tuple:
    """claim_due's parameters, in the order both backends pass them."""
    return ("w1", now, 10, now + timedelta(seconds=120), now + timedelta(seconds=900),
            now - timedelta(seconds=3600))


@pytest.mark.timeout(120)
async def test_claim_due_uses_the_partial_index_on_postgres(pg_url):
    conn = await asyncpg.connect(pg_url)
    try:
        now = datetime.now(UTC)
        started = time.monotonic()
        # Most accounts were refreshed recently and are next due within the coming day;
        # the first DUE are due now.
        await conn.execute("""
            INSERT INTO accounts (id, org, provider, name, refresh_token, access_token,
                                  access_expires_at, last_refresh_at, next_attempt_at,
                                  created_at, updated_at)
            SELECT 'acct-' || g, 'org-' || g % 1000, 'ebay-production', 'seller-' || g,
                   'ENC:v1:k1:r', 'ENC:v1:k1:a', now + interval '1 minute',
                   now - interval '2 hours',
                   CASE WHEN g <= $3 THEN now - interval '1 minute'
                        ELSE now + (g % 86400) * interval '1 second' + interval '1 minute' END,
                   now, now
            FROM generate_series(1, $2::int) AS g, (SELECT $1::timestamptz AS now) AS t
            """, now, ACCOUNTS, DUE)
        await conn.execute("ANALYZE accounts")
        loaded = time.monotonic() - started

        print(f"\n{ACCOUNTS} accounts, {DUE} due, loaded in {loaded:.1f} s")
        args = claim_args(now)
        for name, params in (("claim_due", args), ("count_due", (now, *args[4:])),
                             ("next_due_at", (now,))):
            sql = queries.load("postgresql")[name]
            plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *params))
            print(f"-- {name}\n{plan}")
            assert re.search(r"Index (Only )?Scan using accounts_due|Bitmap Index Scan on "
                             r"accounts_due", plan), name
            assert "Seq Scan on accounts" not in plan, name

        db = await st.connect(pg_url)
        try:
            claimed, total = [], time.monotonic()
            while batch := await db.claim_due("w1", now, limit=16, lease_seconds=120,
                                              expiry_threshold_seconds=900,
                                              max_age_seconds=3600):
                claimed += batch
            total = time.monotonic() - total
        finally:
            await db.close()
        print(f"claimed {len(claimed)} in {total * 1000:.0f} ms")
        assert len(claimed) == DUE
    finally:
        await conn.close()


async def test_claim_due_uses_the_partial_index_on_sqlite(sqlite_url):
    db = await st.connect(sqlite_url)
    try:
        conn = db._conn
        now = datetime.now(UTC).timestamp()
        await conn.execute("""
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
            INSERT INTO accounts (id, org, provider, name, refresh_token, next_attempt_at,
                                  created_at, updated_at)
            SELECT 'acct-' || n, 'org', 'ebay-production', 'seller-' || n, 'ENC:v1:k1:r',
                   CASE WHEN n <= 100 THEN ?1 - 60 ELSE ?1 + n END, ?1, ?1
            FROM g
            """, (now,))
        await conn.execute("ANALYZE")
        sql = queries.load("sqlite")["claim_due"]
        args = tuple(v.timestamp() if isinstance(v, datetime) else v
                     for v in claim_args(datetime.fromtimestamp(now, UTC)))
        rows = await conn.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}", args)
        plan = "\n".join(row[3] for row in rows)
        print(f"\n{plan}")
        assert "USING INDEX accounts_due" in plan
        assert "SCAN accounts" not in plan
    finally:
        await db.close()
