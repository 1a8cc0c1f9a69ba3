"""Migrations: idempotent, safe when several processes run them at once, and drift is refused."""

from __future__ import annotations

import asyncio

import pytest
from kit import execute_sql

import tokend.store as st
from tokend import clock, model, vocabulary
from tokend.store import queries

ALL = [name for name, _ in queries.migrations("sqlite")]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A database of each backend without any tokend schema."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'fresh' / 'tokend.db'}"
    return request.getfixturevalue("pg_empty_url")


async def test_migrate_applies_everything_once(empty_url):
    db = await st.connect(empty_url)
    try:
        assert await db.migrate() == ALL
        await db.check_schema()
        assert await db.migrate() == []
        await db.check_schema()
    finally:
        await db.close()


async def test_migrated_store_is_current(store):
    assert await store.migrate() == []
    await store.check_schema()


async def test_concurrent_migrations_both_succeed(empty_url):
    """Two `tokend migrate` processes at once: one applies, the other finds nothing to do."""
    one, two = await st.connect(empty_url), await st.connect(empty_url)
    try:
        results = await asyncio.gather(one.migrate(), two.migrate())
        assert sorted(results) == [[], ALL]
        await one.check_schema()
        await two.check_schema()
    finally:
        await one.close()
        await two.close()


async def test_check_schema_on_an_empty_database_names_tokend_migrate(empty_url):
    db = await st.connect(empty_url)
    try:
        with pytest.raises(st.SchemaError, match=r"no tokend schema.*`tokend migrate`"):
            await db.check_schema()
    finally:
        await db.close()


async def test_upgrade_when_behind(store, monkeypatch):
    """A newer tokend with one more migration: refused until `tokend migrate` applies it."""
    shipped = queries.migrations
    newer = "CREATE TABLE extra (x integer);\nCREATE INDEX extra_x ON extra (x);\n"
    monkeypatch.setattr(queries, "migrations",
                        lambda backend: (*shipped(backend), ("9000_next", newer)))
    with pytest.raises(st.SchemaError, match=r"behind.*9000_next.*`tokend migrate`"):
        await store.check_schema()
    assert await store.migrate() == ["9000_next"]
    await store.check_schema()


async def test_check_schema_and_migrate_when_ahead(store, db_url):
    await execute_sql(db_url, "INSERT INTO schema_migrations (name, applied_at) "
                             "VALUES ('9999_from_the_future', 0)"
                      if store.backend == "sqlite" else
                      "INSERT INTO schema_migrations (name, applied_at) "
                      "VALUES ('9999_from_the_future', now())")
    with pytest.raises(st.SchemaError, match=r"ahead.*9999_from_the_future.*`tokend migrate`"):
        await store.check_schema()
    with pytest.raises(st.SchemaError, match="ahead"):
        await store.migrate()


async def test_links_made_before_0009_learn_who_signed_in_from_their_identity_entry(
        empty_url, monkeypatch):
    """So an account deletion after the upgrade finds what was logged before it."""
    shipped = queries.migrations
    monkeypatch.setattr(queries, "migrations", lambda backend: tuple(
        m for m in shipped(backend) if m[0] < "0009"))
    db = await st.connect(empty_url)
    try:
        await db.migrate()
        now = clock.now()
        for n in (1, 2):
            await db.add_connect_link(model.NewConnectLink(
                id=f"link_{n}", token_hash=f"h{n}", provider="ebay", org="acme",
                account_id=None, scopes=(), expires_at=now), now)
        await db.add_entry(model.Entry(
            action=vocabulary.CONNECT_IDENTITY, source=vocabulary.CONNECT, created_at=now,
            details={"link_id": "link_1"}, message="signed in as jane",
            response={"status": 200, "body": {"userId": "u-jane", "username": "jane"}}))
        monkeypatch.setattr(queries, "migrations", shipped)
        assert await db.migrate() == [name for name in ALL if name >= "0009"]
        one = await db.find_connect_link(token_hash="h1")
        two = await db.find_connect_link(token_hash="h2")
        assert (one.provider_user_id, two.provider_user_id) == ("u-jane", None)
    finally:
        await db.close()
