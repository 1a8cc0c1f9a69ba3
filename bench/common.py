"""What the benchmarks share: a throwaway PostgreSQL database, fast seeding, the simulator in
its own process, a tokend configuration, process CPU and memory readings, and tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import secrets
import select
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from tokend import clock, config, crypto, model, store
from tokend.testing import simulator

ADMIN_URL = os.environ.get("TOKEND_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PROVIDER = "ebay-sandbox"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

ACCOUNT_COLUMNS = (
    "id", "org", "provider", "name", "scopes", "state", "refresh_token", "access_token",
    "access_expires_at", "last_refresh_at", "consecutive_failures", "next_attempt_at",
    "version", "created_at", "updated_at",
)


def utcnow() -> datetime:
    return clock.now()


# -- the machine ------------------------------------------------------------------------


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def describe_machine(admin_url: str = ADMIN_URL) -> dict[str, str]:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        pg = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{_meminfo_kib('MemTotal') / 1024 / 1024:.1f} GiB",
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "postgresql": pg.split()[0],
        "load (1/5/15 min)": load_average(),
        "date": utcnow().strftime("%Y-%m-%d %H:%M UTC"),
    }


def print_machine(machine: dict[str, str]) -> None:
    print("machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()))


def load_average() -> str:
    """The load average, and how much of the last minute some task waited for a CPU."""
    text = "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
        text += f" (cpu pressure avg60 {some.split()[2].split('=')[1]} %)"
    return text


# -- a throwaway database ---------------------------------------------------------------


def database_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def database(admin_url: str = ADMIN_URL) -> AsyncIterator[str]:
    """A fresh, migrated `tokend_bench_<random>` database; dropped WITH (FORCE) after."""
    name = f"tokend_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(admin_url, name)
    try:
        yield await migrated(url)
    finally:
        admin = await asyncpg.connect(admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def backend_database(backend: str, folder: Path) -> AsyncIterator[str]:
    """A fresh, migrated database of `backend`: a SQLite file in `folder`, or `database()`."""
    if backend != "sqlite":
        async with database() as url:
            yield url
        return
    yield await migrated(f"sqlite://{folder / 'bench.db'}")


async def migrated(url: str) -> str:
    """`url` after tokend's migrations ran on it."""
    db = await store.connect(url)
    try:
        await db.migrate()
    finally:
        await db.close()
    return url


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still there 30 s later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def empty_tables(url: str) -> None:
    await execute(url, "TRUNCATE accounts, refresh_log, http_log, workers, provider_pauses")


# -- seeding ----------------------------------------------------------------------------
#
# Account i is due when `due(i)`: refreshed 1 h (+ up to 10 min) ago, so max_age says due
# and next_attempt_at has passed. Otherwise it was refreshed within the last 30 min and its
# next attempt is 30-60 min away: nothing becomes due while a benchmark runs.


def account_id(i: int) -> str:
    return f"acct-{i:07d}"


def refresh_token() -> str:
    return "v^1.1#i^1#r^1#p^3#I^3#f^0#t^" + secrets.token_urlsafe(72)


def times_of(i: int, now: datetime, due: bool) -> tuple[datetime, datetime, datetime]:
    """(last_refresh_at, access_expires_at, next_attempt_at) of account i."""
    ago = 3600 + i % 600 if due else i % 1800
    last = now - timedelta(seconds=ago)
    return last, last + timedelta(seconds=7200), last + timedelta(seconds=3600)


async def seed_sealed(url: str, keyring: crypto.Keyring, count: int, now: datetime, *,
                      due: bool) -> float:
    """`count` accounts with real ENC:v1 envelopes, by COPY; returns the seconds it took."""
    began = time.perf_counter()
    records = []
    for i in range(1, count + 1):
        aid = account_id(i)
        last, expires, next_at = times_of(i, now, due)
        records.append((
            aid, f"org-{i % 100:03d}", PROVIDER, f"seller-{i:07d}", [], model.ACTIVE,
            keyring.encrypt(refresh_token(), account_id=aid, column="refresh_token"),
            keyring.encrypt("v^1.1#i^1#p^3#r^0#I^3#f^0#t^" + secrets.token_urlsafe(96),
                            account_id=aid, column="access_token"),
            expires, last, 0, next_at, 1, now, now))
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.copy_records_to_table("accounts", records=records, columns=ACCOUNT_COLUMNS)
        await conn.execute("VACUUM ANALYZE accounts")
    finally:
        await conn.close()
    return time.perf_counter() - began


# The same layout in SQL, for millions of rows. The envelopes have the right shape and
# length but no key opens them: only for benchmarks that never refresh.
_SEED_SERIES = """
INSERT INTO accounts (id, org, provider, name, scopes, state, refresh_token, access_token,
                      access_expires_at, last_refresh_at, next_attempt_at, version,
                      created_at, updated_at)
SELECT 'acct-' || lpad(i::text, 7, '0'), 'org-' || lpad((i % 100)::text, 3, '0'), $1,
       'seller-' || lpad(i::text, 7, '0'), '{}', 'active',
       'ENC:v1:bench:' || translate(encode(sha512(('r' || i)::bytea)
                                           || sha256(('r' || i)::bytea), 'base64'),
                                    E'+/=\n', '-_'),
       'ENC:v1:bench:' || translate(encode(sha512(('a' || i)::bytea)
                                           || sha512(('b' || i)::bytea), 'base64'),
                                    E'+/=\n', '-_'),
       last + interval '7200 s', last, last + interval '3600 s', 1, $2, $2
FROM (SELECT i, $2::timestamptz - make_interval(
                    secs => CASE WHEN i % $4 = 0 THEN 3600 + i % 600 ELSE i % 1800 END) AS last
      FROM generate_series(1, $3) AS i) AS s
"""


async def seed_series(url: str, count: int, now: datetime, *, due_every: int) -> float:
    """`count` accounts, every `due_every`-th one due, in one INSERT ... SELECT."""
    began = time.perf_counter()
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(_SEED_SERIES, PROVIDER, now, count, due_every, timeout=1800)
        await conn.execute("VACUUM ANALYZE accounts", timeout=1800)
        # The seed's dirty pages are written now, not by a checkpoint during the measurement.
        await conn.execute("CHECKPOINT", timeout=1800)
    finally:
        await conn.close()
    return time.perf_counter() - began


# -- tokend's configuration -------------------------------------------------------------


def tokend_config(db_url: str, token_url: str, key_line: str, *, pool_max_size: int = 10,
                  **refresh: Any) -> config.Config:
    return config.Config(
        database=config.DatabaseConfig(url=db_url, pool_max_size=pool_max_size),
        refresh=config.RefreshConfig(**refresh),
        crypto=config.CryptoConfig(keys=(key_line,)),
        server=config.ServerConfig(host="127.0.0.1", port=0, admin_token=ADMIN_TOKEN),
        providers={PROVIDER: config.ProviderConfig(
            name=PROVIDER, type="ebay", environment="sandbox",
            client_id=simulator.DEFAULT_CLIENT_ID, client_secret=simulator.DEFAULT_CLIENT_SECRET,
            scopes=("https://api.ebay.com/oauth/api_scope",), token_url=token_url)},
    )


def write_toml(path: Path, db_url: str, token_url: str, key_line: str, *,
               pool_max_size: int = 10, **refresh: Any) -> Path:
    """The same configuration as a file, for `tokend run` in a child process."""
    def value(v: Any) -> str:
        return repr(v) if isinstance(v, int | float) else orjson.dumps(v).decode()

    lines = [
        "[database]", f"url = {value(db_url)}", f"pool_max_size = {pool_max_size}", "",
        "[refresh]", *(f"{k} = {value(v)}" for k, v in refresh.items()), "",
        "[crypto]", f"keys = [{value(key_line)}]", "",
        "[server]", 'host = "127.0.0.1"', "port = 0", f"admin_token = {value(ADMIN_TOKEN)}", "",
        f"[providers.{PROVIDER}]", 'type = "ebay"', 'environment = "sandbox"',
        f"token_url = {value(token_url)}", f"client_id = {value(simulator.DEFAULT_CLIENT_ID)}",
        f"client_secret = {value(simulator.DEFAULT_CLIENT_SECRET)}", "",
    ]
    path.write_text("\n".join(lines))
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: ours without any TOKEND_/NOTIFY_/WATCHDOG_ variable."""
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("TOKEND_", "NOTIFY_", "WATCHDOG_"))}
    return {**out, "PYTHONUNBUFFERED": "1", **extra}


# -- the simulator, in a process of its own ---------------------------------------------


class SimulatorProcess:
    """`python -m tokend.testing.simulator` as a child: its URL, knobs, counters and CPU."""

    def __init__(self, latency_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokend.testing.simulator", "--port", "0",
             "--latency-ms", str(latency_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), cwd=REPO)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://"):
            self.close()
            raise RuntimeError(f"the simulator did not start (printed {line!r})")
        self.base_url = line
        self.token_url = line + simulator.TOKEN_PATH

    def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(
            self.base_url + path, data=data, method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())

    def configure(self, **knobs: Any) -> dict[str, Any]:
        return self._call("/_sim/config", knobs)

    def stats(self) -> dict[str, Any]:
        return self._call("/_sim/stats?tokens=0")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def simulator_process(latency_ms: float) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(latency_ms)
    try:
        yield sim
    finally:
        sim.close()


# -- processes and the machine, from /proc ----------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclasses.dataclass(frozen=True)
class MachineCpu:
    """A /proc/stat reading: how busy every core was between two of them."""

    busy: int
    total: int

    @classmethod
    def read(cls) -> MachineCpu:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values[:8])  # without guest time, which user time already counts
        return cls(busy=total - idle, total=total)

    def percent_since(self, earlier: MachineCpu) -> float:
        """All cores together; 100 % means every core busy."""
        total = self.total - earlier.total
        return 100.0 * (self.busy - earlier.busy) / total if total else 0.0


# -- figures ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table, so the figures paste straight into BENCHMARKS.md."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


# -- profiles ---------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(path: str | None, pid: int | None = None) -> Iterator[None]:
    """Sample `pid` (default: this process) with py-spy into `path` (collapsed stacks).

    Only samples holding the GIL count: Python at work, not waiting in a system call.
    """
    if path is None:
        yield
        return
    binary = Path(sys.executable).with_name("py-spy")
    spy = subprocess.Popen(
        [str(binary), "record", "--pid", str(pid or os.getpid()), "--format", "raw",
         "--rate", "250", "--nonblocking", "--function", "--gil", "--output", path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy needs a moment to attach
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: write the file and exit
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)


def summarize_profile(path: str, top: int = 15) -> None:
    """The hottest functions of a py-spy raw profile: own samples and inclusive samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";")]
        # The idle event loop waiting in select() is not work.
        if frames[-1].startswith(("select (selectors.py", "_run_once (asyncio")) and \
                "select" in frames[-1]:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        print("profile: no samples")
        return
    print(f"profile {path}: {total} busy samples")
    for title, counts in (("own time", own), ("inclusive time", inclusive)):
        print(f"  top {top} by {title}:")
        for frame, count in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {100.0 * count / total:5.1f} %  {frame}")


def postgres_cpu_by_pid() -> dict[int, float]:
    """CPU time so far of every local PostgreSQL process, by pid."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                out[int(entry.name)] = process_cpu_seconds(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


async def backend_cpu_seconds_since(url: str, before: dict[int, float]) -> float:
    """CPU time the backends serving `url`'s database used since `before`.

    Only the backends of this benchmark's database: other people's sessions on the same
    server, and shared work (WAL writer, checkpointer), are not counted. Call it while the
    pool is still open, so every backend that did the work is still there.
    """
    conn = await asyncpg.connect(url, timeout=10)
    try:
        pids = [r[0] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    finally:
        await conn.close()
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += process_cpu_seconds(pid) - before.get(pid, 0.0)
    return total
