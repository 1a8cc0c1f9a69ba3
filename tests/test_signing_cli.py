"""`tokend ebay signing-key create|import|list` as child processes, then a `tokend run`
daemon that did not create the key signing with it; the private key shows up in no
output, log line, answer or table (PostgreSQL, dumped whole)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson
import proc
import yarl
from test_security import dump_tables
from test_signatures import ED25519_JWE, ED25519_PEM

from tokend import crypto
from tokend.ebay import signatures, signing
from tokend.testing import simulator

CONSUMER = "consumer-token-for-signing-tests-0123"
PROVIDER = "ebay-sandbox"


async def signed_entries(http: aiohttp.ClientSession, url: str, timeout: float = 10.0) -> str:
    """The vend log once it holds a signature's entry (entries are written in batches, off
    the signing path), or as it stands at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with http.get(f"{url}/api/logs?source=vend",
                            headers={"Authorization": f"Bearer {proc.ADMIN_TOKEN}"}) as logs:
            text = await logs.text()
        if '"request_signed"' in text or loop.time() > deadline:
            return text
        await asyncio.sleep(0.05)


def config(tmp_path: Path, pg_url: str, key_line: str, sim: simulator.Simulator) -> Path:
    return proc.write_config(tmp_path / "tokend.toml", {
        "database": {"url": pg_url},
        "refresh": {"interval_seconds": 0.5, "request_timeout_seconds": 5,
                    "lease_seconds": 30, "shutdown_grace_seconds": 5},
        "crypto": {"keys": [key_line]},
        "server": {"host": "127.0.0.1", "port": 0, "admin_token": proc.ADMIN_TOKEN,
                   "consumer_token": CONSUMER},
        f"providers.{PROVIDER}": {"type": "ebay", "environment": "sandbox",
                                  "token_url": sim.token_url,
                                  "key_management_url": sim.key_management_url,
                                  "client_id": simulator.DEFAULT_CLIENT_ID,
                                  "client_secret": simulator.DEFAULT_CLIENT_SECRET},
    })


async def test_cli_keys_and_a_daemon_that_signs_with_them(tmp_path, pg_url, key_lines):
    keyring = crypto.Keyring.from_lines(key_lines[:1])
    outputs: list[str] = []

    async def cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
        done = await proc.acli(path, *args, stdin=stdin)
        outputs.extend((done.stdout, done.stderr))
        return done.returncode, done.stdout, done.stderr

    async with simulator.Simulator() as sim, aiohttp.ClientSession() as http:
        path = config(tmp_path, pg_url, key_lines[0], sim)
        jwe_file = tmp_path / "key.jwe"
        jwe_file.write_text(ED25519_JWE + "\n")
        rc, out, err = await cli("ebay", "signing-key", "import", "--provider", PROVIDER,
                                 "--signing-key-id", "imported-1", "--jwe-file", str(jwe_file),
                                 stdin=ED25519_PEM)
        assert (rc, out.strip()) == (0, "imported-1"), err
        rc, _, err = await cli("ebay", "signing-key", "import", "--provider", PROVIDER,
                               "--signing-key-id", "imported-2", "--jwe-file", str(jwe_file),
                               stdin="MC4CAQAwBQYDK2VwBCIEIJ+not+a+key")
        assert rc == 2 and "private key" in err and "MC4C" not in err
        rc, _, err = await cli("ebay", "signing-key", "create", "--provider", "nope")
        assert rc == 2 and "--provider" in err
        rc, out, err = await cli("ebay", "signing-key", "create", "--provider", PROVIDER)
        assert rc == 0, err
        created = out.strip()
        assert sim.signing_keys == {created: signatures.ED25519}
        rc, out, _ = await cli("ebay", "signing-key", "list", "--json")
        listing = {k["signing_key_id"]: k for k in orjson.loads(out)}
        assert listing[created]["in_use"] and not listing["imported-1"]["in_use"]
        assert {k["cipher"] for k in listing.values()} == {"ED25519"}
        rc, out, _ = await cli("ebay", "signing-key", "list")
        assert rc == 0 and created in out and "in_use" in out

        daemon = proc.Daemon(path, tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            target = sim.finances_url + "transaction?limit=20"
            async with http.post(f"{url}/api/providers/{PROVIDER}/signature",
                                 json={"method": "GET", "url": target},
                                 headers={"Authorization": f"Bearer {CONSUMER}"}) as answer:
                assert answer.status == 200
                signed = await answer.json()
                outputs.append(orjson.dumps(signed).decode())
            assert signed["signing_key_id"] == created
            async with http.get(yarl.URL(target, encoded=True), headers={
                    **signed["headers"], "Authorization": "Bearer v^1.1#sim"}) as response:
                assert response.status == 200, await response.text()
            outputs.append(await signed_entries(http, url))
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()
        stdout = daemon.log_path.read_text()
        tables = await dump_tables(pg_url)

    assert '"request_signed"' in outputs[-1]
    assert "signing_key_loaded" in stdout
    rows = [line for line in tables.splitlines() if created in line and "ENC:v1:" in line]
    assert rows, "the created key is not kept sealed"
    for key_id in ("imported-1", created):
        row = next(line for line in tables.splitlines()
                   if f"'id': '{key_id}'" in line and "ENC:v1:" in line)
        envelope = row.split("'private_key': '")[1].split("'")[0]
        text = keyring.decrypt(envelope, account_id=signing.aad_id(key_id),
                               column=signing.COLUMN)
        body = "".join(text.splitlines()[1:-1])
        raw = signatures.load_private_key(text)[0].private_bytes_raw()
        for shape in (body, body[-24:], body[16:40], raw.hex()):
            for where, text_ in (("cli", "\n".join(outputs)), ("daemon stdout", stdout),
                                 ("tables", tables)):
                assert shape not in text_, f"{key_id}'s private key in {where}"
