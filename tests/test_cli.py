"""The accounts, keys and status commands, run as the operator would run them."""

from __future__ import annotations

import secrets
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from proc import cli, daemon_config

from tokend import crypto


@pytest.fixture
def config_path(tmp_path: Path, key_lines: list[str]) -> Path:
    path = daemon_config(tmp_path, db_url=f"sqlite://{tmp_path / 'cli.db'}",
                         key_line=key_lines[0], token_url="http://127.0.0.1:9/token")
    assert cli(path, "migrate").returncode == 0
    return path


def test_migrate_twice_is_a_no_op(config_path: Path) -> None:
    result = cli(config_path, "migrate")
    assert result.returncode == 0 and "applied 0 migration(s)" in result.stdout


def test_keygen_prints_a_usable_key_line() -> None:
    result = cli(Path("/dev/null"), "keygen", "--kid", "k9")
    kid, key = crypto.parse_key_line(result.stdout.strip())
    assert kid == "k9" and len(key) == 32
    assert cli(Path("/dev/null"), "keygen", "--kid", "bad kid").returncode == 2


def test_accounts_add_list_and_reauth(config_path: Path) -> None:
    token = "v^1.1#i^1#r^1#" + secrets.token_urlsafe(24)
    added = cli(config_path, "accounts", "add", "--provider", "ebay-sandbox", "--org", "acme",
                "--name", "main", "--scopes", "https://api.ebay.com/oauth/api_scope",
                "--refresh-token-expires-in", "47304000", stdin=token + "\n")
    assert added.returncode == 0, added.stderr
    account_id = added.stdout.strip()
    assert account_id.startswith("acct_")
    listed = cli(config_path, "accounts", "list", "--json")
    (row,) = orjson.loads(listed.stdout)
    assert row["id"] == account_id and row["state"] == "active"
    assert row["scopes"] == ["https://api.ebay.com/oauth/api_scope"]
    assert row["refresh_expires_at"] is not None
    assert "refresh_token" not in row and "access_token" not in row
    assert token not in listed.stdout
    table = cli(config_path, "accounts", "list")
    assert account_id in table.stdout and "active" in table.stdout
    reauth = cli(config_path, "accounts", "reauth", account_id,
                 stdin="v^1.1#new-" + secrets.token_hex(8))
    assert reauth.returncode == 0 and "active" in reauth.stdout


def added_expiry(config_path: Path, *flags: str) -> str | None:
    name = secrets.token_hex(4)
    added = cli(config_path, "accounts", "add", "--provider", "ebay-sandbox", "--org", "o",
                "--name", name, *flags, stdin="v^1.1#" + secrets.token_urlsafe(24))
    assert added.returncode == 0, added.stderr
    rows = orjson.loads(cli(config_path, "accounts", "list", "--json").stdout)
    (row,) = [r for r in rows if r["id"] == added.stdout.strip()]
    return row["refresh_expires_at"]


def test_accounts_add_takes_the_refresh_token_expiry_as_ebay_gives_it(
        config_path: Path) -> None:
    """Unknown unless told; eBay's 18 months from the consent date; eBay's answer's
    refresh_token_expires_in counted from consent; or the expiry itself."""
    assert added_expiry(config_path) is None
    consented = datetime.now(UTC) - timedelta(days=30)
    from_consent = datetime.fromisoformat(
        added_expiry(config_path, "--consented-at", consented.isoformat()))
    assert from_consent == consented + timedelta(seconds=47_304_000)
    day = (consented + timedelta(days=20)).date()  # a date alone: midnight UTC
    answered = datetime.fromisoformat(added_expiry(
        config_path, "--consented-at", day.isoformat(), "--refresh-token-expires-in", "47304000"))
    assert answered == datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        seconds=47_304_000)
    assert datetime.fromisoformat(added_expiry(
        config_path, "--refresh-token-expires-at", "2031-06-01T12:00:00.000Z",
    )) == datetime(2031, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(("flags", "problem"), [
    (("--consented-at", "yesterday"), "--consented-at: 'yesterday' is not an ISO 8601 time"),
    (("--consented-at", "2099-01-01"), "--consented-at: is in the future"),
    (("--consented-at", "2001-01-01"), "--consented-at: that refresh token has expired"),
    (("--refresh-token-expires-at", "2001-01-01"), "--refresh-token-expires-at: that refresh"),
    (("--refresh-token-expires-at", "2031-01-01", "--consented-at", "2026-01-01"),
     "--refresh-token-expires-at: give it alone"),
])
def test_accounts_add_refuses_an_expiry_it_cannot_mean(
        config_path: Path, flags: tuple[str, ...], problem: str) -> None:
    result = cli(config_path, "accounts", "add", "--provider", "ebay-sandbox", "--org", "o",
                 "--name", "n", *flags, stdin="v^1.1#" + secrets.token_urlsafe(24))
    assert result.returncode == 2 and problem in result.stderr, result.stderr
    assert orjson.loads(cli(config_path, "accounts", "list", "--json").stdout) == []


@pytest.mark.parametrize(("stdin", "problem"), [
    ("", "got nothing"),
    ("ENC:v1:k1:abc", "encrypted value"),
    ("not-an-ebay-token", "starts with 'v^'"),
])
def test_accounts_add_refuses_bad_tokens(config_path: Path, stdin: str, problem: str) -> None:
    result = cli(config_path, "accounts", "add", "--provider", "ebay-sandbox", "--org", "o",
                 "--name", "n", stdin=stdin)
    assert result.returncode == 2 and problem in result.stderr
    assert orjson.loads(cli(config_path, "accounts", "list", "--json").stdout) == []


def test_accounts_add_refuses_unknown_provider_and_duplicates(config_path: Path) -> None:
    result = cli(config_path, "accounts", "add", "--provider", "nope", "--org", "o",
                 "--name", "n", stdin="v^1.1#x")
    assert result.returncode == 2 and "--provider" in result.stderr
    args = ("accounts", "add", "--provider", "ebay-sandbox", "--org", "o", "--name", "n",
            "--id", "same")
    assert cli(config_path, *args, stdin="v^1.1#x").returncode == 0
    again = cli(config_path, *args, stdin="v^1.1#y")
    assert again.returncode == 2 and "already" in again.stderr.lower()


def test_reauth_and_refresh_of_unknown_account_fail(config_path: Path) -> None:
    assert cli(config_path, "accounts", "reauth", "nope", stdin="v^1.1#x").returncode == 1
    assert cli(config_path, "refresh", "nope").returncode == 1


def test_status_before_and_after_a_loop_ran(config_path: Path) -> None:
    result = cli(config_path, "status")
    assert result.returncode == 0 and "no loop has run yet" in result.stdout
    data = orjson.loads(cli(config_path, "status", "--json").stdout)
    assert data["loops"] == [] and set(data["accounts"].values()) == {0}


def test_rotate_keys_command(tmp_path: Path, config_path: Path, key_lines: list[str]) -> None:
    assert cli(config_path, "accounts", "add", "--provider", "ebay-sandbox", "--org", "o",
               "--name", "n", "--id", "a1", stdin="v^1.1#x").returncode == 0
    rotated = config_path.read_text().replace(
        f'keys = ["{key_lines[0]}"]', f'keys = ["{key_lines[1]}", "{key_lines[0]}"]')
    config_path.write_text(rotated)
    result = cli(config_path, "rotate-keys")
    assert result.returncode == 0, result.stderr
    assert "rotated 1, failed to decrypt 0" in result.stdout and "primary key k2" in result.stdout


def test_commands_need_a_migrated_database(tmp_path: Path, key_lines: list[str]) -> None:
    path = daemon_config(tmp_path, db_url=f"sqlite://{tmp_path / 'empty.db'}",
                         key_line=key_lines[0], token_url="http://127.0.0.1:9/token")
    result = cli(path, "accounts", "list")
    assert result.returncode == 1 and "tokend migrate" in result.stderr


def test_run_names_a_port_already_in_use(config_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config_path.write_text(config_path.read_text().replace("port = 0", f"port = {port}"))
        result = cli(config_path, "run")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
