"""The README's "Running it for real", followed literally in a temporary folder."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from proc import env

from tokend import config, crypto

ROOT = Path(__file__).resolve().parents[1]
CLIENT_SECRET = "PRD-0123+4567%89ab/cdef=0123"


def steps() -> str:
    """The shell blocks of the section, in order, as one script."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running it for real", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 3
    return "\n".join(textwrap.dedent(block) for block in blocks)


def test_running_it_for_real_works_as_written(tmp_path: Path) -> None:
    root = tmp_path / "root"
    script = steps()
    assert "umask 077" in script and "install -m 600" in script
    for path in ("/etc/tokend", "/var/lib/tokend"):
        script = script.replace(path, f"{root}{path}")
    script = script.replace("sudo ", "")
    work = tmp_path / "work"
    work.mkdir()
    (work / "refresh-token.txt").write_text("v^1.1#i^1#r^1#readme-" + "x" * 40 + "\n")
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=work, input=CLIENT_SECRET + "\n",
        capture_output=True, text=True, timeout=120, check=False,
        env=env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"))
    assert result.returncode == 0, result.stderr
    assert "acme-main" in result.stdout  # `accounts list` shows the account just added

    etc = root / "etc" / "tokend"
    for name in ("tokend-keys", "tokend-admin-token", "ebay-client-secret"):
        assert stat.S_IMODE((etc / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((etc / "tokend.toml").stat().st_mode) == 0o644
    cfg = config.load(etc / "tokend.toml")
    assert cfg.providers["ebay-production"].client_secret == CLIENT_SECRET
    assert len(cfg.server.admin_token) >= 32
    crypto.Keyring.from_lines(cfg.crypto.keys)
    assert (root / "var" / "lib" / "tokend" / "tokend.db").exists()
