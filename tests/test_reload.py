"""Secrets that change without a restart: a real `tokend run` re-reads its secret files on
SIGHUP (and, with `--watch-secrets`, when Kubernetes swaps them in place); a file that does
not parse is refused with one line and the running values stay."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import secrets
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import standardwebhooks
import webstack
from kit import PROVIDER, refresh_token, seed, wait_until
from proc import Daemon, toml_value
from webhook_receiver import Receiver, new_secret

import tokend.store as st
from tokend import clock, config, crypto, model, reload, store
from tokend.testing import simulator
from tokend.web import common

pytestmark = pytest.mark.timeout(120)

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "tokend.service"
RELOAD_EVENTS = ("config_reloaded", "config_reload_refused")


def token() -> str:
    return "tok-" + secrets.token_urlsafe(24)


def put(folder: Path, name: str, value: str) -> None:
    (folder / name).write_text(value + "\n")


def write_config(folder: Path, *, db_url: str, token_url: str, webhook_url: str | None = None,
                 **refresh: Any) -> Path:
    """Every secret a `*_file` beside the config (where relative names resolve)."""
    settings = {"interval_seconds": 0.5, "request_timeout_seconds": 5, "lease_seconds": 30,
                "shutdown_grace_seconds": 10, **refresh}
    lines = ["[database]", f"url = {toml_value(db_url)}", "", "[refresh]",
             *(f"{k} = {toml_value(v)}" for k, v in settings.items()), "",
             "[crypto]", 'keys_file = "keys"', "",
             "[server]", 'host = "127.0.0.1"', "port = 0",
             'admin_token_file = "admin-token"', 'consumer_token_file = "consumer-token"', "",
             "[server.org_tokens]", 'acme_file = "acme-token"', "",
             f"[providers.{PROVIDER}]", 'type = "ebay"', 'environment = "sandbox"',
             f"token_url = {toml_value(token_url)}",
             f"client_id = {toml_value(simulator.DEFAULT_CLIENT_ID)}",
             'client_secret_file = "client-secret"', ""]
    if webhook_url:
        lines += ["[[webhooks]]", f"url = {toml_value(webhook_url)}", 'name = "receiver"',
                  'secret_file = "webhook-secret"', "timeout_seconds = 2",
                  "backoff_base_seconds = 0.1", "backoff_max_seconds = 0.5", ""]
    path = folder / "tokend.toml"
    path.write_text("\n".join(lines))
    return path


def fresh(key_lines: list[str], **overrides: str) -> dict[str, str]:
    """A value for every secret file of `write_config`, by file name."""
    return {"keys": key_lines[0], "admin-token": token(), "consumer-token": token(),
            "acme-token": token(), "client-secret": simulator.DEFAULT_CLIENT_SECRET,
            "webhook-secret": new_secret(), **overrides}


def secret_files(folder: Path, key_lines: list[str], **overrides: str) -> dict[str, str]:
    values = fresh(key_lines, **overrides)
    for name, value in values.items():
        put(folder, name, value)
    return values


def reload_events(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("event") in RELOAD_EVENTS]


async def hup(daemon: Daemon) -> dict[str, Any]:
    """SIGHUP, then the one line that answers it."""
    before = len(reload_events(daemon))
    daemon.signal(signal.SIGHUP)
    await wait_until(lambda: len(reload_events(daemon)) > before, 20)
    answers = reload_events(daemon)[before:]
    assert len(answers) == 1, answers
    return answers[0]


async def status(http: aiohttp.ClientSession, url: str, bearer: str) -> int:
    async with http.get(url, headers={"Authorization": f"Bearer {bearer}"}) as response:
        return response.status


async def add_account(db_url: str, keyring: crypto.Keyring, account_id: str,
                      token: str | None = None) -> None:
    db = await store.connect(db_url)
    try:
        await db.add_account(model.NewAccount(
            id=account_id, org="acme", provider=PROVIDER, name=account_id, scopes=(),
            refresh_token=keyring.encrypt(token or refresh_token(), account_id=account_id,
                                          column="refresh_token"),
            refresh_expires_at=None), clock.now())
    finally:
        await db.close()


async def accounts(db_url: str) -> dict[str, model.Account]:
    db = await store.connect(db_url)
    try:
        return {a.id: a for a in await db.list_accounts()}
    finally:
        await db.close()


async def test_sighup_rotates_the_api_tokens_and_refuses_what_does_not_parse(
        tmp_path: Path, sqlite_url: str, key_lines: list[str]) -> None:
    old = secret_files(tmp_path, key_lines)
    config_path = write_config(tmp_path, db_url=sqlite_url, token_url="http://127.0.0.1:9/x")
    daemon = Daemon(config_path, tmp_path / "daemon.log")
    try:
        base = await daemon.url()
        accounts_url, vend_url = f"{base}/api/accounts", f"{base}/api/accounts/nobody/access-token"
        async with aiohttp.ClientSession() as http:
            assert await status(http, accounts_url, old["admin-token"]) == 200
            assert await status(http, accounts_url, old["acme-token"]) == 200
            assert await status(http, vend_url, old["consumer-token"]) == 404  # known token

            new = {name: token() for name in ("admin-token", "acme-token", "consumer-token")}
            for name, value in new.items():
                put(tmp_path, name, value)
            answer = await hup(daemon)
            assert answer["event"] == "config_reloaded"
            assert answer["changed"] == ["server.admin_token", "server.consumer_token",
                                         "server.org_tokens.acme"]
            for name in new:
                assert await status(http, accounts_url if name != "consumer-token" else vend_url,
                                    old[name]) == 401
            assert await status(http, accounts_url, new["admin-token"]) == 200
            assert await status(http, accounts_url, new["acme-token"]) == 200
            assert await status(http, vend_url, new["consumer-token"]) == 404

            # A keys file that does not parse spoils the whole reload: the admin token
            # rotated beside it is not taken either.
            newest = token()
            put(tmp_path, "admin-token", newest)
            put(tmp_path, "keys", "k3:not-base64!")
            answer = await hup(daemon)
            assert answer["event"] == "config_reload_refused"
            assert answer["key"] == "crypto.keys"
            assert await status(http, accounts_url, new["admin-token"]) == 200
            assert await status(http, accounts_url, newest) == 401
            put(tmp_path, "keys", key_lines[0])
            (tmp_path / "acme-token").unlink()
            answer = await hup(daemon)
            assert answer["event"] == "config_reload_refused"
            assert answer["key"] == "server.org_tokens.acme_file"
            assert "acme-token" in answer["error"]
            config_path.write_text(config_path.read_text() + "\n[server\n")
            answer = await hup(daemon)
            assert (answer["event"], answer["key"]) == ("config_reload_refused", "--config")
            assert await status(http, accounts_url, new["acme-token"]) == 200

            # Fixed, with a setting that only a restart applies.
            put(tmp_path, "acme-token", new["acme-token"])
            config_path.write_text(config_path.read_text().removesuffix("\n[server\n")
                                   .replace("interval_seconds = 0.5", "interval_seconds = 7"))
            answer = await hup(daemon)
            assert answer["event"] == "config_reloaded"
            assert answer["changed"] == ["server.admin_token"]
            assert await status(http, accounts_url, newest) == 200
            restart = [e for e in daemon.events() if e.get("event") == "config_restart_needed"]
            assert [e["keys"] for e in restart] == [["refresh.interval_seconds"]]
            assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    finally:
        daemon.kill()
    log_text = daemon.log_path.read_text()
    for value in [*old.values(), *new.values(), newest, key_lines[0].split(":")[1]]:
        assert value not in log_text


async def test_a_new_primary_key_seals_what_is_saved_next_and_old_rows_still_open(
        tmp_path: Path, db_url: str, keyring: crypto.Keyring,
        rotated_keyring: crypto.Keyring, key_lines: list[str]) -> None:
    """SIGHUP while refreshes are in flight: every answer is saved, under the new key."""
    await seed(db_url, keyring, 12)
    secret_files(tmp_path, key_lines)
    async with simulator.Simulator(latency_seconds=1.5, rotate=True) as sim:
        config_path = write_config(tmp_path, db_url=db_url, token_url=sim.token_url,
                                   concurrency=4)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            await daemon.url()
            await wait_until(lambda: sim.stats()["in_flight"] >= 4, 20, 0.01)
            put(tmp_path, "keys", "\n".join([key_lines[1], key_lines[0]]))
            answer = await hup(daemon)
            assert answer["changed"] == ["crypto.keys"]
            assert answer["primary_kid"] == "k2"

            async def all_saved() -> bool:
                rows = await accounts(db_url)
                return all(a.access_token is not None for a in rows.values())

            await wait_until(all_saved, 60, 0.2)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()
        answered = sim.stats()["successes"]
    rows = await accounts(db_url)
    assert answered == len(rows) == 12  # the four in flight at the reload were kept too
    for account in rows.values():
        assert account.state == "active"
        for column in ("refresh_token", "access_token"):
            sealed = getattr(account, column)
            assert sealed.startswith(crypto.PREFIX + "k2:")
            rotated_keyring.decrypt(sealed, account_id=account.id, column=column)


async def test_a_rotated_webhook_secret_signs_the_next_delivery(
        tmp_path: Path, db_url: str, keyring: crypto.Keyring, key_lines: list[str]) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver:
        secret_files(tmp_path, key_lines, **{"webhook-secret": receiver.secret})
        config_path = write_config(tmp_path, db_url=db_url, token_url=sim.token_url,
                                   webhook_url=receiver.url)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            await daemon.url()

            async def reauth(account_id: str) -> None:
                revoked = refresh_token()
                sim.revoke(revoked)
                await add_account(db_url, keyring, account_id, revoked)
                await wait_until(lambda: any(r["payload"]["data"].get("account_id") == account_id
                                             for r in receiver.received), 30, 0.1)

            await reauth("before")
            rotated = new_secret()
            receiver.secret, receiver.verifier = rotated, standardwebhooks.Webhook(rotated)
            put(tmp_path, "webhook-secret", rotated)
            answer = await hup(daemon)
            assert answer["changed"] == ["webhooks.receiver.secret"]
            await reauth("after")
            assert receiver.bad_signatures == 0
        finally:
            daemon.kill()


async def test_a_rotated_client_secret_is_sent_from_the_next_call(
        tmp_path: Path, sqlite_url: str, keyring: crypto.Keyring, key_lines: list[str]) -> None:
    rotated = "rotated-" + secrets.token_urlsafe(16)
    secret_files(tmp_path, key_lines)
    async with simulator.Simulator() as sim:
        config_path = write_config(tmp_path, db_url=sqlite_url, token_url=sim.token_url)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            await daemon.url()
            put(tmp_path, "client-secret", rotated)
            answer = await hup(daemon)
            assert answer["changed"] == [f"providers.{PROVIDER}.client_secret"]
            # The provider now knows only the new secret: a call with the old one fails.
            sim.client_secret = rotated
            await add_account(sqlite_url, keyring, "acct")

            async def refreshed() -> bool:
                return (await accounts(sqlite_url))["acct"].access_token is not None

            await wait_until(refreshed, 30, 0.1)
            assert sim.stats()["successes"] == 1
        finally:
            daemon.kill()
        expected = base64.b64encode(f"{simulator.DEFAULT_CLIENT_ID}:{rotated}".encode()).decode()
        assert expected not in daemon.log_path.read_text()


async def test_the_watch_takes_a_secret_that_kubernetes_swapped_in_place(
        tmp_path: Path, sqlite_url: str, key_lines: list[str]) -> None:
    """The kubelet writes a Secret's new files into a fresh folder and renames the `..data`
    symlink onto it; each file is a symlink through `..data`."""
    mount = tmp_path / "secrets"
    mount.mkdir()

    def publish(generation: int, values: dict[str, str]) -> None:
        folder = mount / f"..gen_{generation}"
        folder.mkdir()
        for name, value in values.items():
            put(folder, name, value)
        (mount / "..data_tmp").symlink_to(folder.name)
        os.replace(mount / "..data_tmp", mount / "..data")
        for name in values:
            if not (mount / name).is_symlink():
                (mount / name).symlink_to(f"..data/{name}")

    first = fresh(key_lines)
    publish(1, first)
    config_path = write_config(tmp_path, db_url=sqlite_url, token_url="http://127.0.0.1:9/x")
    daemon = Daemon(config_path, tmp_path / "daemon.log", "--watch-secrets", "0.2",
                    CREDENTIALS_DIRECTORY=str(mount))
    try:
        url = f"{await daemon.url()}/api/accounts"
        async with aiohttp.ClientSession() as http:
            assert await status(http, url, first["admin-token"]) == 200
            await asyncio.sleep(1)  # several quiet looks
            assert reload_events(daemon) == []
            second = {**first, "admin-token": token()}
            publish(2, second)
            await wait_until(lambda: reload_events(daemon), 20)
            (answer,) = reload_events(daemon)
            assert (answer["changed"], answer["reason"]) == (["server.admin_token"], "watch")
            assert await status(http, url, first["admin-token"]) == 401
            assert await status(http, url, second["admin-token"]) == 200
            # A broken file is said once however many times the watch looks at it.
            publish(3, {**second, "keys": "garbage"})
            await wait_until(lambda: len(reload_events(daemon)) == 2, 20)
            await asyncio.sleep(1)
            assert [e["event"] for e in reload_events(daemon)] == [
                "config_reloaded", "config_reload_refused"]
            assert await status(http, url, second["admin-token"]) == 200
    finally:
        daemon.kill()


def test_the_unit_reloads_with_sighup() -> None:
    lines = UNIT.read_text().splitlines()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines



def test_only_the_secrets_of_what_runs_are_taken_the_rest_needs_a_restart(
        tmp_path: Path, key_lines: list[str]) -> None:
    def parse(providers: dict[str, str], **server: Any) -> config.Config:
        return config.parse({
            "crypto": {"keys": key_lines[:1]}, "server": {"admin_token": "a" * 16, **server},
            "providers": {name: {"client_id": "id", "client_secret": secret}
                          for name, secret in providers.items()}}, tmp_path)

    running = reload.Secrets(parse({"ebay": "old-secret"},
                                   org_tokens={"acme": "acme-token-0123456789"}))
    new = parse({"ebay": "new-secret", "other": "other-secret"}, port=9999, org_tokens={})
    restart = running.needs_restart(new)
    assert "server.port" in restart
    assert "providers.other.client_secret" in restart  # a provider added: restart
    assert not [k for k in restart if k.startswith(("providers.ebay", "server.org_tokens"))]

    assert running.take(new, new.crypto.keyring()) == [
        "providers.ebay.client_secret", "server.org_tokens.acme"]
    assert running.client_secrets == {"ebay": "new-secret"}
    assert running.server.org_tokens == {}  # the removed org token no longer opens
    assert running.server.port == running.started.server.port
    gone = parse({})  # a provider removed from the file runs on until a restart
    assert running.take(gone, gone.crypto.keyring()) == []
    assert running.client_secret("ebay") == "new-secret"
    assert "providers.ebay.client_id" in running.needs_restart(gone)


async def test_the_app_token_cache_renews_with_the_rotated_client_secret(
        store: st.Store, keyring: crypto.Keyring) -> None:
    """The application token (client_credentials) goes through the same provider client."""
    rotated = "rotated-" + secrets.token_urlsafe(16)
    path = f"/api/providers/{webstack.PROVIDER}/app-token"
    async with webstack.running(store, keyring) as stack:
        stack.sim.client_secret = rotated
        status, _ = await stack.get_json(path, token=webstack.CONSUMER)
        assert status != 200  # the old secret is refused
        cfg = dataclasses.replace(stack.cfg, providers={
            name: dataclasses.replace(p, client_secret=rotated)
            for name, p in stack.cfg.providers.items()})
        changed = stack.app[common.SECRETS].take(cfg, keyring)
        assert changed == [f"providers.{webstack.PROVIDER}.client_secret"]
        status, body = await stack.get_json(path, token=webstack.CONSUMER)
        assert status == 200, body
        assert stack.sim.app_token_grants == 1
