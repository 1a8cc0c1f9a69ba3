"""/livez and /readyz: their answers in-process, then against `tokend run` as a real process
with its database cut, its loop wedged, and a real SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import webstack
from kit import seed, wait_until
from proc import Daemon, daemon_config

from tokend import probes
from tokend.testing import simulator
from tokend.testing.pgproxy import PgProxy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


async def probe(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status, await response.text()


class CountingPing:
    """The real store, with its pings counted and held until `answer` is set."""

    def __init__(self, db) -> None:
        self._db = db
        self.pings = 0
        self.answer = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._db, name)

    async def ping(self, timeout_seconds: float = 1.0) -> None:
        self.pings += 1
        await self.answer.wait()
        await self._db.ping()


class SilentPing(CountingPing):
    async def ping(self, timeout_seconds: float = 1.0) -> None:
        await asyncio.Event().wait()  # a database that takes the query and never answers


# -- in-process: the format and each check --------------------------------------------------


async def test_probes_answer_ok_and_name_their_checks_when_verbose(stack) -> None:
    assert await probe(stack.http, stack.url + "/livez") == (200, "ok")
    assert await probe(stack.http, stack.url + "/readyz") == (200, "ok")
    assert await probe(stack.http, stack.url + "/livez?verbose") == (
        200, "[+]loop ok\nlivez check passed\n")
    assert await probe(stack.http, stack.url + "/readyz?verbose") == (
        200, "[+]listener ok\n[+]database ok\n[+]shutdown ok\nreadyz check passed\n")
    async with stack.http.get(stack.url + "/readyz") as response:
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-store"


async def test_readyz_fails_until_the_listener_is_declared_up(stack) -> None:
    stack.readiness.listening = False
    status, text = await probe(stack.http, stack.url + "/readyz")
    assert status == 503
    assert text == ("[-]listener failed: not started\n[+]database ok\n[+]shutdown ok\n"
                    "readyz check failed\n")


async def test_draining_fails_readyz_and_not_livez(stack) -> None:
    stack.readiness.drain()
    status, text = await probe(stack.http, stack.url + "/readyz")
    assert status == 503
    assert "[-]shutdown failed: stopping\n" in text and text.endswith("readyz check failed\n")
    assert await probe(stack.http, stack.url + "/livez") == (200, "ok")


async def test_a_closed_database_fails_readyz_and_not_livez(stack) -> None:
    await stack.db.close()
    status, text = await probe(stack.http, stack.url + "/readyz")
    assert status == 503
    assert "[-]database failed: unreachable (" in text
    assert await probe(stack.http, stack.url + "/livez") == (200, "ok")


async def test_a_wedged_loop_fails_livez_and_not_readyz(stack) -> None:
    stack.loop.started_at -= timedelta(seconds=4 * stack.loop.interval_seconds)
    status, text = await probe(stack.http, stack.url + "/livez")
    assert status == 503
    assert text.startswith("[-]loop failed: no cycle ended in ")
    assert text.endswith(f"(limit 3 x {stack.loop.interval_seconds:g} s)\nlivez check failed\n")
    assert await probe(stack.http, stack.url + "/readyz") == (200, "ok")
    await stack.loop.cycle()  # a finished cycle is a turning loop again
    assert await probe(stack.http, stack.url + "/livez") == (200, "ok")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_database_that_never_answers_is_not_ready(store) -> None:
    readiness = probes.Readiness(SilentPing(store), ping_timeout_seconds=0.2)
    readiness.serving()
    checks = await readiness.checks()
    assert [c for c in checks if not c.ok] == [
        probes.Check("database", False, "no answer within 0.2 s")]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_concurrent_probes_share_one_ping_and_its_answer_is_cached(store) -> None:
    db = CountingPing(store)
    readiness = probes.Readiness(db, ping_cache_seconds=3600)
    readiness.serving()
    waiting = [asyncio.create_task(readiness.checks()) for _ in range(20)]
    while db.pings == 0:
        await asyncio.sleep(0)
    waiting[0].cancel()  # a probe that hangs up does not cancel the others' ping
    db.answer.set()
    answers = await asyncio.gather(*waiting[1:])
    assert all(all(c.ok for c in checks) for checks in answers)
    assert all([(await readiness.checks())[1].ok for _ in range(20)])
    assert db.pings == 1
    fresh = probes.Readiness(db, ping_cache_seconds=0)
    await fresh.checks()
    await fresh.checks()
    assert db.pings == 3


# -- tokend run: the database cut, the loop wedged, a real SIGTERM ---------------------------


async def test_database_cut_fails_readyz_while_livez_stays_200(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    proxy = PgProxy(pg_url)
    await proxy.start()
    # Interval 1 s: livez would fail 3 s after the last cycle that ended, so staying 200
    # through a longer outage means failed cycles count as turns.
    interval = 1.0
    clock = asyncio.get_running_loop().time
    async with simulator.Simulator() as sim, aiohttp.ClientSession() as http:
        config_path = daemon_config(tmp_path, db_url=proxy.url, key_line=key_lines[0],
                                    token_url=sim.token_url, interval_seconds=interval)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            assert await probe(http, url + "/readyz") == (200, "ok")
            during_readyz, during_livez = [], []
            async with proxy.outage():
                down_at = clock()
                for _ in range(10):
                    during_readyz.append(await probe(http, url + "/readyz?verbose"))
                    during_livez.append(await probe(http, url + "/livez?verbose"))
                    await asyncio.sleep(0.5)
                down_seconds = clock() - down_at
                cycles_failed = sum(e.get("event") == "cycle_failed" for e in daemon.events())
            assert down_seconds > 3 * interval
            assert during_readyz[-1][0] == 503, during_readyz
            assert "[-]database failed: unreachable" in during_readyz[-1][1]
            assert "[+]listener ok\n" in during_readyz[-1][1]
            assert during_livez == [(200, "[+]loop ok\nlivez check passed\n")] * 10
            assert cycles_failed >= 2, "the outage did not reach the loop"
            await wait_until(lambda: _status_is(http, url + "/readyz", 200), 20)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()
            await proxy.close()


async def test_a_wedged_loop_fails_livez(tmp_path: Path, sqlite_url: str, keyring,
                                        key_lines) -> None:
    await seed(sqlite_url, keyring, 1)
    async with simulator.Simulator() as sim, aiohttp.ClientSession() as http:
        sim.configure(fail_mode="hang")  # the first refresh never returns: the cycle never ends
        config_path = daemon_config(tmp_path, db_url=sqlite_url, key_line=key_lines[0],
                                    token_url=sim.token_url, interval_seconds=0.5,
                                    request_timeout_seconds=60, shutdown_grace_seconds=1)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            await wait_until(lambda: _status_is(http, url + "/livez", 503), 20)
            status, text = await probe(http, url + "/livez")
            assert status == 503
            assert text.startswith("[-]loop failed: no cycle ended in ")
            assert text.endswith("(limit 3 x 0.5 s)\nlivez check failed\n")
            # Restarting would help the loop, not the traffic: readiness does not care.
            assert await probe(http, url + "/readyz") == (200, "ok")
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()


async def test_sigterm_fails_readyz_before_the_listener_closes(
        tmp_path: Path, sqlite_url: str, key_lines) -> None:
    config_path = daemon_config(tmp_path, db_url=sqlite_url, key_line=key_lines[0],
                                token_url="http://127.0.0.1:9/token")
    text = config_path.read_text().replace("[server]\n", "[server]\ndrain_seconds = 5\n")
    config_path.write_text(text)
    daemon = Daemon(config_path, tmp_path / "daemon.log")
    seen: list[tuple[int, str] | str] = []
    try:
        url = await daemon.url()
        async with aiohttp.ClientSession() as http:
            assert await probe(http, url + "/readyz") == (200, "ok")
            daemon.signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                while True:
                    try:
                        seen.append(await probe(http, url + "/readyz?verbose"))
                        livez = await probe(http, url + "/livez")
                    except aiohttp.ClientConnectionError:
                        seen.append("closed")
                        break
                    if seen[-1][0] == 503:
                        assert livez == (200, "ok")  # draining is no reason to restart
                    await asyncio.sleep(0.05)
        assert await daemon.wait() == 0
    finally:
        daemon.kill()
    answers = [s for s in seen if s != "closed"]
    statuses = [s[0] for s in answers]
    # Maybe a 200 or two before the signal lands, then 503 until the listener is gone.
    assert 503 in statuses, seen
    first = statuses.index(503)
    assert set(statuses[:first]) <= {200} and set(statuses[first:]) == {503}, seen
    assert answers[-1][1] == ("[+]listener ok\n[+]database ok\n[-]shutdown failed: stopping\n"
                              "readyz check failed\n")
    assert seen[-1] == "closed"
    events = [e.get("event") for e in daemon.events()]
    assert events.index("daemon_stopping") < events.index("daemon_stopped")


async def _status_is(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    return (await probe(http, url))[0] == status
