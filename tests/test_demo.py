"""`tokend demo` shows a newcomer every kind of entry through the live stream."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import aiohttp
import pytest
from proc import env

pytestmark = pytest.mark.timeout(120)
WANTED = {"token_refreshed", "worker_heartbeat", "invalid_grant", "decrypt_failed"}


def kind_of(entry: dict) -> str | None:
    if entry["action"] in ("token_refreshed", "worker_heartbeat"):
        return entry["action"]
    return (entry.get("error") or {}).get("code")


async def test_demo_shows_refreshes_heartbeat_invalid_grant_and_decrypt_failed() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokend", "demo", "--port", "0", "--seconds", "90",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env())
    try:
        banner = ""
        async with asyncio.timeout(30):
            while "Ctrl-C" not in banner:
                banner += (await proc.stdout.readline()).decode()
        url = re.search(r"terminal\s+(http://\S+)/terminal", banner).group(1)
        token = re.search(r"admin token\s+(\S+)", banner).group(1)
        seen: dict[str, dict] = {}
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{url}/ws/logs", headers={"Origin": url}) as ws:
            await ws.send_json({"type": "hello", "token": token, "since": None, "sources": []})
            async with asyncio.timeout(85):
                while len(seen) < 4:
                    message = await ws.receive_json()
                    batch = (message["entries"] if message.get("type") == "entries"
                             else [message] if message.get("type") == "entry" else [])
                    for entry in batch:
                        if (kind := kind_of(entry)) in WANTED:
                            seen.setdefault(kind, entry)
        assert seen["decrypt_failed"]["request"] is None  # nothing was sent
        assert seen["invalid_grant"]["response"]["status"] == 400
        assert seen["token_refreshed"]["source"] == "scheduled"
        assert seen["worker_heartbeat"]["message"] == "no accounts need token refresh"
        async with aiohttp.ClientSession() as session, session.get(f"{url}/api/accounts",
                               headers={"Authorization": f"Bearer {token}"}) as response:
            states = {a["id"]: a["state"] for a in (await response.json())["accounts"]}
        assert states["acct_03"] == "reauth_required"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
