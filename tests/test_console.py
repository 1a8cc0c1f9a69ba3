"""The console page in headless Chromium (Debian's, no download): login, the loop card,
accounts in every state, paging 1,000 accounts, filters, a debug refresh, disable/enable
seen by the loop, resuming a paused provider, View log, an org token, and axe-core."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import webstack
from kit import execute_sql
from test_terminal import ARTIFACTS, CHROMIUM, VIEWPORTS, browser, serious_violations

from tokend import clock

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

__all__ = ["browser"]  # the shared Chromium fixture

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]
STATES = {"acme-ok": "active", "acme-failing": "failing", "acme-reauth": "reauth_required",
          "acme-off": "disabled", "acme-gone": "deleted"}


async def seed_states(s, db_url: str) -> None:
    """One account in each state, a loop that has turned, and a paused provider."""
    await webstack.add_account(s.db, s.keyring, "acme-ok")
    await s.worker.refresh_now("acme-ok")
    await s.loop.cycle()
    revoked = webstack.refresh_token()
    s.sim.revoke(revoked)
    await webstack.add_account(s.db, s.keyring, "acme-reauth", token=revoked)
    await s.worker.refresh_now("acme-reauth")
    for account_id in ("acme-failing", "acme-off", "acme-gone"):
        await webstack.add_account(s.db, s.keyring, account_id)
    await s.db.set_state("acme-off", "disabled", clock.now())
    soon = clock.now().timestamp() + 3600
    await execute_sql(db_url, "UPDATE accounts SET consecutive_failures = 2, "
                      f"last_error = 'server_error', next_attempt_at = {soon}, "
                      f"refresh_expires_at = {soon + 86400 * 12} WHERE id = 'acme-failing'")
    await execute_sql(db_url, "UPDATE accounts SET state = 'deleted', refresh_token = NULL "
                      "WHERE id = 'acme-gone'")
    await webstack.add_account(s.db, s.keyring, "globex-1", "globex")
    await execute_sql(db_url, f"UPDATE accounts SET next_attempt_at = {soon} "
                      "WHERE id = 'globex-1'")
    await s.db.pause_provider(webstack.PROVIDER, clock.now() + timedelta(hours=1),
                              "invalid_client")


async def open_console(browser, url: str, token: str = webstack.ADMIN, viewport="desktop"):
    page = await browser.new_page(viewport=VIEWPORTS[viewport])
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url + "/")
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#token", token)
    await page.press("#token", "Enter")
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    return page, errors


def row(page, account_id: str):
    return page.locator(f'#account-rows tr[data-id="{account_id}"]')


async def test_the_console_end_to_end(store, keyring, browser, db_url):
    async with webstack.running(
            store, keyring, server={"public_url": "http://127.0.0.1:9"},
            provider={"authorize_url": "http://127.0.0.1:9/oauth2/authorize",
                      "redirect_uri": "tokend-test-RuName"}) as s:
        await seed_states(s, db_url)
        page, errors = await open_console(browser, s.url)

        loop_card = page.locator("#loops .loop")
        await expect(loop_card).to_have_count(1)
        await expect(loop_card).to_contain_text(webstack.INSTANCE)
        await expect(loop_card).to_contain_text("checked 0, refreshed 0, errors 0")
        await expect(loop_card.locator(".flag")).to_have_text("ok")
        for account_id, state in STATES.items():
            await expect(row(page, account_id).locator(".state")).to_have_text(state)
        await expect(row(page, "acme-failing")).to_contain_text("server_error")
        await expect(row(page, "acme-failing").locator(".refresh-expiry.soon")).to_have_count(1)
        await expect(row(page, "acme-ok").locator(".expiry")).to_contain_text("in 1h 59m")
        # A reconnect link for the account that needs a new sign-in, made by the API.
        await row(page, "acme-reauth").locator("[data-action=connect-link]").click()
        await expect(page.locator("#toast")).to_contain_text(
            re.compile(r"reconnect link for acme-reauth copied|link: http://\S+/connect/"))

        # The paused provider: why and until when, then Resume.
        provider = page.locator("#providers .provider")
        await expect(provider).to_contain_text("PAUSED")
        await expect(provider).to_contain_text("invalid_client")
        await expect(provider).to_contain_text("calls today 2 / 50,000")
        await provider.get_by_role("button", name=f"Resume {webstack.PROVIDER}").click()
        await expect(provider.locator(".flag")).to_have_text("running")
        assert await s.db.paused_providers(clock.now()) == {}

        # A debug refresh: the masked exchange in the panel.
        await row(page, "acme-ok").get_by_role("button", name="Refresh with debug acme-ok").click()
        panel = page.locator("#debug-result")
        await expect(panel).to_be_visible()
        await expect(panel).to_contain_text("refreshed")
        await expect(panel).to_contain_text("=== HTTP REQUEST ===")
        await expect(panel).to_contain_text("Basic ****")
        await expect(page.locator("#recent")).to_contain_text("token_refresh_debug")
        await page.screenshot(path=str(ARTIFACTS / "console-desktop.png"), full_page=True)

        # Disable: the loop passes it by; Enable: the next cycle refreshes it.
        await webstack.add_account(s.db, s.keyring, "acme-new")
        await page.fill("#q", "acme-new")
        await expect(page.locator("#account-rows tr")).to_have_count(1)
        await row(page, "acme-new").get_by_role("button", name="Disable acme-new").click()
        await expect(row(page, "acme-new").locator(".state")).to_have_text("disabled")
        # The row is drawn again; the keyboard focus stays in it, on the button now there.
        await expect(row(page, "acme-new").get_by_role("button", name="Enable acme-new")
                     ).to_be_focused()
        calls = s.sim.calls
        await s.loop.cycle()
        assert s.sim.calls == calls
        await row(page, "acme-new").get_by_role("button", name="Enable acme-new").click()
        await expect(row(page, "acme-new").locator(".state")).to_have_text("active")
        await s.loop.cycle()
        assert s.sim.calls == calls + 1
        # The refresh arrives on the stream and the row follows without a reload.
        last_refresh = row(page, "acme-new").locator("td[data-label='last refresh']")
        await expect(last_refresh).to_contain_text("ago")

        # View log: the terminal, filtered to the account, already logged in.
        await row(page, "acme-new").get_by_role("link", name="View log of acme-new").click()
        await expect(page).to_have_url(f"{s.url}/terminal?q=acme-new")
        await expect(page.locator("#filter")).to_have_value("acme-new")
        visible = page.locator(".entry:visible")
        await expect(visible.first).to_contain_text("acme-new")
        for text in await visible.all_inner_texts():
            assert "acme-new" in text
        await page.close()
    assert errors == []


async def test_paging_1000_accounts_filters_and_an_org_token(store, keyring, browser, db_url):
    async with webstack.running(store, keyring) as s:
        await execute_sql(db_url, """
            INSERT INTO accounts (id, org, provider, name, scopes, refresh_token,
                                  next_attempt_at, created_at, updated_at,
                                  consecutive_failures, last_error)
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999)
            SELECT printf('bulk-%04d', i), CASE WHEN i % 10 = 0 THEN 'globex' ELSE 'acme' END,
                   'ebay-sandbox', printf('seller-%04d', i), '[]', 'ENC:v1:k1:none',
                   1e10, 0, 0, i % 7, CASE WHEN i % 7 > 0 THEN 'server_error' END
            FROM n""")
        page, errors = await open_console(browser, s.url)
        seen: list[str] = []
        while True:
            rows = page.locator("#account-rows tr")
            await expect(rows).to_have_count(50)
            seen += await rows.evaluate_all("nodes => nodes.map(n => n.dataset.id)")
            if await page.locator("#next").is_disabled():
                break
            await page.click("#next")
            await expect(page.locator("#page-info")).to_contain_text(f"page {len(seen) // 50 + 1}")
        assert seen == [f"bulk-{i:04d}" for i in range(1000)]
        await page.click("#prev")
        await expect(page.locator("#page-info")).to_have_text("page 19 · 901\u2013950")

        await page.select_option("#state", "active")  # no failures
        await page.select_option("#sort", "consecutive_failures")
        await page.fill("#org", "globex")
        await expect(page.locator("#page-info")).to_have_text("page 1 · 1\u201315")
        ids = await page.locator("#account-rows tr").evaluate_all(
            "nodes => nodes.map(n => n.dataset.id)")
        assert ids == [f"bulk-{i:04d}" for i in range(0, 1000, 70)]
        await page.fill("#q", "SELLER-0070")
        await expect(page.locator("#account-rows tr")).to_have_count(1)
        await page.close()

        # An org token: its org alone, whatever the filters say, and no Resume for it.
        page, errors = await open_console(browser, s.url, webstack.ORG_ACME)
        # Its provider card: its own 900 accounts, the quota, not every org's calls.
        provider = page.locator("#providers .provider")
        await expect(provider).to_contain_text("for 900 active")
        await expect(provider).to_contain_text("daily quota 50,000")
        await expect(provider).not_to_contain_text("calls today")
        await page.fill("#q", "bulk-001")
        await expect(page.locator("#page-info")).to_have_text("page 1 · 1\u20139")
        ids = await page.locator("#account-rows tr").evaluate_all(
            "nodes => nodes.map(n => n.dataset.id)")
        assert ids == [f"bulk-{i:04d}" for i in range(11, 20)]
        await page.fill("#org", "globex")
        await expect(page.locator("#account-rows tr.empty")).to_have_count(1)
        await page.close()
    assert errors == []


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_the_console_passes_axe(store, keyring, browser, db_url, viewport):
    async with webstack.running(store, keyring) as s:
        await seed_states(s, db_url)
        page = await browser.new_page(viewport=VIEWPORTS[viewport])
        await page.goto(s.url + "/")
        await expect(page.locator("#login")).to_be_visible()
        found = {"login": await serious_violations(page)}
        await page.fill("#token", webstack.ADMIN)
        await page.press("#token", "Enter")
        await expect(row(page, "acme-gone")).to_have_count(1)
        await row(page, "acme-ok").get_by_role("button", name="Refresh with debug acme-ok").click()
        await expect(page.locator("#debug-result")).to_contain_text("refreshed")
        found["console"] = await serious_violations(page)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"console-{viewport}-full.png"),
                              full_page=True)
        await page.evaluate("window.scrollTo(0, 0)")
        await page.screenshot(path=str(ARTIFACTS / f"console-{viewport}-top.png"))
        await row(page, "acme-failing").scroll_into_view_if_needed()
        await page.screenshot(path=str(ARTIFACTS / f"console-{viewport}-accounts.png"))
        width = await page.evaluate("document.documentElement.scrollWidth")
        await page.close()
    assert found == {"login": [], "console": []}
    assert width <= VIEWPORTS[viewport]["width"]


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_the_console_reads_as_an_operator_would(store, keyring, browser, db_url, viewport):
    """A fresh token enabled again or cleared of its backoff shows when it will really be
    refreshed; Clear backoff only where there is one; codes stay whole at 1440 px; a refresh
    token nobody gave an expiry for is unknown, not everlasting."""
    async with webstack.running(store, keyring) as s:
        await seed_states(s, db_url)
        for account_id in ("acme-back", "acme-flaky"):
            await webstack.add_account(s.db, s.keyring, account_id)
            await s.worker.refresh_now(account_id)  # fresh for 2 h; due by max_age in 1 h
        await s.db.set_state("acme-back", "disabled", clock.now())
        soon = clock.now().timestamp() + 600
        await execute_sql(db_url, "UPDATE accounts SET consecutive_failures = 1, "
                          f"last_error = 'unsupported_grant_type', next_attempt_at = {soon}, "
                          "refresh_expires_at = NULL WHERE id = 'acme-flaky'")
        await execute_sql(db_url, "UPDATE accounts SET state_reason = "
                          "'marketplace_account_deletion' WHERE id = 'acme-gone'")
        page, errors = await open_console(browser, s.url, viewport=viewport)
        next_refresh = "td[data-label='next refresh']"

        await row(page, "acme-back").get_by_role("button", name="Enable acme-back").click()
        await expect(row(page, "acme-back").locator(".state")).to_have_text("active")
        await expect(row(page, "acme-back").locator(next_refresh)).to_have_text(
            re.compile(r"^(in 59m \d\ds|in 1h 00m)$"))
        clear = row(page, "acme-flaky").get_by_role("button", name="Clear backoff of acme-flaky")
        await clear.click()
        await expect(page.locator("#toast")).to_contain_text("acme-flaky is due now")
        await expect(row(page, "acme-flaky").locator(next_refresh)).to_have_text(
            re.compile(r"^(in 59m \d\ds|in 1h 00m)$"))
        await page.wait_for_timeout(2100)  # the countdown ticks down, never "ago"
        for account_id in ("acme-back", "acme-flaky"):
            await expect(row(page, account_id).locator(next_refresh)).to_contain_text("in 59m")

        for account_id in ("acme-ok", "acme-back", "acme-reauth", "acme-off"):
            await expect(row(page, account_id).locator("[data-action=clear-backoff]")
                         ).to_have_count(0)
        await expect(row(page, "acme-failing").locator("[data-action=clear-backoff]")
                     ).to_have_count(1)
        # No expiry stored: unknown (eBay's refresh answer never says), with why.
        unknown = row(page, "acme-flaky").locator("td[data-label='refresh token'] span")
        await expect(unknown).to_have_text("unknown")
        await expect(page.locator("#account-rows")).not_to_contain_text("no expiry")
        # Error codes on one line each at 1440 px.
        codes = page.locator("td[data-label='last error'] .error")
        await expect(codes).to_have_count(3)  # failing, reauth, flaky
        if viewport == "desktop":
            lines = await codes.evaluate_all(
                "nodes => nodes.map(n => n.getClientRects().length)")
            assert lines == [1, 1, 1], lines
        # ...and never out of their row or card.
        outside = await page.locator("#account-rows .error, #account-rows .reason").evaluate_all(
            """nodes => nodes.filter(n => n.getBoundingClientRect().right
                                    > n.closest('tr').getBoundingClientRect().right + 1)
                             .map(n => n.textContent)""")
        assert outside == [], outside
        await expect(row(page, "acme-gone").locator("td[data-label='refresh token']")
                     ).to_have_text("-")
        texts = await codes.all_inner_texts()
        assert "unsupported_grant_type" in texts and "invalid_grant" in texts
        ARTIFACTS.mkdir(exist_ok=True)
        await row(page, "acme-flaky").scroll_into_view_if_needed()
        await page.screenshot(path=str(ARTIFACTS / f"console-operator-{viewport}.png"),
                              full_page=True)
        await row(page, "acme-flaky").screenshot(
            path=str(ARTIFACTS / f"console-operator-{viewport}-row.png"))
        width = await page.evaluate("document.documentElement.scrollWidth")
        await page.close()
    assert errors == []
    assert width <= VIEWPORTS[viewport]["width"]
