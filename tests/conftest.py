"""Fixtures the whole suite shares: encryption keys, and migrated SQLite and PostgreSQL stores.

PostgreSQL: one template database is migrated per session; each test gets its own copy
(`CREATE DATABASE ... TEMPLATE`), dropped `WITH (FORCE)` afterwards. An unreachable
server fails those tests with a clear message; `TOKEND_TEST_SKIP_POSTGRES=1` skips them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import kit
import pgbouncer
import pytest
import pytest_asyncio

from tokend import crypto, daemon, store
from tokend.testing import simulator

PG_BASE_URL = os.environ.get("TOKEND_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SKIP_POSTGRES = os.environ.get("TOKEND_TEST_SKIP_POSTGRES") == "1"


def pg_database_url(name: str) -> str:
    """The base URL pointed at another database on the same server."""
    return urlunsplit(urlsplit(PG_BASE_URL)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def pg_admin() -> AsyncIterator[asyncpg.Connection]:
    """A connection to the base database, for CREATE and DROP DATABASE."""
    if SKIP_POSTGRES:
        pytest.skip("PostgreSQL tests skipped: TOKEND_TEST_SKIP_POSTGRES=1")
    try:
        conn = await asyncpg.connect(PG_BASE_URL, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = None
    if error is not None:
        where = urlsplit(PG_BASE_URL)
        pytest.fail(
            f"PostgreSQL at {where.hostname}:{where.port or 5432}{where.path} is unreachable "
            f"({error}). Start it (./scripts/test does), point TOKEND_TEST_POSTGRES at one, "
            f"or set TOKEND_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests.", pytrace=False)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_database(prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """A fresh database (a copy of `template` when given); yields its name, then drops it."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    clause = f' TEMPLATE "{template}"' if template else ""
    async with pg_admin() as admin:
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    try:
        yield name
    finally:
        async with pg_admin() as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def key_lines() -> list[str]:
    """Two fresh key lines: `k1` is the keyring's primary, `k2` the one rotated to."""
    return [crypto.generate_key_line("k1"), crypto.generate_key_line("k2")]


@pytest.fixture
def keyring(key_lines: list[str]) -> crypto.Keyring:
    return crypto.Keyring.from_lines(key_lines[:1])


@pytest.fixture
def rotated_keyring(key_lines: list[str]) -> crypto.Keyring:
    """After rotation: `k2` encrypts, `k1` still opens what was sealed before."""
    return crypto.Keyring.from_lines([key_lines[1], key_lines[0]])


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_template() -> AsyncIterator[str]:
    """A database migrated once per session, the template of every test's database."""
    async with pg_database("tokend_tpl") as name:
        db = await store.connect(pg_database_url(name))
        try:
            await db.migrate()
        finally:
            await db.close()
        yield name


@pytest.fixture
async def pg_url(pg_template: str) -> AsyncIterator[str]:
    """A migrated PostgreSQL database of this test's own."""
    async with pg_database("tokend_t", template=pg_template) as name:
        yield pg_database_url(name)


@pytest.fixture
async def pg_empty_url() -> AsyncIterator[str]:
    """A PostgreSQL database without any tokend schema."""
    async with pg_database("tokend_e") as name:
        yield pg_database_url(name)


@pytest.fixture
async def sqlite_url(tmp_path) -> str:
    """A migrated SQLite file of this test's own."""
    url = f"sqlite://{tmp_path / 'tokend.db'}"
    db = await store.connect(url)
    try:
        await db.migrate()
    finally:
        await db.close()
    return url


@pytest.fixture(scope="session")
def pgbouncer_port() -> Iterator[int]:
    """Debian's PgBouncer (transaction pooling) in front of the test server, per session."""
    if SKIP_POSTGRES:
        pytest.skip("PostgreSQL tests skipped: TOKEND_TEST_SKIP_POSTGRES=1")
    with pgbouncer.running(PG_BASE_URL) as port:
        kit.PGBOUNCER_PORTS.add(port)
        try:
            yield port
        finally:
            kit.PGBOUNCER_PORTS.discard(port)


@pytest.fixture
def pgbouncer_url(pg_url: str, pgbouncer_port: int) -> str:
    """This test's migrated PostgreSQL database, reached through PgBouncer; open it with
    `kit.store_options(url)`."""
    return pgbouncer.through(pg_url, pgbouncer_port)


BACKEND_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "pg_url", "pgbouncer": "pgbouncer_url"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend in turn (test_store.py adds `pgbouncer`)."""
    return request.getfixturevalue(BACKEND_FIXTURES[request.param])


@pytest.fixture(name="store")
async def open_store(db_url: str) -> AsyncIterator[store.Store]:
    """An open store on `db_url`, closed after the test."""
    db = await store.connect(db_url, **kit.store_options(db_url))
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def harness(store: store.Store, keyring: crypto.Keyring) -> AsyncIterator[kit.Harness]:
    """A refresher on this test's store, talking to a fresh simulator over loopback."""
    async with simulator.Simulator() as sim:
        cfg = kit.engine_config(sim.token_url)
        async with daemon.assemble(cfg, db=store, keyring=keyring, instance="test-owner") as p:
            yield kit.Harness(sim=sim, db=store, keyring=keyring, worker=p.refresher, hub=p.hub,
                              stats=p.stats, cfg=cfg)
