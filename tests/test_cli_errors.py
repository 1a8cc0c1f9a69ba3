"""The command line as a newcomer meets it: every error one line on stderr, exit 1 or 2,
never a traceback; and the rough edges found on a fresh machine."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from proc import cli, daemon_config, env, write_config

from tokend import cli as tokend_cli

TOKEN = "v^1.1#i^1#r^1#cli-errors"


@pytest.fixture
def fresh(tmp_path: Path, key_lines: list[str]) -> Path:
    """A configuration whose database does not exist yet."""
    return daemon_config(tmp_path, db_url=f"sqlite://{tmp_path / 'db' / 'cli.db'}",
                         key_line=key_lines[0], token_url="http://127.0.0.1:9/token")


@pytest.fixture
def migrated(fresh: Path) -> Path:
    assert cli(fresh, "migrate").returncode == 0
    return fresh


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_every_subcommand_on_its_error_paths_is_one_line_without_a_traceback(
        fresh: Path, tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.toml", {"refresh": {"bogus": 1}})
    before_migrate = [
        (("accounts", "list"), 1), (("accounts", "reauth", "x"), 1), (("status",), 1),
        (("refresh", "x"), 1), (("refresh", "x", "--debug"), 1), (("rotate-keys",), 1),
        (("logs",), 1), (("logs", "--follow", "--source", "manual,debug"), 1),
        (("logs", "--source", "bogus"), 2),
        (("accounts", "add", "--provider", "nope", "--org", "o", "--name", "n"), 2),
    ]
    for args, code in before_migrate:
        one_line(cli(fresh, *args, stdin=TOKEN), code)
    assert not (tmp_path / "db" / "cli.db").exists()  # nothing created the database
    assert cli(fresh, "migrate").returncode == 0
    after_migrate = [
        (("accounts", "reauth", "x"), 1), (("refresh", "x"), 1), (("refresh", "x", "--debug"), 1),
        (("logs", "--follow"), 1), (("logs", "--source", ","), 2),
        (("accounts", "add", "--provider", "nope", "--org", "o", "--name", "n"), 2),
        (("accounts", "add", "--provider", "ebay-sandbox", "--org", "o", "--name", "n",
          "--refresh-token-expires-in", "-1"), 2),
        (("keygen", "--kid", "bad kid"), 2), (("rotate-keys", "--batch-size", "x"), 2),
    ]
    for args, code in after_migrate:
        result = cli(fresh, *args, stdin=TOKEN)
        if code == 2 and "--batch-size" in args:  # argparse's own usage error
            assert result.returncode == 2 and "Traceback" not in result.stderr
            continue
        one_line(result, code)
    for command in ("run", "status", "accounts list", "logs", "rotate-keys"):
        result = cli(bad, *command.split())
        assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    bad_database = write_config(tmp_path / "bad-db.toml", {"database": {"url": "mysql://x"}})
    assert "database.url" in one_line(cli(bad_database, "migrate"), 2)
    for command in ("run", "status", "logs"):
        one_line(cli(tmp_path / "absent.toml", command), 2)


def test_accounts_list_on_an_empty_database(migrated: Path) -> None:
    result = cli(migrated, "accounts", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["id", "org", "provider", "name", "state",
                                     "access_expires_at", "last_refresh_at",
                                     "refresh_expires_at", "consecutive_failures"]


def test_logs_reads_history_from_the_database_without_a_daemon(migrated: Path) -> None:
    assert cli(migrated, "accounts", "add", "--provider", "ebay-sandbox", "--org", "o",
               "--name", "n", "--id", "a1", stdin=TOKEN).returncode == 0
    assert cli(migrated, "refresh", "a1").returncode == 1  # nobody at the token URL
    result = cli(migrated, "logs")
    assert result.returncode == 0, result.stderr
    assert "token_refresh_failed" in result.stdout and "a1" in result.stdout
    assert "history below is from the database" in one_line(result, 0)
    result = cli(migrated, "logs", "--source", "scheduled,debug")
    assert result.returncode == 0 and "token_refresh_failed" not in result.stdout
    follow = cli(migrated, "logs", "--follow", "--source", "manual,debug")
    assert "token_refresh_failed" in follow.stdout  # the history, then a clear refusal
    assert "following needs a running daemon" in one_line(follow, 1)
    assert "(one of scheduled, manual" in one_line(cli(migrated, "logs", "--source", "bogus"), 2)


def test_status_and_friends_do_not_create_the_database(fresh: Path, tmp_path: Path) -> None:
    for args in (("status",), ("accounts", "list"), ("refresh", "x"), ("logs",)):
        line = one_line(cli(fresh, *args), 1)
        assert "run `tokend migrate`" in line
    assert not (tmp_path / "db").exists()


def test_status_without_config_does_not_create_the_default_database(tmp_path: Path) -> None:
    default = Path("/var/lib/tokend/tokend.db")
    existed = default.exists()
    result = subprocess.run([sys.executable, "-m", "tokend", "status"], cwd=tmp_path,
                            env=env(), capture_output=True, text=True, timeout=60, check=False)
    assert default.exists() == existed
    if not existed:
        assert f"no database at {default}" in one_line(result, 1)


def test_messages_name_the_problem_not_a_python_class(migrated: Path) -> None:
    assert one_line(cli(migrated, "refresh", "nope"), 1) == "tokend: no account 'nope'"
    add = ("accounts", "add", "--provider", "ebay-sandbox", "--org", "o", "--name", "n")
    first = cli(migrated, *add, stdin=TOKEN)
    assert first.returncode == 0
    existing = first.stdout.strip()
    line = one_line(cli(migrated, *add, stdin=TOKEN), 2)
    assert existing in line and "NotFound" not in line
    line = one_line(cli(migrated, "accounts", "add", "--provider", "nope", "--org", "o",
                        "--name", "n", stdin=TOKEN), 2)
    assert "(providers: ebay-sandbox)" in line
    for result in (cli(migrated, "refresh", "nope"), cli(migrated, "accounts", "reauth", "x")):
        assert "Error" not in result.stderr and "NotFound" not in result.stderr


def test_schema_errors_read_as_sentences(tmp_path: Path, key_lines: list[str]) -> None:
    path = daemon_config(tmp_path, db_url=f"sqlite://{tmp_path / 'empty.db'}",
                         key_line=key_lines[0], token_url="http://127.0.0.1:9/t")
    (tmp_path / "empty.db").touch()
    line = one_line(cli(path, "status"), 1)
    assert "SchemaError" not in line and "tokend migrate" in line


def test_a_missing_secret_file_says_where_it_was_looked_for(tmp_path: Path) -> None:
    path = write_config(tmp_path / "t.toml", {
        "providers.p": {"client_id": "i", "client_secret_file": "p-secret"}})
    line = one_line(cli(path, "status"), 2)
    assert "providers.p.client_secret_file" in line
    assert f"looked in {tmp_path}" in line and "CREDENTIALS_DIRECTORY is not set" in line
    creds = tmp_path / "creds"
    creds.mkdir()
    line = one_line(cli(path, "status", CREDENTIALS_DIRECTORY=str(creds)), 2)
    assert f"looked in {creds}, {tmp_path}" in line


def test_migrate_needs_only_the_database_section(tmp_path: Path, key_lines: list[str]) -> None:
    path = write_config(tmp_path / "t.toml", {
        "database": {"url": f"sqlite://{tmp_path / 'm.db'}"},
        "crypto": {"keys": [key_lines[0]]},
        "server": {"admin_token": "admin-token-0123456789abcdef"},
        "providers.p": {"client_id": "i", "client_secret_file": "absent-secret"}})
    result = cli(path, "migrate")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.db").exists()
    assert "providers.p.client_secret_file" in one_line(cli(path, "run"), 2)


def test_version() -> None:
    result = cli(Path("/dev/null"), "--version")
    assert result.returncode == 0 and result.stdout.strip().startswith("tokend ")
    assert result.stdout.split()[1][0].isdigit()


def test_every_option_has_help_text() -> None:
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(tokend_cli._parser(), "tokend")
    assert not missing, missing
