"""sd_notify and the watchdog: tell systemd when tokend is ready, alive and stopping.

Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op, so the daemon calls it always.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger()


class Notifier:
    """Sends sd_notify datagrams to the socket systemd named, or nowhere."""

    def __init__(self, address: bytes | None) -> None:
        self.address = address

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
        if value.startswith("@"):
            # The Linux abstract namespace: a leading NUL instead of systemd's "@".
            return cls(b"\0" + os.fsencode(value[1:]))
        if value.startswith("/"):
            return cls(os.fsencode(value))
        if value:
            # systemd >= 254 may also pass "vsock:..." (VMs); tokend runs on the host.
            log.warning("notify_socket_unsupported", notify_socket=value)
        return cls(None)

    def send(self, message: str) -> bool:
        """Send one datagram; True when it left. Never raises: systemd is a bystander."""
        if self.address is None:
            return False
        try:
            # A fresh socket per message, as libsystemd does: nothing to close on shutdown,
            # and non-blocking so a full socket buffer never stalls the event loop.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            log.debug("notify_failed", message=message.split("=", 1)[0], error=str(exc))
            return False
        return True

    def ready(self) -> bool:
        return self.send("READY=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        # One line: a newline would start a new assignment in the datagram.
        return self.send("STATUS=" + " ".join(text.splitlines()))


def watchdog_interval_seconds(environ: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd asked for (as sd_watchdog_enabled advises), or None."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    # WATCHDOG_PID names the process the watchdog is for; an inherited value is not ours.
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    return usec / 2_000_000


async def run_watchdog(
    notifier: Notifier,
    is_healthy: Callable[[], bool],
    interval_seconds: float,
    stop: asyncio.Event,
) -> None:
    """Ping the watchdog every interval while `is_healthy()`; return once `stop` is set.

    Withholding the ping when the loop is wedged is the point: systemd then kills and
    restarts tokend. An exception from `is_healthy` propagates, ending this side task.
    """
    withheld = False
    while not stop.is_set():
        if is_healthy():
            if withheld:
                log.info("watchdog_resumed")
                withheld = False
            notifier.watchdog()
        elif not withheld:
            log.warning("watchdog_withheld", interval_seconds=interval_seconds)
            withheld = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_seconds)
