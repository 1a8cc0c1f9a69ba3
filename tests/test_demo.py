"""`tokend demo` shows a newcomer every kind of entry through the live stream."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
import pytest
from proc import env

pytestmark = pytest.mark.timeout(120)
WANTED = {"token_refreshed", "worker_heartbeat", "invalid_grant", "decrypt_failed",
          "reauth_required", "deleted"}


@contextlib.asynccontextmanager
async def demo(seconds: int) -> AsyncIterator[tuple[str, str, str]]:
    """`tokend demo` as a newcomer runs it: its banner's base URL and admin token; after the
    block, Ctrl-C and a clean exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokend", "demo", "--port", "0", "--seconds", str(seconds),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env())
    try:
        banner = ""
        async with asyncio.timeout(30):
            while "Ctrl-C" not in banner:
                banner += (await proc.stdout.readline()).decode()
        url = re.search(r"terminal\s+(http://\S+)/terminal", banner).group(1)
        token = re.search(r"admin token\s+(\S+)", banner).group(1)
        yield url, token, banner
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0


def kind_of(entry: dict) -> str | None:
    if entry["action"] in ("token_refreshed", "worker_heartbeat"):
        return entry["action"]
    if entry["action"] == "ebay_notification":  # what a signed notification did
        return (entry.get("details") or {}).get("outcome")
    return (entry.get("error") or {}).get("code")


async def test_demo_shows_refreshes_heartbeat_failures_and_ebay_notifications() -> None:
    async with demo(90) as (url, token, _):
        seen: dict[str, dict] = {}
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{url}/ws/logs", headers={"Origin": url}) as ws:
            await ws.send_json({"type": "hello", "token": token, "since": None, "sources": []})
            async with asyncio.timeout(85):
                while len(seen) < len(WANTED):
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
        assert seen["reauth_required"]["account_id"] == "acct_08"
        assert seen["reauth_required"]["details"]["revoke_reason"] == "REVOKED_BY_USER"
        assert seen["deleted"]["account_id"] == "acct_11"
        assert (states["acct_08"], states["acct_11"]) == ("reauth_required", "deleted")


async def test_the_demo_prints_a_connect_link_that_works() -> None:
    """The browser's walk over plain HTTP: link -> consent page -> Agree -> callback."""
    async with demo(60) as (url, token, banner):
        link = re.search(r"connect\s+(http://\S+/connect/\S+)", banner).group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(link) as consent_page:  # follows the redirect
                assert consent_page.status == 200
                assert "Grant application access" in await consent_page.text()
                form = dict(urllib.parse.parse_qsl(consent_page.url.query_string))
            async with http.post(consent_page.url.with_query(None),
                                 data={**form, "decision": "accept"}) as page:
                assert page.status == 200
                assert "Account connected" in await page.text()
            async with http.get(f"{url}/api/accounts",
                                headers={"Authorization": f"Bearer {token}"}) as response:
                accounts = (await response.json())["accounts"]
        (connected,) = [a for a in accounts if a["provider_user_name"] == "sim-seller"]
        assert connected["state"] == "active" and connected["org"] == "demo"


async def test_the_expiring_seller_stays_expiring_after_several_cycles() -> None:
    """Like eBay, the demo's provider hands out no new refresh token on a refresh: the
    seller seeded with 5 days left is refreshed and still shown as expiring cycles later."""
    expiring = "acct_09"
    async with demo(100) as (url, token, banner):
        assert banner.index(f"console      {url}/\n") < banner.index("terminal     ")
        cycles_after_refresh, refreshed = 0, False
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{url}/ws/logs", headers={"Origin": url}) as ws:
            await ws.send_json({"type": "hello", "token": token, "since": None, "sources": []})
            async with asyncio.timeout(95):
                while cycles_after_refresh < 3:
                    message = await ws.receive_json()
                    batch = (message["entries"] if message.get("type") == "entries"
                             else [message] if message.get("type") == "entry" else [])
                    for entry in batch:
                        if (entry["action"] == "token_refreshed"
                                and entry["account_id"] == expiring):
                            refreshed = True
                            assert "refresh_token" not in (entry["response"]["body"] or {})
                        elif refreshed and entry["action"] in ("worker_heartbeat",
                                                               "cycle_summary"):
                            cycles_after_refresh += 1
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{url}/api/accounts", headers=headers) as response:
                shown = {a["id"]: a for a in (await response.json())["accounts"]}
            async with session.get(f"{url}/loop-status") as response:
                loop_status = await response.json()
        seller = shown[expiring]
        assert seller["state"] == "active" and seller["last_refresh_at"] is not None
        left = (datetime.fromisoformat(seller["refresh_expires_at"])
                - datetime.fromisoformat(seller["last_refresh_at"]))
        assert timedelta(days=4) < left < timedelta(days=5)
        assert loop_status["refresh_tokens_expiring"]["within_7_days"] == 1
