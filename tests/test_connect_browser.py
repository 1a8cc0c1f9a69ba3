"""Connect links in Debian's Chromium: the link, the simulator's consent page, the callback
page; then the loop refreshes the new account; a reconnect; a decline."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import connectflow
import pytest
from connectflow import create_link

from tokend import clock, model, vocabulary

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.timeout(60),
]


@pytest.fixture
async def page():
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            # A 4xx page logs "Failed to load resource"; anything else (a CSP violation) counts.
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error"
                    and not msg.text.startswith("Failed to load resource") else None)
            yield page
            assert problems == []
        finally:
            await browser.close()


async def consent_in_browser(page, url: str, button: str = "#agree") -> int:
    """Open the link, click on the consent page; the status of the page we end on."""
    await page.goto(url)
    await expect(page.locator("h1")).to_have_text("Grant application access")
    async with page.expect_navigation() as navigation:
        await page.click(button)
    return (await navigation.value).status


async def test_connect_refresh_and_reconnect_in_a_browser(store, keyring, page) -> None:
    async with connectflow.stack(store, keyring) as s:
        s.sim.expires_in = 2  # due a second after the exchange
        _, link = await create_link(s)
        assert await consent_in_browser(page, link["url"]) == 200
        await expect(page.locator("#title")).to_have_text("Account connected")
        (account,) = await store.list_accounts()
        await expect(page.locator("#details")).to_contain_text(account.id)
        await expect(page.locator("#details")).to_contain_text("sim-seller")
        assert account.state == model.ACTIVE

        await asyncio.sleep((account.next_attempt_at - clock.now()).total_seconds() + 0.05)
        await s.loop.cycle()
        refreshed = await store.get_account(account.id)
        assert refreshed.last_refresh_at > account.last_refresh_at
        (entry,) = await store.list_entries(action=vocabulary.TOKEN_REFRESHED)
        assert entry.account_id == account.id and entry.source == vocabulary.SCHEDULED

        await store.set_state(account.id, model.REAUTH_REQUIRED, clock.now())
        _, link = await create_link(s, account_id=account.id)
        assert await consent_in_browser(page, link["url"]) == 200
        await expect(page.locator("#title")).to_have_text("Account reconnected")
        (again,) = await store.list_accounts()
        assert (again.id, again.state) == (account.id, model.ACTIVE)

        await page.goto(link["url"])  # the link worked once
        await expect(page.locator("#title")).to_have_text("Link already used")


async def test_declining_in_a_browser_connects_nothing(store, keyring, page) -> None:
    async with connectflow.stack(store, keyring) as s:
        _, link = await create_link(s)
        assert await consent_in_browser(page, link["url"], "#decline") == 403
        await expect(page.locator("#title")).to_have_text("Consent declined")
        assert await store.list_accounts() == []
