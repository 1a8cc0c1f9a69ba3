"""The terminal page in headless Chromium (Debian's, no download): login, live entries with
source labels, filters, pause, copy, a debug refresh, and surviving a server restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
import webstack

from tokend import model, vocabulary

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


@pytest.fixture
async def browser():
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser
        finally:
            await browser.close()


def entry_locator(page, entry):
    return page.locator(f'.entry[data-id="{entry.id}"]')


async def assert_no_duplicates(page):
    ids = await page.locator(".entry").evaluate_all("nodes => nodes.map(n => n.dataset.id)")
    assert len(ids) == len(set(ids)), ids
    return ids


async def test_the_terminal_end_to_end(store, keyring, browser):
    errors: list[str] = []
    async with webstack.running(store, keyring) as s:
        context = await browser.new_context(viewport={"width": 1440, "height": 900})
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=s.url)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(s.url + "/terminal")

        await expect(page.locator("#login")).to_be_visible()
        await page.fill("#token", webstack.ADMIN)
        await page.press("#token", "Enter")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live")

        scheduled = await webstack.add_entry(s.db, s.hub, source="scheduled", account_id="acme-1")
        manual = await webstack.add_entry(
            s.db, s.hub, source="manual", account_id="acme-2", action="token_refresh_failed",
            error=vocabulary.error("invalid_grant", "the refresh token was revoked"))
        await expect(entry_locator(page, scheduled).locator(".badge")).to_have_text("SCHEDULED")
        await expect(entry_locator(page, manual).locator(".badge")).to_have_text("MANUAL")
        await expect(entry_locator(page, manual).locator(".error")).to_contain_text(
            "invalid_grant")
        await expect(entry_locator(page, scheduled)).to_contain_text("=== HTTP REQUEST ===")
        await expect(entry_locator(page, scheduled)).to_contain_text("=== HTTP RESPONSE ===")
        await s.loop.cycle()  # a heartbeat entry, as the loop writes it

        # A debug refresh from the form: the exchange shows inline, and in the stream.
        await webstack.add_account(s.db, s.keyring, "acme-3")
        await page.click("#debug-toggle")
        await page.fill("#debug-account", "acme-3")
        await page.click("#debug-run")
        await expect(page.locator("#debug-result")).to_be_visible()
        await expect(page.locator("#debug-body")).to_contain_text("Authorization: Basic ****")
        await expect(page.locator("#debug-title")).to_contain_text("refreshed")
        await expect(page.locator(".entry .badge", has_text="DEBUG")).to_have_count(1)
        await page.click("#debug-close")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "terminal.png"))

        # Compact: head lines only, one entry opened by a click.
        await page.click("#compact")
        await expect(entry_locator(page, scheduled).locator(".http").first).to_be_hidden()
        await entry_locator(page, scheduled).locator(".head").click()
        await expect(entry_locator(page, scheduled).locator(".http").first).to_be_visible()
        await expect(entry_locator(page, manual).locator(".http").first).to_be_hidden()
        await page.click("#compact")

        # Only one source.
        for source in ("scheduled", "debug", "admin", "vend"):
            await page.click(f'#sources [data-source="{source}"]')
        await expect(page.locator(".entry:visible")).to_have_count(1)
        await expect(page.locator(".entry:visible .badge")).to_have_text("MANUAL")
        for source in ("scheduled", "debug", "admin", "vend"):
            await page.click(f'#sources [data-source="{source}"]')
        await page.fill("#filter", "acme-1")
        await expect(page.locator(".entry:visible")).to_have_count(1)
        await page.fill("#filter", "")

        # Pause holds new entries and says how many; resume shows them.
        await page.click("#pause")
        held = [await webstack.add_entry(s.db, s.hub, source="admin", account_id=f"held-{i}")
                for i in range(3)]
        await expect(page.locator("#pause")).to_have_text("Resume (3 held)")
        await expect(entry_locator(page, held[0])).to_have_count(0)
        await page.click("#pause")
        for entry in held:
            await expect(entry_locator(page, entry)).to_have_count(1)

        # Download: the visible entries as JSON lines.
        async with page.expect_download() as download_info:
            await page.click("#download")
        download = await download_info.value
        lines = Path(await download.path()).read_text().splitlines()
        assert download.suggested_filename.endswith(".jsonl")
        assert [orjson.loads(line)["id"] for line in lines] == [
            int(i) for i in await assert_no_duplicates(page)]

        # Copy all: the visible entries as text.
        await page.click("#copy")
        await expect(page.locator("#toast")).to_contain_text("copied")
        copied = await page.evaluate("navigator.clipboard.readText()")
        assert "[MANUAL]" in copied and "=== HTTP REQUEST ===" in copied
        assert "ERROR invalid_grant: the refresh token was revoked" in copied
        before_restart = await assert_no_duplicates(page)
        port = s.port

    # The server went away: the page says so and keeps trying.
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    while_down = await webstack.add_entry(store, account_id="while-down")
    async with webstack.running(store, keyring, port=port) as s:
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live",
                                                              timeout=15_000)
        after = await webstack.add_entry(s.db, s.hub, source="manual", account_id="after")
        await expect(entry_locator(page, after)).to_have_count(1)
        await expect(entry_locator(page, while_down)).to_have_count(1)
        ids = await assert_no_duplicates(page)
        assert ids[:len(before_restart)] == before_restart
        assert ids[len(before_restart):] == [str(while_down.id), str(after.id)]
        await context.close()
    assert errors == []


async def login(page, url):
    await page.goto(url + "/terminal")
    await page.fill("#token", webstack.ADMIN)
    await page.press("#token", "Enter")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")


async def test_the_terminal_keeps_the_newest_entries_and_follows_only_at_the_bottom(
    store, keyring, browser,
):
    async with webstack.running(store, keyring, server={"terminal_max_entries": 5}) as s:
        page = await browser.new_page(viewport={"width": 1200, "height": 700})
        await login(page, s.url)
        written = [await webstack.add_entry(s.db, s.hub, account_id=f"acct-{i}")
                   for i in range(12)]
        await expect(entry_locator(page, written[-1])).to_have_count(1)
        assert await assert_no_duplicates(page) == [str(e.id) for e in written[-5:]]
        log = page.locator("#log")
        assert await log.evaluate("n => n.scrollHeight - n.scrollTop - n.clientHeight") < 24

        await log.evaluate("n => { n.scrollTop = 0; n.dispatchEvent(new Event('scroll')); }")
        await expect(page.locator("#jump")).to_be_visible()
        newer = await webstack.add_entry(s.db, s.hub, account_id="acct-new")
        await expect(entry_locator(page, newer)).to_have_count(1)
        await expect(page.locator("#jump")).to_have_text("↓ 1 new")
        assert await log.evaluate("n => n.scrollTop") == 0  # reading stays where it was
        await page.click("#jump")
        await expect(page.locator("#jump")).to_be_hidden()
        assert await log.evaluate("n => n.scrollHeight - n.scrollTop - n.clientHeight") < 24
        await page.close()


AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


async def serious_violations(page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now (CSP untouched:
    the script goes in through the debugging protocol, not a script tag)."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())
    results = await page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ["violations"]});
        return r.violations.map(v => ({id: v.id, impact: v.impact,
            nodes: v.nodes.map(n => n.target.join(" ") + " " + n.failureSummary)}));
    }""")
    return [f"{v['id']} ({v['impact']}): {node}" for v in results
            if v["impact"] in ("serious", "critical") for node in v["nodes"]]


async def real_entries(s) -> None:
    """What an operator sees: a refresh, a revoked token, a debug refresh, a heartbeat."""
    await webstack.add_account(s.db, s.keyring, "acme-ok")
    await s.worker.refresh_now("acme-ok")
    revoked = webstack.refresh_token()
    s.sim.revoke(revoked)
    await webstack.add_account(s.db, s.keyring, "acme-revoked", token=revoked)
    await s.worker.refresh_now("acme-revoked")
    await s.loop.cycle()


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_the_terminal_passes_axe(store, keyring, browser, viewport):
    async with webstack.running(store, keyring) as s:
        page = await browser.new_page(viewport=VIEWPORTS[viewport])
        await page.goto(s.url + "/terminal")
        await expect(page.locator("#login")).to_be_visible()
        found = {"login": await serious_violations(page)}
        await page.screenshot(path=str(ARTIFACTS / f"terminal-login-{viewport}.png"))
        await page.fill("#token", webstack.ADMIN)
        await page.press("#token", "Enter")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        await real_entries(s)
        await expect(page.locator(".entry")).to_have_count(3)
        await page.click('#sources [data-source="vend"]')  # a source switched off
        found["log"] = await serious_violations(page)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"terminal-{viewport}.png"))
        await page.close()
    assert found == {"login": [], "log": []}


async def test_failures_only_and_the_error_text_search(store, keyring, browser):
    async with webstack.running(store, keyring) as s:
        page = await browser.new_page(viewport=VIEWPORTS["desktop"])
        await login(page, s.url)
        await real_entries(s)
        entries = page.locator(".entry")
        await expect(entries).to_have_count(3)
        (revoked,) = await s.db.list_entries(account_id="acme-revoked")
        description = revoked.error["description"]
        await expect(entry_locator(page, revoked).locator(".error")).to_have_text(
            f"ERROR invalid_grant: {description}")

        await page.click("#failures")
        await expect(page.locator("#failures")).to_have_attribute("aria-pressed", "true")
        await expect(page.locator(".entry:visible")).to_have_count(1)
        await expect(entry_locator(page, revoked)).to_be_visible()
        await expect(page.locator("#count")).to_have_text("1 of 3 entries")
        assert await serious_violations(page) == []  # the pressed toggle reads well too
        # Live entries obey it too: a new failure shows, a new success does not.
        await s.db.add_account(model.NewAccount(  # sealed for another account: no HTTP
            id="acme-broken", org="acme", provider=webstack.PROVIDER, name="broken", scopes=(),
            refresh_token=keyring.encrypt(webstack.refresh_token(), account_id="elsewhere",
                                          column="refresh_token"),
            refresh_expires_at=None), webstack.now())
        await s.worker.refresh_now("acme-broken")
        (failed,) = await s.db.list_entries(account_id="acme-broken")
        assert failed.error["code"] == "decrypt_failed"
        ok = await webstack.add_entry(s.db, s.hub, source="scheduled", account_id="acme-fine")
        await expect(entry_locator(page, failed)).to_be_visible()
        await expect(entry_locator(page, ok)).to_have_count(1)
        await expect(entry_locator(page, ok)).to_be_hidden()
        await page.keyboard.press("f")  # the key does what the button does
        await expect(page.locator("#failures")).to_have_attribute("aria-pressed", "false")
        await expect(page.locator(".entry:visible")).to_have_count(5)

        # The text filter looks at error codes, error descriptions and messages.
        for text, expected in ((description[-25:].upper(), [revoked.id]),
                               ("invalid_grant", [revoked.id]),
                               ("decrypt_failed", [failed.id]),
                               (failed.error["description"][:20], [failed.id]),
                               ("need token refresh", None)):
            await page.fill("#filter", text)
            visible = page.locator(".entry:visible")
            if expected is None:  # the heartbeat's message
                await expect(visible).to_have_count(1)
                await expect(visible.locator(".action")).to_have_text(vocabulary.WORKER_HEARTBEAT)
            else:
                await expect(visible).to_have_count(len(expected))
                assert await visible.evaluate_all("ns => ns.map(n => +n.dataset.id)") == expected
        await page.click("#failures")
        await page.fill("#filter", "acme-ok")
        await expect(page.locator(".entry:visible")).to_have_count(0)
        await page.press("#filter", "Escape")
        await expect(page.locator(".entry:visible")).to_have_count(2)
        await page.screenshot(path=str(ARTIFACTS / "terminal-failures-desktop.png"))
        await page.close()


async def test_the_terminal_on_a_phone_and_from_the_keyboard(store, keyring, browser):
    async with webstack.running(store, keyring) as s:
        page = await browser.new_page(viewport=VIEWPORTS["phone"])
        await login(page, s.url)
        await real_entries(s)
        await expect(page.locator(".entry")).to_have_count(3)

        # The header is two short lines; the controls scroll sideways on one of them.
        header = await page.locator("header").bounding_box()
        assert header["height"] <= 100, header
        tops = await page.locator("#tools > button, #sources > button").evaluate_all(
            "ns => ns.map(n => Math.round(n.getBoundingClientRect().top))")
        assert len(set(tops)) == 1, tops
        assert await page.locator("#debug-form").is_hidden()

        # Tab reaches every control, brings it into view and shows a focus ring.
        await page.focus("#filter")
        reached = []
        for _ in range(30):
            await page.keyboard.press("Tab")
            focused = page.locator(":focus")
            reached.append(await focused.evaluate("n => n.id || n.dataset.source"))
            box = await focused.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, (reached[-1], box)
            ring = await focused.evaluate(
                "n => { const s = getComputedStyle(n); return [s.outlineStyle, s.outlineWidth]; }")
            assert ring == ["solid", "2px"], (reached[-1], ring)
            if reached[-1] == "lock":
                break
        assert reached[:len(vocabulary.SOURCES)] == list(vocabulary.SOURCES)
        assert reached[len(vocabulary.SOURCES):] == [
            "failures", "compact", "pause", "copy", "download", "clear", "debug-toggle", "lock"]

        # The debug form opens from its button, with the focus in it.
        await page.click("#debug-toggle")
        await expect(page.locator("#debug-toggle")).to_have_attribute("aria-expanded", "true")
        await expect(page.locator("#debug-account")).to_be_focused()
        await page.keyboard.type("acme-ok")
        await page.keyboard.press("Enter")
        await expect(page.locator("#debug-title")).to_contain_text("refreshed")

        # Compact: a head line is a button; Enter opens its entry.
        await page.click("#compact")
        (revoked,) = await s.db.list_entries(account_id="acme-revoked")
        head = entry_locator(page, revoked).locator(".head")
        await expect(entry_locator(page, revoked).locator(".http").first).to_be_hidden()
        await head.focus()
        await page.keyboard.press("Enter")
        await expect(head).to_have_attribute("aria-expanded", "true")
        await expect(entry_locator(page, revoked).locator(".http").first).to_be_visible()
        assert await serious_violations(page) == []
        await page.screenshot(path=str(ARTIFACTS / "terminal-debug-phone.png"))
        await page.close()
