"""The SQL files: every named query is defined and used, and due selection uses its index."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

import tokend.store as st
from tokend.store import queries

DIALECTS = ("sqlite", "postgresql")
USE = re.compile(r'\.(?:one|all|_claim)\(\s*"([a-z0-9_]+)"')
HEADER = re.compile(r"^-- name: ([a-z0-9_]+)", re.MULTILINE)

ACCOUNTS = 1_000_000
DUE = 100


def defined_in(path: Path) -> set[str]:
    return set(HEADER.findall(path.read_text()))


def test_every_query_used_exists_and_every_query_is_used():
    used = {name for path in Path(st.__file__).parent.glob("*.py")
            for name in USE.findall(path.read_text())}
    for dialect in DIALECTS:
        defined = set(queries.load(dialect))
        assert used - defined == set(), f"used but not defined for {dialect}"
        assert defined - used == set(), f"defined for {dialect} but never used"


def test_a_statement_is_shared_or_given_by_every_dialect():
    shared = defined_in(queries.SQL_DIR / "queries.sql")
    own = {d: defined_in(queries.SQL_DIR / d / "queries.sql") for d in DIALECTS}
    assert own["sqlite"] == own["postgresql"], "an override without its counterpart"
    assert shared & own["sqlite"] == set(), "a shared statement overridden: say it once"


def test_no_statement_text_appears_twice():
    """No copy of a statement under another name or in both dialects' files; one-liners
    such as `SELECT 1` may coincide."""
    for dialect in DIALECTS:
        texts = [text for text in queries.load(dialect).values() if len(text) > 40]
        assert len(texts) == len(set(texts)), f"two {dialect} statements say the same thing"
    own = [set(queries.parse((queries.SQL_DIR / d / "queries.sql").read_text())[0].values())
           for d in DIALECTS]
    assert own[0] & own[1] == set(), "said alike by both dialects: it belongs in the shared file"


def test_backends_ship_the_same_migrations():
    names = [name for name, _ in queries.migrations("sqlite")]
    assert names == [name for name, _ in queries.migrations("postgresql")]
    assert names == sorted(names) and names[0] == "0001_initial"


def test_named_parameters_become_numbered_once():
    sql, names = queries.to_numbered("SELECT :a, :b::text, id::text, :a FROM t WHERE x = :b")
    assert sql == "SELECT $1, $2::text, id::text, $1 FROM t WHERE x = $2"
    assert names == ("a", "b")


def test_parse():
    text = ("-- preface\n\n-- name: one\n-- why\nSELECT 1\n\n-- fragment: f\nx = 1\n"
            "-- name: two\nSELECT 2;\n")
    assert queries.parse(text) == ({"one": "SELECT 1", "two": "SELECT 2;"}, {"f": "x = 1"})
    with pytest.raises(ValueError, match="twice"):
        queries.parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_sql_dir_is_found():
    assert (queries.SQL_DIR / "queries.sql").is_file()
    assert (queries.SQL_DIR / "sqlite" / "migrations" / "0001_initial.sql").is_file()


def claim_params(now: datetime) -> dict:
    """claim_due's parameters, as the store passes them."""
    return {"owner": "w1", "limit": 10, "lease_until": now + timedelta(seconds=120),
            **st.due_params(now, 900, 3600)}


@pytest.mark.timeout(120)
async def test_claim_due_uses_the_partial_index_on_postgres(pg_url):
    conn = await asyncpg.connect(pg_url)
    try:
        now = datetime.now(UTC)
        started = time.monotonic()
        # Built the way a bulk load is: the secondary indexes after the rows (the same
        # definitions, so the planner below sees exactly the migrated schema), not row by row.
        indexes = await conn.fetch("""
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.tablename = 'accounts' AND NOT EXISTS (
                SELECT 1 FROM pg_constraint c WHERE c.conindid = (i.indexname)::regclass)""")
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
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
        for index in indexes:
            await conn.execute(index["indexdef"])
        await conn.execute("ANALYZE accounts")
        loaded = time.monotonic() - started

        print(f"\n{ACCOUNTS} accounts, {DUE} due, loaded in {loaded:.1f} s")
        params = claim_params(now)
        for name in ("claim_due", "count_due", "next_due_at"):
            sql, names = queries.to_numbered(queries.load("postgresql")[name])
            args = [params[n] for n in names]
            plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *args))
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
    with contextlib.closing(sqlite3.connect(sqlite_url.removeprefix("sqlite://"))) as conn:
        now = datetime.now(UTC).timestamp()
        conn.execute("""
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
            INSERT INTO accounts (id, org, provider, name, refresh_token, next_attempt_at,
                                  created_at, updated_at)
            SELECT 'acct-' || n, 'org', 'ebay-production', 'seller-' || n, 'ENC:v1:k1:r',
                   CASE WHEN n <= 100 THEN ?1 - 60 ELSE ?1 + n END, ?1, ?1
            FROM g
            """, (now,))
        conn.execute("ANALYZE")
        params = {k: v.timestamp() if isinstance(v, datetime)
                  else orjson.dumps(v).decode() if isinstance(v, list) else v
                  for k, v in claim_params(datetime.fromtimestamp(now, UTC)).items()}
        rows = conn.execute(f"EXPLAIN QUERY PLAN {queries.load('sqlite')['claim_due']}", params)
        plan = "\n".join(row[3] for row in rows)
        print(f"\n{plan}")
        assert "USING INDEX accounts_due" in plan
        assert "SCAN accounts" not in plan


async def test_a_retried_save_is_looked_up_by_the_partial_index(pg_url, sqlite_url):
    """`saved_attempt` can use `refresh_log_save`, whose rows are only those with a save id:
    each planner must see that `save_id = x` implies `save_id IS NOT NULL`."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("SET enable_seqscan = off")  # so a usable index is used on no rows
        sql, _ = queries.to_numbered(queries.load("postgresql")["saved_attempt"])
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", "x"))
    finally:
        await conn.close()
    assert "refresh_log_save" in plan and "Seq Scan" not in plan, plan
    with contextlib.closing(sqlite3.connect(sqlite_url.removeprefix("sqlite://"))) as lite:
        rows = lite.execute(f"EXPLAIN QUERY PLAN {queries.load('sqlite')['saved_attempt']}",
                            {"save_id": "x"})
        plan = "\n".join(row[3] for row in rows)
    assert "USING INDEX refresh_log_save" in plan, plan
