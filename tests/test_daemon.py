"""`tokend run` as a real process: signals, crashes, replicas, systemd notify, canaries."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from kit import seed, seed_postgres, wait_until
from proc import ADMIN_TOKEN, Daemon, acli, cli, daemon_config, env

from tokend import crypto, model, store
from tokend.testing import simulator

pytestmark = pytest.mark.timeout(120)


async def refreshed(db_url: str) -> list[model.Account]:
    db = await store.connect(db_url)
    try:
        return [a for a in await db.list_accounts() if a.access_token is not None]
    finally:
        await db.close()


async def test_run_refuses_an_unmigrated_database(tmp_path: Path, key_lines) -> None:
    config_path = daemon_config(tmp_path, db_url=f"sqlite://{tmp_path / 'fresh.db'}",
                                key_line=key_lines[0], token_url="http://127.0.0.1:9/x")
    result = cli(config_path, "run")
    assert result.returncode == 1
    assert "tokend migrate" in result.stderr


async def test_sigterm_lets_in_flight_refreshes_persist(tmp_path: Path, sqlite_url: str,
                                                       keyring, key_lines) -> None:
    await seed(sqlite_url, keyring, 30)
    async with simulator.Simulator(latency_seconds=1.0, rotate=True) as sim:
        config_path = daemon_config(tmp_path, db_url=sqlite_url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=10)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            await daemon.url()
            await wait_until(lambda: sim.stats()["in_flight"] >= 10, 15, 0.01)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()
        answered = sim.stats()["successes"]
    saved = await refreshed(sqlite_url)
    assert answered >= 10
    assert len(saved) == answered, "a refresh the provider answered was not persisted"
    assert all(a.lease_owner is None for a in saved)
    assert "daemon_stopped" in [e.get("event") for e in daemon.events()]


async def test_kill_9_mid_cycle_another_process_finishes_after_the_lease(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    await seed(pg_url, keyring, 20)
    async with simulator.Simulator(latency_seconds=3.0) as sim:
        config_path = daemon_config(tmp_path, db_url=pg_url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=5, lease_seconds=2)
        first = Daemon(config_path, tmp_path / "first.log")
        try:
            await first.url()
            await wait_until(lambda: sim.stats()["in_flight"] >= 5, 15, 0.01)
        finally:
            first.kill()  # SIGKILL: no cleanup, five leases left behind
        sim.configure(latency_seconds=0.0)
        second = Daemon(config_path, tmp_path / "second.log")
        try:
            await second.url()
            await wait_until(lambda: _len_is(refreshed(pg_url), 20), 30, 0.2)
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0
        finally:
            second.kill()
        assert sim.stats()["max_in_flight_per_token"] == 1


async def test_two_daemons_share_2000_accounts_without_overlap(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    await seed_postgres(pg_url, keyring, 2000)
    async with simulator.Simulator(latency_seconds=0.005, rotate=True) as sim:
        config_path = daemon_config(tmp_path, db_url=pg_url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=16)
        daemons = [Daemon(config_path, tmp_path / f"d{n}.log") for n in range(2)]
        try:
            for d in daemons:
                await d.url()
            await wait_until(lambda: _len_is(refreshed(pg_url), 2000), 90, 0.5)
            for d in daemons:
                d.signal(signal.SIGTERM)
            assert [await d.wait() for d in daemons] == [0, 0]
        finally:
            for d in daemons:
                d.kill()
        stats = sim.stats()
    assert stats["max_in_flight_per_token"] == 1
    assert stats["successes"] == 2000 and stats["calls"] == 2000
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT account_id, count(*) AS n, bool_and(success) AS ok "
                                "FROM refresh_log GROUP BY account_id")
        states = await conn.fetch("SELECT state, count(*) FROM accounts GROUP BY state")
    finally:
        await conn.close()
    assert len(rows) == 2000 and all(r["n"] == 1 and r["ok"] for r in rows)
    assert dict(states) == {"active": 2000}
    shares = [sum(e.get("event") == "token_refreshed" for e in d.events()) for d in daemons]
    assert sum(shares) == 2000 and min(shares) > 0, shares


async def test_systemd_notify_ready_watchdog_and_stopping(tmp_path: Path, sqlite_url: str,
                                                         keyring, key_lines) -> None:
    await seed(sqlite_url, keyring, 1)
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify.sock"))
    receiver.setblocking(False)
    messages: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()

    async def receive(seconds: float) -> None:
        end = loop.time() + seconds
        while loop.time() < end:
            try:
                data = receiver.recv(4096)
            except BlockingIOError:
                await asyncio.sleep(0.02)
                continue
            messages.append((loop.time(), data.decode()))

    async with simulator.Simulator() as sim:
        sim.configure(fail_mode="hang")  # the first refresh never returns: a wedged loop
        config_path = daemon_config(tmp_path, db_url=sqlite_url, key_line=key_lines[0],
                                    token_url=sim.token_url, interval_seconds=0.5,
                                    request_timeout_seconds=60, shutdown_grace_seconds=1)
        daemon = Daemon(config_path, tmp_path / "daemon.log",
                        NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="200000")
        try:
            await receive(4.0)
            daemon.signal(signal.SIGTERM)
            await receive(0.5)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()
            receiver.close()
    texts = [m for _, m in messages]
    assert texts[0] == "READY=1"
    assert "STOPPING=1" in texts
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    assert pings, "no watchdog ping while the loop was young and healthy"
    ready_at = messages[0][0]
    # Wedged: no finished cycle within 3 x 0.5 s, so the pings stop soon after.
    assert max(pings) - ready_at < 2.5, messages
    assert messages[-1][0] - max(pings) > 1.0


async def test_canaries_never_leave_the_vault(tmp_path: Path, key_lines) -> None:
    canary_refresh = "v^1.1#CANARY-REFRESH-" + secrets.token_hex(12)
    canary_secret = "CANARY-CLIENT-SECRET-" + secrets.token_hex(12)
    db_url = f"sqlite://{tmp_path / 'tokend.db'}"
    async with simulator.Simulator(client_secret=canary_secret) as sim:
        config_path = daemon_config(tmp_path, db_url=db_url, key_line=key_lines[0],
                                    token_url=sim.token_url, client_secret=canary_secret)
        outputs = [await acli(config_path, "migrate")]
        outputs.append(await acli(config_path, "accounts", "add", "--provider", "ebay-sandbox",
                           "--org", "acme", "--name", "canary", "--id", "canary",
                           stdin=canary_refresh + "\n"))
        assert outputs[-1].returncode == 0, outputs[-1].stderr
        outputs.append(await acli(config_path, "refresh", "canary", "--debug"))
        assert outputs[-1].returncode == 0, outputs[-1].stdout + outputs[-1].stderr
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            await daemon.url()
            sim.configure(fail_mode="500")  # errors must not leak either
            outputs.append(await acli(config_path, "refresh", "canary"))
            sim.configure(fail_mode=None)
            outputs.append(await acli(config_path, "refresh", "canary"))
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()
        outputs += [await acli(config_path, "accounts", "list", "--json"),
                    await acli(config_path, "accounts", "list"),
                    await acli(config_path, "status", "--json")]
    keyring = crypto.Keyring.from_lines(key_lines[:1])
    db = await store.connect(db_url)
    account = await db.get_account("canary")
    await db.close()
    canary_access = keyring.decrypt(account.access_token, account_id="canary",
                                    column="access_token")
    canary_rotated = keyring.decrypt(account.refresh_token, account_id="canary",
                                     column="refresh_token")
    with sqlite3.connect(tmp_path / "tokend.db") as conn:
        dump = "\n".join(conn.iterdump())
    texts = {"dump": dump, "daemon stdout": daemon.log_path.read_text()}
    texts |= {f"cli {n}": o.stdout + o.stderr for n, o in enumerate(outputs)}
    for secret in (canary_refresh, canary_secret, canary_access, canary_rotated, ADMIN_TOKEN):
        for where, text in texts.items():
            assert secret not in text, f"a secret leaked into {where}"
    assert "ENC:v1:" in dump and "Basic ****" in texts["cli 2"]




async def _len_is(coro, n: int) -> bool:
    return len(await coro) == n


async def test_logs_command_prints_history_and_follows(tmp_path: Path, sqlite_url: str,
                                                       keyring, key_lines) -> None:
    await seed(sqlite_url, keyring, 1)
    async with simulator.Simulator() as sim:
        config_path = daemon_config(tmp_path, db_url=sqlite_url, key_line=key_lines[0],
                                    token_url=sim.token_url, interval_seconds=60)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            await daemon.wait_for_event("cycle_summary")
            history = await acli(config_path, "logs", "--url", url)
            assert history.returncode == 0, history.stderr
            assert "=== HTTP REQUEST ===" in history.stdout and "Basic ****" in history.stdout
            lines = (await acli(config_path, "logs", "--url", url, "--json")).stdout.splitlines()
            actions = [orjson.loads(line)["action"] for line in lines]
            assert "token_refreshed" in actions and "cycle_summary" in actions
            follower = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tokend", "--config", str(config_path), "logs", "--url",
                url, "--follow", "--json", "--source", "manual",
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env())
            try:
                await asyncio.sleep(1.0)  # connected and past the (empty) manual history
                admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                async with aiohttp.ClientSession(headers=admin) as session, session.post(
                        f"{url}/api/accounts/acct_00000/refresh") as response:
                    assert response.status == 200
                async with asyncio.timeout(10):
                    live = orjson.loads(await follower.stdout.readline())
                assert live["source"] == "manual" and live["account_id"] == "acct_00000"
            finally:
                follower.kill()
                await follower.wait()
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()


async def next_notification(receiver: socket.socket, prefix: str) -> str:
    """The next datagram on a non-blocking notify socket that starts with `prefix`."""
    async with asyncio.timeout(20):
        while True:
            try:
                message = receiver.recv(4096).decode()
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            if message.startswith(prefix):
                return message


@pytest.fixture
def notified(tmp_path: Path, sqlite_url: str, key_lines) -> Iterator[tuple[Daemon, socket.socket]]:
    """A quiet `tokend run` whose systemd notifications arrive on a socket of the test's."""
    config_path = daemon_config(tmp_path, db_url=sqlite_url, key_line=key_lines[0],
                                token_url="http://127.0.0.1:9/token")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(tmp_path / "notify.sock"))
        receiver.setblocking(False)
        daemon = Daemon(config_path, tmp_path / "daemon.log",
                        NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
        try:
            yield daemon, receiver
        finally:
            daemon.kill()


async def test_sigterm_the_moment_ready_arrives_is_a_clean_stop(notified) -> None:
    daemon, receiver = notified
    await next_notification(receiver, "READY=1")
    daemon.signal(signal.SIGTERM)  # what a supervisor stopping a fresh service does
    assert await daemon.wait() == 0


async def test_each_cycle_tells_systemd_what_it_did(notified) -> None:
    """`systemctl status tokend` shows the last cycle: STATUS= after every one."""
    daemon, receiver = notified
    message = await next_notification(receiver, "STATUS=")
    assert message.endswith(": no accounts need token refresh"), message
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait() == 0


async def stream_entries(url: str, into: list[dict], ready: asyncio.Event) -> None:
    """Collect every live entry `url`'s /ws/logs sends (both frame shapes)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws/logs") as ws:
        await ws.send_json({"type": "hello", "token": ADMIN_TOKEN, "since": None,
                            "sources": None})
        async for msg in ws:
            data = orjson.loads(msg.data)
            if data["type"] == "ready":
                ready.set()
            elif data["type"] == "entry":
                into.append(data)
            elif data["type"] == "entries":
                into.extend(data["entries"])


@contextlib.asynccontextmanager
async def streaming(url: str) -> AsyncIterator[list[dict]]:
    """The live entries `url`'s /ws/logs sends while the block runs, once it is ready."""
    seen: list[dict] = []
    ready = asyncio.Event()
    watcher = asyncio.create_task(stream_entries(url, seen, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield seen
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_two_daemons_behind_pgbouncer_share_the_work_and_one_stream_shows_both(
        tmp_path: Path, pgbouncer_url: str, pg_url: str, keyring, key_lines) -> None:
    """Transaction pooling: no prepared-statement cache and no session state; without a
    direct listen_url each replica's stream polls for the other's entries."""
    async with simulator.Simulator(latency_seconds=0.005, rotate=True) as sim:
        config_path = daemon_config(tmp_path, db_url=pgbouncer_url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=16,
                                    database={"pgbouncer": True, "pool_max_size": 8})
        daemons = [Daemon(config_path, tmp_path / f"d{n}.log") for n in range(2)]
        streams = contextlib.AsyncExitStack()
        try:
            urls = [await d.url() for d in daemons]
            assert [(await d.wait_for_event("daemon_ready"))["stream_feed"]
                    for d in daemons] == ["poll", "poll"]
            seen = await streams.enter_async_context(streaming(urls[0]))
            await seed_postgres(pg_url, keyring, 600)  # due now: the next cycles take them
            await wait_until(lambda: _len_is(refreshed(pg_url), 600), 90, 0.5)
            streamed = lambda: {e["account_id"] for e in seen  # noqa: E731
                                if e["action"] == "token_refreshed"}
            await wait_until(lambda: len(streamed()) == 600, 15, 0.2)
            for d in daemons:
                d.signal(signal.SIGTERM)
            assert [await d.wait() for d in daemons] == [0, 0]
        finally:
            await streams.aclose()
            for d in daemons:
                d.kill()
        stats = sim.stats()
    assert stats["max_in_flight_per_token"] == 1
    assert stats["successes"] == 600 and stats["calls"] == 600
    shares = [sum(e.get("event") == "token_refreshed" for e in d.events()) for d in daemons]
    assert sum(shares) == 600 and min(shares) > 0, shares
    assert len([e for e in seen if e["action"] == "token_refreshed"]) == 600  # each once
    for d in daemons:
        assert not [e for e in d.events() if e.get("level") in ("error", "critical")]
