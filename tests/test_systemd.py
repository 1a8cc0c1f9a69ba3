"""sd_notify datagrams, the watchdog task, and the shipped unit file."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kit import wait_until

from tokend import systemd

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "tokend.service"
SHIPPED_EXEC_START = "ExecStart=/usr/local/bin/tokend "


@pytest.fixture
def receiver(tmp_path, monkeypatch):
    """A datagram socket standing in for systemd's notify socket, named by NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued, without waiting for more."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(5)


async def wait_for_datagram(sock: socket.socket, timeout_seconds: float = 5.0) -> list[bytes]:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        got = drain(sock)
        if got:
            return got
        await asyncio.sleep(0.005)
    raise AssertionError("no datagram arrived")


def test_ready_stopping_watchdog_status_arrive(receiver):
    notifier = systemd.Notifier.from_env()
    assert notifier.address is not None
    assert notifier.ready()
    assert notifier.watchdog()
    assert notifier.status("3 accounts due\nsecond line")
    assert notifier.stopping()
    got = [receiver.recv(4096) for _ in range(4)]
    assert got == [b"READY=1", b"WATCHDOG=1", b"STATUS=3 accounts due second line", b"STOPPING=1"]


def test_abstract_socket_name(monkeypatch):
    name = f"tokend-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = systemd.Notifier.from_env()
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"


def test_absent_notify_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = systemd.Notifier.from_env()
    assert notifier.address is None
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.status("anything") is False
    assert notifier.stopping() is False


def test_unsupported_address_is_a_no_op():
    notifier = systemd.Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert notifier.address is None
    assert notifier.ready() is False


def test_send_errors_never_raise(tmp_path):
    notifier = systemd.Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.address is not None
    assert notifier.ready() is False


def test_full_socket_does_not_block(receiver):
    # Nobody reads: the receive queue fills (net.unix.max_dgram_qlen, 512 by default) and a
    # blocking sender would hang here; a non-blocking one gets EAGAIN and reports False.
    notifier = systemd.Notifier.from_env()
    assert notifier.watchdog() is True
    for _ in range(5000):
        if not notifier.watchdog():
            break
    else:
        pytest.fail("5000 datagrams queued and none refused")


def test_watchdog_interval_is_half_of_watchdog_usec():
    pid = str(os.getpid())
    assert systemd.watchdog_interval_seconds({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert systemd.watchdog_interval_seconds(
        {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": pid}) == 30.0
    assert systemd.watchdog_interval_seconds({"WATCHDOG_USEC": "500000"}) == 0.25


@pytest.mark.parametrize("environ", [
    {},
    {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"},  # another process's watchdog
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": "soon"},
    {"WATCHDOG_PID": "{pid}"},
])
def test_watchdog_interval_absent(environ):
    environ = {k: v.format(pid=os.getpid()) for k, v in environ.items()}
    assert systemd.watchdog_interval_seconds(environ) is None


def test_watchdog_interval_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_seconds() == 10.0


async def test_run_watchdog_pings_only_while_healthy(receiver):
    interval_seconds = 0.02
    state = {"healthy": True, "checks": 0}  # the loop's health, flipped to simulate a wedge

    def healthy() -> bool:
        state["checks"] += 1
        return state["healthy"]

    stop = asyncio.Event()
    task = asyncio.create_task(systemd.run_watchdog(
        systemd.Notifier.from_env(), healthy, interval_seconds, stop))

    assert set(await wait_for_datagram(receiver)) == {b"WATCHDOG=1"}

    state["healthy"] = False
    drain(receiver)  # pings sent before the flip
    flipped_at = state["checks"]
    await wait_until(lambda: state["checks"] >= flipped_at + 10, 5)
    assert drain(receiver) == []  # ten checks found the loop wedged: no ping among them

    state["healthy"] = True
    assert set(await wait_for_datagram(receiver)) == {b"WATCHDOG=1"}

    stop.set()
    await asyncio.wait_for(task, timeout=1)


async def test_run_watchdog_returns_at_once_when_stopped(receiver):
    stop = asyncio.Event()
    task = asyncio.create_task(systemd.run_watchdog(
        systemd.Notifier.from_env(), lambda: True, 3600.0, stop))
    assert await wait_for_datagram(receiver) == [b"WATCHDOG=1"]
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, timeout=1)
    assert time.monotonic() - started < 0.5


async def test_run_watchdog_with_stop_already_set_sends_nothing(receiver):
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(systemd.run_watchdog(
        systemd.Notifier.from_env(), lambda: True, 3600.0, stop), timeout=1)
    assert drain(receiver) == []


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "--no-pager", *args],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=30,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}, check=False,
    )


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


@needs_systemd_analyze
def test_unit_verifies_cleanly(tmp_path):
    # `verify` checks that ExecStart's binary exists and is executable, and the shipped path
    # (/usr/local/bin/tokend, where `sudo pip install .` puts it) is absent on a test machine.
    # So verify a copy whose only change is that path, pointed at this venv's real `tokend`
    # script (falling back to /bin/true when the package is not installed as a script);
    # every other line is checked as shipped.
    text = UNIT.read_text()
    assert text.count(SHIPPED_EXEC_START) == 1
    assert text.count("ExecStart") == 1
    script = Path(sys.executable).parent / "tokend"
    binary = str(script) if os.access(script, os.X_OK) else "/bin/true"
    copy = tmp_path / "tokend.service"
    copy.write_text(text.replace(SHIPPED_EXEC_START, f"ExecStart={binary} "))

    result = systemd_analyze("verify", str(copy))
    assert result.stderr == ""
    assert result.returncode == 0


@needs_systemd_analyze
def test_unit_security_exposure_is_low():
    version = systemd_analyze("--version").stdout.split()
    if int(version[1]) < 250:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    result = systemd_analyze("security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", last)
    assert match, last
    assert float(match.group(1)) <= 1.5, result.stdout
