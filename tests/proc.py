"""`tokend` as a child process: config files, the CLI, and daemons with real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from tokend.testing import simulator

ADMIN_TOKEN = "admin-token-for-tests-0123456789"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return orjson.dumps(str(value)).decode()


def write_config(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def daemon_config(tmp_path: Path, *, db_url: str, key_line: str, token_url: str,
                  client_secret: str = simulator.DEFAULT_CLIENT_SECRET,
                  database: Mapping[str, Any] | None = None, **refresh: Any) -> Path:
    return write_config(tmp_path / "tokend.toml", {
        "database": {"url": db_url, **(database or {})},
        "refresh": {"interval_seconds": 0.5, "request_timeout_seconds": 5,
                    "lease_seconds": 30, "shutdown_grace_seconds": 10, **refresh},
        "crypto": {"keys": [key_line]},
        "server": {"host": "127.0.0.1", "port": 0, "admin_token": ADMIN_TOKEN},
        "providers.ebay-sandbox": {"type": "ebay", "environment": "sandbox",
                                   "token_url": token_url,
                                   "client_id": simulator.DEFAULT_CLIENT_ID,
                                   "client_secret": client_secret},
    })


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("TOKEND_", "NOTIFY_",
                                                                      "WATCHDOG_"))}
    return {**out, "PYTHONUNBUFFERED": "1", **extra}


def cli(config_path: Path, *args: str, stdin: str = "", **extra_env: str,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokend", "--config", str(config_path), *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=env(**extra_env),
        check=False)


async def acli(config_path: Path, *args: str, stdin: str = "", **extra_env: str,
               ) -> subprocess.CompletedProcess[str]:
    """`cli` without blocking the event loop (the simulator may be serving from it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokend", "--config", str(config_path), *args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env(**extra_env))
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin.encode())
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


class Daemon:
    """A `tokend run` child process whose stdout lands in a file."""

    def __init__(self, config_path: Path, log_path: Path, *run_args: str,
                 **extra_env: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokend", "--config", str(config_path), "run", *run_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env(**extra_env))

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                out.append({"event": "<not json>", "line": line.decode(errors="replace")})
        return out

    async def wait_for_event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events():
                    if event.get("event") == name:
                        return event
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited {self.proc.returncode}: "
                                         f"{self.log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.05)

    async def url(self) -> str:
        return (await self.wait_for_event("daemon_ready"))["url"]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        async with asyncio.timeout(timeout):
            while self.proc.poll() is None:
                await asyncio.sleep(0.05)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
