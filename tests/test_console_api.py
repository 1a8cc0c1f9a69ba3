"""The console's admin routes on both backends: the paged accounts table, the account
actions, the refresh history and the providers' overview."""

from __future__ import annotations

import random
from datetime import timedelta

import orjson
import pytest
import webstack
from kit import execute_sql
from proc import cli, daemon_config

from tokend import clock, store

ADMIN, ORG_ACME = webstack.ADMIN, webstack.ORG_ACME
SORTS = ("name", "next_attempt_at", "consecutive_failures", "access_expires_at",
         "refresh_expires_at", "last_refresh_at")


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


def _at(db_url: str, epoch: float | None) -> str:
    """A timestamp literal in the backend's own representation."""
    if epoch is None:
        return "NULL"
    return repr(epoch) if db_url.startswith("sqlite://") else f"to_timestamp({epoch!r})"


async def _set(stack, db_url: str, account_id: str, **fields) -> None:
    parts = []
    for name, value in fields.items():
        if name.endswith("_at"):
            parts.append(f"{name} = {_at(db_url, value)}")
        elif value is None:
            parts.append(f"{name} = NULL")
        elif isinstance(value, str):
            parts.append(f"{name} = '{value}'")
        else:
            parts.append(f"{name} = {value}")
    await execute_sql(db_url, f"UPDATE accounts SET {', '.join(parts)} WHERE id = '{account_id}'")


async def _post(stack, path: str, token: str = ADMIN):
    async with stack.http.post(stack.url + path, headers=stack.auth(token)) as response:
        return response.status, await response.json()


async def _walk(stack, query: str, limit: int, token: str = ADMIN) -> list[dict]:
    rows, cursor = [], None
    while True:
        page = f"/api/accounts?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, body = await stack.get_json(page, token=token)
        assert status == 200, body
        assert len(body["accounts"]) <= limit
        rows += body["accounts"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


async def test_every_sort_pages_through_every_account_once_in_order(stack, db_url):
    rng = random.Random(11)
    base = clock.now().timestamp()
    for i in range(23):
        account_id = f"acct-{i:02d}"
        await webstack.add_account(stack.db, stack.keyring, account_id, f"org-{i}")
        # Ties and absent values on purpose: the id must break them, NULL sorts as never.
        await _set(stack, db_url, account_id, name=f"seller-{rng.randrange(6)}",
                   consecutive_failures=rng.randrange(3),
                   next_attempt_at=base + rng.randrange(4) * 60,
                   access_expires_at=rng.choice([None, base + rng.randrange(3) * 600]),
                   refresh_expires_at=rng.choice([None, base + rng.randrange(3) * 86400]),
                   last_refresh_at=rng.choice([None, base - rng.randrange(3) * 60]))
    everyone = (await _walk(stack, "sort=name", 500))
    assert len(everyone) == 23
    never = "9999"
    for sort in SORTS:
        def key(a, sort=sort):
            value = a[sort]
            return (never if value is None else value) if sort.endswith("_at") else value
        for order in ("asc", "desc"):
            walked = await _walk(stack, f"sort={sort}&order={order}", 4)
            assert [a["id"] for a in walked] == [a["id"] for a in sorted(
                everyone, key=lambda a: (key(a), a["id"]), reverse=order == "desc")], (sort,
                                                                                       order)


async def test_filters_search_and_the_failing_state(stack, db_url):
    for account_id, org in [("a-ok", "acme"), ("a-fail", "acme"), ("a-reauth", "acme"),
                            ("a-off", "acme"), ("a-gone", "acme"), ("g-1", "globex")]:
        await webstack.add_account(stack.db, stack.keyring, account_id, org)
    await _set(stack, db_url, "a-fail", consecutive_failures=2, last_error="server_error")
    await _set(stack, db_url, "a-reauth", state="reauth_required", consecutive_failures=1,
               last_error="invalid_grant", provider_user_name="Bobs_Shop")
    await _set(stack, db_url, "a-off", state="disabled")
    await _set(stack, db_url, "a-gone", state="deleted", refresh_token=None)

    async def ids(query: str, token: str = ADMIN) -> list[str]:
        status, body = await stack.get_json(f"/api/accounts?{query}", token=token)
        assert status == 200, body
        return sorted(a["id"] for a in body["accounts"])

    assert await ids("state=active") == ["a-ok", "g-1"]
    assert await ids("state=failing") == ["a-fail"]
    assert await ids("state=reauth_required") == ["a-reauth"]
    assert await ids("state=disabled") == ["a-off"]
    assert await ids("state=deleted") == ["a-gone"]
    _, body = await stack.get_json("/api/accounts?q=a-fail")
    (failing,) = body["accounts"]
    assert failing["status"] == "failing" and failing["state"] == "active"
    assert failing["last_error"] == "server_error" and failing["consecutive_failures"] == 2
    assert await ids("q=BOBS_") == ["a-reauth"]  # provider user name, any case, `_` literal
    assert await ids("q=bobsx") == []
    assert await ids("q=%25") == []  # `%` is a character, not a wildcard
    assert await ids("q=seller-g") == ["g-1"]
    assert await ids("org=globex") == ["g-1"]
    assert await ids(f"provider={webstack.PROVIDER}&state=active&org=acme") == ["a-ok"]
    assert await ids("provider=nope") == []
    # An org token sees its own org whatever it asks for.
    assert await ids("", ORG_ACME) == ["a-fail", "a-gone", "a-off", "a-ok", "a-reauth"]
    assert await ids("org=globex", ORG_ACME) == []
    assert await ids("q=g-1", ORG_ACME) == []
    text = orjson.dumps((await stack.get_json("/api/accounts"))[1]).decode()
    assert "ENC:" not in text and "refresh_token" not in text


@pytest.mark.parametrize("query", [
    "sort=secret", "order=up", "state=failed", "limit=0", "limit=501", "limit=x", "nope=1",
    "cursor=%%%", "cursor=bm90IGpzb24", "q=" + "x" * 201,
    # a cursor made for another sort
    "sort=next_attempt_at&cursor=WyJuYW1lIixmYWxzZSwic2VsbGVyIiwiYSJd",
])
async def test_bad_account_queries_are_400s(stack, query):
    status, body = await stack.get_json(f"/api/accounts?{query}")
    assert status == 400 and set(body) == {"error"}, body


async def test_disable_enable_and_the_loop_skips_a_disabled_account(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    await webstack.add_account(stack.db, stack.keyring, "globex-1", "globex")
    status, body = await _post(stack, "/api/accounts/acct-1/disable", ORG_ACME)
    assert status == 200 and body["account"]["state"] == "disabled"
    assert body["account"]["state_reason"]
    await stack.loop.cycle()
    assert stack.sim.calls == 1  # globex-1 only
    assert (await stack.db.get_account("acct-1")).last_refresh_at is None
    assert (await _post(stack, "/api/accounts/acct-1/disable"))[0] == 200  # idempotent
    status, body = await _post(stack, "/api/accounts/acct-1/clear-backoff")
    assert (status, body["state"]) == (409, "disabled")
    status, body = await _post(stack, "/api/accounts/acct-1/enable")
    assert status == 200 and body["account"]["status"] == "active"
    assert body["account"]["state_reason"] is None
    status, body = await _post(stack, "/api/accounts/acct-1/enable")
    assert (status, body["state"]) == (409, "active")
    await stack.loop.cycle()
    assert stack.sim.calls == 2
    assert (await stack.db.get_account("acct-1")).last_refresh_at is not None
    assert (await _post(stack, "/api/accounts/globex-1/disable", ORG_ACME)) == (
        404, {"error": "unknown account"})
    assert (await _post(stack, "/api/accounts/missing/enable"))[0] == 404


async def test_clear_backoff_makes_an_account_due_now(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    await stack.loop.cycle()
    account = await stack.db.get_account("acct-1")
    assert account.next_attempt_at > clock.now() + timedelta(minutes=5)
    status, body = await _post(stack, "/api/accounts/acct-1/clear-backoff")
    assert status == 200
    cleared = await stack.db.get_account("acct-1")
    assert cleared.next_attempt_at <= clock.now()
    assert body["account"]["next_attempt_at"] == cleared.next_attempt_at.isoformat()


async def test_attempts_are_the_refresh_history_newest_first(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    for source in ("manual", "debug"):
        async with stack.http.post(stack.url + "/api/accounts/acct-1/refresh",
                                   headers=stack.auth(), json={"debug": source == "debug"}):
            pass
    status, body = await stack.get_json("/api/accounts/acct-1/attempts?limit=5")
    assert status == 200
    assert [a["source"] for a in body["attempts"]] == ["debug", "manual"]
    assert all(a["success"] for a in body["attempts"])
    _, body = await stack.get_json("/api/accounts/acct-1/attempts?limit=1")
    assert len(body["attempts"]) == 1
    assert (await stack.get_json("/api/accounts/acct-1/attempts?limit=0"))[0] == 400
    assert (await stack.get_json("/api/accounts/acct-1/attempts?x=1"))[0] == 400
    assert (await stack.get_json("/api/accounts/nope/attempts"))[0] == 404


async def test_providers_show_pause_calls_quota_and_failures_and_resume(stack, db_url):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    await webstack.add_account(stack.db, stack.keyring, "acct-2")
    await webstack.add_account(stack.db, stack.keyring, "g-1", "globex")
    await stack.loop.cycle()  # three token-endpoint calls today
    await _set(stack, db_url, "acct-2", consecutive_failures=1, last_error="server_error")
    await _set(stack, db_url, "g-1", consecutive_failures=3, last_error="server_error")
    until = clock.now() + timedelta(hours=1)
    await stack.db.pause_provider(webstack.PROVIDER, until, "invalid_client")

    status, body = await stack.get_json("/api/providers")
    assert status == 200
    (provider,) = body["providers"]
    assert provider["name"] == webstack.PROVIDER
    assert provider["paused_until"] == until.isoformat()
    assert provider["pause_reason"] == "invalid_client"
    assert provider["calls_today"] == 3
    assert provider["calls_today_by_grant"] == {"refresh_token": 3}
    assert provider["daily_quota"] == 50_000
    assert provider["projected_daily_calls"] == 72.0
    assert provider["failing_by_error"] == {"server_error": 2}
    assert provider["active_accounts"] == 3
    _, body = await stack.get_json("/api/providers", token=ORG_ACME)
    (seen,) = body["providers"]
    assert seen["failing_by_error"] == {"server_error": 1}
    # acme's own figures: two accounts and their share; the provider's pause and quota.
    assert (seen["active_accounts"], seen["projected_daily_calls"]) == (2, 48.0)
    assert (seen["calls_today"], seen["calls_today_by_grant"]) == (None, None)
    assert (seen["paused_until"], seen["daily_quota"]) == (until.isoformat(), 50_000)

    assert await _post(stack, f"/api/providers/{webstack.PROVIDER}/resume", ORG_ACME) == (
        403, {"error": "only the admin token can resume a provider"})
    assert (await _post(stack, "/api/providers/nope/resume"))[0] == 404
    status, body = await _post(stack, f"/api/providers/{webstack.PROVIDER}/resume")
    assert status == 200 and body["resumed"] is True
    _, body = await stack.get_json("/api/providers")
    assert body["providers"][0]["paused_until"] is None
    assert (await _post(stack, f"/api/providers/{webstack.PROVIDER}/resume"))[1][
        "resumed"] is False
    today = clock.now().date()
    assert await stack.db.budget_usage(today) == {webstack.PROVIDER: {"refresh_token": 3}}
    assert await stack.db.budget_usage(today - timedelta(days=1)) == {}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_disables_and_enables_an_account(tmp_path, key_lines, db_url):
    path = daemon_config(tmp_path, db_url=db_url, key_line=key_lines[0],
                         token_url="http://127.0.0.1:9/token")
    added = cli(path, "accounts", "add", "--provider", "ebay-sandbox", "--org", "acme",
                "--name", "main", "--id", "acct-1", stdin="v^1.1#i^1#r^1#abc\n")
    assert added.returncode == 0, added.stderr
    result = cli(path, "accounts", "disable", "acct-1")
    assert result.returncode == 0 and "acct-1 is disabled" in result.stdout
    assert orjson.loads(cli(path, "accounts", "list", "--json").stdout)[0]["state"] == "disabled"
    result = cli(path, "accounts", "enable", "acct-1")
    assert result.returncode == 0 and "acct-1 is active" in result.stdout
    result = cli(path, "accounts", "enable", "acct-1")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "only a disabled account" in result.stderr
    result = cli(path, "accounts", "disable", "nope")
    assert result.returncode == 1 and "nope" in result.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_cli_clears_a_backoff_and_resumes_a_provider_as_the_console_does(
        tmp_path, key_lines, db_url):
    path = daemon_config(tmp_path, db_url=db_url, key_line=key_lines[0],
                         token_url="http://127.0.0.1:9/token")
    added = cli(path, "accounts", "add", "--provider", "ebay-sandbox", "--org", "acme",
                "--name", "main", "--id", "acct-1", stdin="v^1.1#i^1#r^1#abc\n")
    assert added.returncode == 0, added.stderr
    await execute_sql(db_url, "UPDATE accounts SET consecutive_failures = 2 "
                              "WHERE id = 'acct-1'")
    result = cli(path, "accounts", "clear-backoff", "acct-1")
    assert result.returncode == 0 and "acct-1 is active" in result.stdout, result.stderr
    assert cli(path, "accounts", "disable", "acct-1").returncode == 0
    result = cli(path, "accounts", "clear-backoff", "acct-1")
    assert result.returncode == 1 and "acct-1 is disabled: only an active account" in (
        result.stderr)

    async with store.open(db_url) as db:
        await db.pause_provider("ebay-sandbox", clock.now() + timedelta(hours=1),
                                "invalid_client")
    result = cli(path, "providers", "resume", "ebay-sandbox")
    assert result.returncode == 0 and "ebay-sandbox: resumed" in result.stdout, result.stderr
    async with store.open(db_url) as db:
        assert await db.paused_providers(clock.now()) == {}
    assert "was not paused" in cli(path, "providers", "resume", "ebay-sandbox").stdout
    result = cli(path, "providers", "resume", "nope")
    assert result.returncode == 2 and "no provider 'nope'" in result.stderr
