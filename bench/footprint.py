"""Footprint of the full daemon (`tokend run`: loop, web server, stream feed) on PostgreSQL with
100,000 accounts, none due: memory and CPU while idle, and the time from start to READY=1.
Run: `python -m bench.footprint [--seconds 60]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from tokend import crypto

READY_TIMEOUT_SECONDS = 30.0


def python_env(workdir: Path, bytecode: str) -> dict[str, str]:
    """How the children find compiled bytecode: "cold" compiles tokend's own modules at every
    start (PYTHONDONTWRITEBYTECODE=1, as in this development environment); "warm" keeps
    every .pyc in a cache of the benchmark's own (as after `pip install`)."""
    env = common.child_env()
    if bytecode == "cold":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def tokend_command(config_path: Path) -> list[str]:
    """The console script systemd would run, else `python -m tokend`."""
    script = Path(sys.executable).with_name("tokend")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "tokend"]
    return [*program, "--config", str(config_path), "run"]


class Daemon:
    """`tokend run` as a child with its own NOTIFY_SOCKET, so READY=1 can be timed."""

    def __init__(self, config_path: Path, workdir: Path, env: dict[str, str]) -> None:
        self.notify_path = workdir / f"notify-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.log = (workdir / "tokend.log").open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            tokend_command(config_path), stdout=self.log, stderr=subprocess.STDOUT,
            env={**env, "NOTIFY_SOCKET": str(self.notify_path)})

    def wait_ready(self) -> float:
        """Seconds from the start of the process until READY=1 arrived."""
        deadline = self.started + READY_TIMEOUT_SECONDS
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"no READY=1 (exit code {self.proc.poll()}); see the log")
            self.notify.settimeout(left)
            try:
                message = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                return time.perf_counter() - self.started

    def stop(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until it exited)."""
        began = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)
        self.log.close()
        return self.proc.returncode, time.perf_counter() - began


def vm_field_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def idle_window(config_path: Path, workdir: Path, seconds: float,
                settle_seconds: float) -> dict[str, Any]:
    daemon = Daemon(config_path, workdir, python_env(workdir, "warm"))
    try:
        ready = daemon.wait_ready()
        time.sleep(settle_seconds)  # the first cycle (a quiet one) runs right after READY
        pid = daemon.proc.pid
        rss = [common.rss_kib(pid)]
        cpu_before, began = common.process_cpu_seconds(pid), time.perf_counter()
        while time.perf_counter() - began < seconds:
            time.sleep(min(1.0, max(0.0, seconds - (time.perf_counter() - began))))
            rss.append(common.rss_kib(pid))
        window = time.perf_counter() - began
        cpu = common.process_cpu_seconds(pid) - cpu_before
        peak = vm_field_kib(pid, "VmHWM")
    finally:
        code, stop_seconds = daemon.stop()
    return {"ready": ready, "window": window, "cpu_percent": 100.0 * cpu / window,
            "cpu_seconds": cpu, "rss_max": max(rss), "rss_final": rss[-1], "hwm": peak,
            "exit": code, "stop_seconds": stop_seconds}


def startup_times(config_path: Path, workdir: Path, runs: int,
                  bytecode: str) -> list[dict[str, Any]]:
    out = []
    for _ in range(runs):
        daemon = Daemon(config_path, workdir, python_env(workdir, bytecode))
        try:
            ready = daemon.wait_ready()
        finally:
            code, stop_seconds = daemon.stop()
        out.append({"ready": ready, "exit": code, "stop_seconds": stop_seconds})
    return out


def import_wall(code: str, env: dict[str, str]) -> float:
    """Wall seconds of `python -c code`, median of 5."""
    times = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=common.REPO, env=env)
        times.append(time.perf_counter() - began)
    return common.median(times)


def import_profile(env: dict[str, str], top: int) -> tuple[list[tuple[float, str]],
                                                           list[tuple[float, str]]]:
    """Where `import tokend.cli` spends its time, from `-X importtime`: each top-level
    package's first import (cumulative), and the modules with the most time of their own."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import tokend.cli"],
                            capture_output=True, text=True, check=True, cwd=common.REPO,
                            env=env)
    packages: dict[str, float] = {}
    own: list[tuple[float, str]] = []
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)", line)
        if not match:
            continue
        self_seconds, cumulative, name = int(match[1]) / 1e6, int(match[2]) / 1e6, match[3]
        package = name.split(".")[0]
        packages[package] = max(packages.get(package, 0.0), cumulative)
        own.append((self_seconds, name))
    by_package = sorted(((v, k) for k, v in packages.items()), reverse=True)
    return by_package[:top], sorted(own, reverse=True)[:top]


async def prepare(url: str, accounts: int, key_line: str) -> float:
    keyring = crypto.Keyring.from_lines([key_line])
    return await common.seed_sealed(url, keyring, accounts, common.utcnow(), due=False)


async def main_async(args: argparse.Namespace) -> None:
    common.print_machine(await common.describe_machine(args.admin_url))
    key_line = crypto.generate_key_line("bench")
    with tempfile.TemporaryDirectory(prefix="tokend-bench-") as tmp:
        workdir = Path(tmp)
        async with common.database(args.admin_url) as url:
            seeded = await prepare(url, args.accounts, key_line)
            # Nothing is ever sent: no account is due. Defaults for everything else.
            config_path = common.write_toml(
                workdir / "tokend.toml", url, "http://127.0.0.1:9/identity/v1/oauth2/token",
                key_line)
            print(f"{args.accounts} accounts, none due (seeded in {seeded:.1f} s); "
                  f"[refresh] and [database] at their defaults; command: "
                  f"{' '.join(tokend_command(Path('tokend.toml')))}", flush=True)

            idle = []
            for _ in range(args.runs):
                idle.append(await asyncio.to_thread(idle_window, config_path, workdir,
                                                    args.seconds, args.settle_seconds))
                r = idle[-1]
                print(f"  idle run: {r['window']:.0f} s, CPU {r['cpu_percent']:.2f} % "
                      f"({r['cpu_seconds']:.2f} s), RSS max {r['rss_max'] / 1024:.1f} MiB, "
                      f"final {r['rss_final'] / 1024:.1f} MiB, exit {r['exit']}, "
                      f"load {common.load_average()}", flush=True)
            starts: dict[str, list[list[dict[str, Any]]]] = {"warm": [], "cold": []}
            await asyncio.to_thread(startup_times, config_path, workdir, 1, "warm")  # fill it
            for _ in range(args.runs):
                for bytecode, runs in starts.items():
                    runs.append(await asyncio.to_thread(startup_times, config_path, workdir,
                                                        args.starts, bytecode))
                    readies = ", ".join(f"{s['ready']:.3f}" for s in runs[-1])
                    print(f"  startup run ({bytecode} bytecode): READY=1 after {readies} s, "
                          f"load {common.load_average()}", flush=True)
            log_tail = (workdir / "tokend.log").read_text()
            refreshes = log_tail.count('"token_refreshed"') + log_tail.count(
                '"token_refresh_failed"')

    best = min(idle, key=lambda r: r["cpu_percent"])
    print()
    common.print_table(
        ["window s", "CPU %", "CPU % spread", "RSS max MiB", "RSS final MiB", "VmHWM MiB",
         "RSS max spread MiB", "exit on SIGTERM", "SIGTERM to exit s"],
        [[f"{best['window']:.0f}", f"{best['cpu_percent']:.2f}",
          common.spread([r["cpu_percent"] for r in idle]),
          f"{best['rss_max'] / 1024:.1f}", f"{best['rss_final'] / 1024:.1f}",
          f"{best['hwm'] / 1024:.1f}", common.spread([r["rss_max"] / 1024 for r in idle], "{:.1f}"),
          best["exit"], f"{best['stop_seconds']:.2f}"]])
    print()
    rows = []
    for bytecode, runs in starts.items():
        medians = [common.median([s["ready"] for s in run]) for run in runs]
        best_run = runs[medians.index(min(medians))]
        rows.append([bytecode, f"{min(medians):.3f}", f"{min(s['ready'] for s in best_run):.3f}",
                     f"{max(s['ready'] for s in best_run):.3f}",
                     common.spread(medians, "{:.3f}"),
                     ",".join(str(s["exit"]) for run in runs for s in run)])
    common.print_table(["bytecode", f"start to READY=1 s (median of {args.starts})", "min",
                        "max", "medians over runs", "exit codes after SIGTERM at READY=1"],
                       rows)
    print(f"\nrefresh attempts logged while idle: {refreshes} (expected 0)")

    print("\nimport time, `python -c ...` wall, median of 5:")
    with tempfile.TemporaryDirectory(prefix="tokend-bench-") as tmp:
        envs = {bytecode: python_env(Path(tmp), bytecode) for bytecode in ("warm", "cold")}
        import_wall("import tokend.cli", envs["warm"])  # fill the bytecode cache
        common.print_table(
            ["bytecode", "python -c pass ms", "python -c 'import tokend.cli' ms"],
            [[bytecode, f"{import_wall('pass', env) * 1000:.0f}",
              f"{import_wall('import tokend.cli', env) * 1000:.0f}"]
             for bytecode, env in envs.items()])
        by_package, by_own = import_profile(envs["warm"], args.top_imports)
    print("\nwhere `import tokend.cli` goes, warm bytecode (-X importtime): packages by the "
          "cumulative time of their first import (nested: tokend includes the rest), and "
          "modules by their own time")
    common.print_table(
        ["package", "cumulative ms", "module", "own ms"],
        [[package, f"{cum * 1000:.1f}", module, f"{self_s * 1000:.1f}"]
         for (cum, package), (self_s, module) in zip(by_package, by_own, strict=False)])
    print(f"\ntargets: RSS < 80 MB, CPU < 1 %, READY=1 < 1 s; load after: "
          f"{common.load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window per run")
    parser.add_argument("--settle-seconds", type=float, default=2.0,
                        help="wait after READY=1 before the window opens")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--starts", type=int, default=5, help="starts timed per run")
    parser.add_argument("--top-imports", type=int, default=15)
    parser.add_argument("--admin-url", default=common.ADMIN_URL)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
