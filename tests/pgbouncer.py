"""Debian's PgBouncer in transaction pooling mode on a free loopback port, in front of a
PostgreSQL server: what many production deployments put between tokend and its database.

PgBouncer refuses to run as root, so as root it runs as the `postgres` OS user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BINARY = "/usr/sbin/pgbouncer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres_user() -> list[str]:
    """The command prefix that drops root to the `postgres` OS user (nothing otherwise)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def running(backend_url: str) -> Iterator[int]:
    """PgBouncer (pool_mode = transaction, no auth) forwarding every database name to the
    server of `backend_url`; yields its port and stops it afterwards."""
    if not Path(BINARY).exists():
        raise RuntimeError(f"{BINARY} is missing: install Debian's pgbouncer "
                           "(./scripts/test does)")
    backend = urlsplit(backend_url)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="tokend-pgbouncer-"))
    give_to_postgres(workdir)
    (workdir / "userlist.txt").write_text(f'"{backend.username or "postgres"}" ""\n')
    ini = workdir / "pgbouncer.ini"
    ini.write_text(f"""[databases]
* = host={backend.hostname} port={backend.port or 5432} user={backend.username or "postgres"}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = 4
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
""")
    for path in workdir.iterdir():
        give_to_postgres(path)
    with (workdir / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen([*as_postgres_user(), BINARY, str(ini)],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        try:
            wait_for_port(port, 10, proc)
        except (RuntimeError, TimeoutError) as exc:
            log = (workdir / "stderr.log").read_text() + (
                (workdir / "pgbouncer.log").read_text()
                if (workdir / "pgbouncer.log").exists() else "")
            raise RuntimeError(f"pgbouncer did not start: {exc}\n{log[-2000:]}") from None
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by the bouncer's."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
