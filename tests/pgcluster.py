"""A throwaway PostgreSQL cluster of a test's own: `initdb` into a temporary folder and
`pg_ctl` on a free loopback port with trust auth, so a test may crash and restart a real
server (`pg_ctl restart -m immediate`) without touching the shared one.

initdb refuses to run as root, so as root every command runs as the `postgres` OS user.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pgbouncer import as_postgres_user, free_port, give_to_postgres

BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run([*as_postgres_user(), *args], capture_output=True, text=True,
                                timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")

    def _pg_ctl(self, *args: str) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                   "-c max_connections=200")
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                  "-o", options, "-w", "-t", "60", *args)

    def init(self) -> None:
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        self._pg_ctl("start")

    def restart_immediate(self) -> None:
        """A crash: every backend dies without a checkpoint; recovery replays the WAL."""
        self._pg_ctl("restart", "-m", "immediate")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running() -> Iterator[Cluster]:
    if not (BIN / "initdb").exists():
        raise RuntimeError(f"{BIN / 'initdb'} is missing: PostgreSQL 15's server package "
                           "provides it")
    root = Path(tempfile.mkdtemp(prefix="tokend-pgcluster-"))
    give_to_postgres(root)
    cluster = Cluster(root, free_port())
    try:
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            try:
                cluster.stop()
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    cluster._pg_ctl("stop", "-m", "immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
