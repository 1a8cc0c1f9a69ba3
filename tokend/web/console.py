"""The console's admin routes: the accounts table (filtered, sorted, paged by keyset), the
per-account actions, and the providers' pauses, calls and failures."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from tokend import actions, clock, config, model, quota, schedule, store
from tokend.web import auth, common, errors

PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 500
ATTEMPTS_LIMIT_DEFAULT = 50
ATTEMPTS_LIMIT_MAX = 500
ACCOUNT_PARAMS = frozenset({"q", "state", "provider", "org", "sort", "order", "limit", "cursor"})
FAILING = "failing"
STATUSES = (model.ACTIVE, FAILING, model.REAUTH_REQUIRED, model.DISABLED, model.DELETED)
TIME_KEYS = frozenset({"next_attempt_at", "access_expires_at", "refresh_expires_at",
                       "last_refresh_at"})


def status(account: model.Account) -> str:
    """The state an operator reads: an active account with failures is `failing`."""
    if account.state == model.ACTIVE and account.consecutive_failures > 0:
        return FAILING
    return account.state


def account_view(account: model.Account, settings: config.RefreshConfig) -> dict[str, Any]:
    """The account as the console shows it, with `refresh_due_at`: when the loop will
    refresh it (null when it does not schedule it)."""
    due = None
    if account.state == model.ACTIVE:
        due = schedule.refresh_due_at(
            next_attempt_at=account.next_attempt_at, access_expires_at=account.access_expires_at,
            last_refresh_at=account.last_refresh_at,
            expiry_threshold_seconds=settings.expiry_threshold_seconds,
            max_age_seconds=settings.max_age_seconds).isoformat()
    return {**account.public(), "status": status(account), "refresh_due_at": due}


def _text_param(query: Mapping[str, str], name: str, max_length: int = 200) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_length:
        raise common.bad(f"{name} must be at most {max_length} characters")
    return value


def _sort_value(account: model.Account, sort: str) -> Any:
    value = getattr(account, sort)
    if sort in TIME_KEYS:
        return (value or store.NEVER).isoformat()
    return value


def _cursor(account: model.Account, sort: str, descending: bool) -> str:
    raw = orjson.dumps([sort, descending, _sort_value(account, sort), account.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str, sort: str, descending: bool) -> tuple[Any, str]:
    """The (key, id) a cursor stands for; it is only good for the sort it was made for."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_sort, made_descending, key, account_id = orjson.loads(raw)
        if (made_sort, made_descending) != (sort, descending) or not isinstance(account_id, str):
            raise ValueError
        if "\x00" in account_id or (isinstance(key, str) and "\x00" in key):
            raise ValueError  # no account holds one, and PostgreSQL refuses it in text
        if sort in TIME_KEYS:
            key = datetime.fromisoformat(key)
            if key.tzinfo is None:
                raise ValueError
        elif sort == "consecutive_failures":
            if not isinstance(key, int) or isinstance(key, bool) or abs(key) >= 2**31:
                raise ValueError
        elif not isinstance(key, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise common.bad("cursor is not valid for this sort and order") from None
    return key, account_id


def page_request(query: Mapping[str, str], principal: auth.Principal) -> model.AccountPage:
    """The page the query string asks for; a 400 on anything it cannot mean."""
    unknown = sorted(set(query) - ACCOUNT_PARAMS)
    if unknown:
        raise common.bad(f"unknown parameter {unknown[0]!r}")
    sort = query.get("sort", "name")
    if sort not in store.SORT_KEYS:
        raise common.bad(f"sort must be one of {', '.join(store.SORT_KEYS)}")
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise common.bad("order must be asc or desc")
    wanted = _text_param(query, "state")
    if wanted is not None and wanted not in STATUSES:
        raise common.bad(f"state must be one of {', '.join(STATUSES)}")
    org = _text_param(query, "org")
    if principal.org is not None:
        if org is not None and org != principal.org:
            return model.AccountPage(limit=0)  # another org's accounts: none to see
        org = principal.org
    descending = order == "desc"
    after_key, after_id = None, None
    if query.get("cursor"):
        after_key, after_id = _after(query["cursor"], sort, descending)
    return model.AccountPage(
        sort=sort, descending=descending, org=org, provider=_text_param(query, "provider"),
        state=model.ACTIVE if wanted == FAILING else wanted,
        healthy=wanted == model.ACTIVE, failing=wanted == FAILING, q=_text_param(query, "q"),
        limit=common.int_param(query, "limit", PAGE_LIMIT_DEFAULT, 1, PAGE_LIMIT_MAX) or 0,
        after_key=after_key, after_id=after_id)


async def accounts(request: web.Request) -> web.Response:
    """`{"accounts": [...], "next_cursor": ...}`: pass `next_cursor` back as `cursor` with
    the same filters for the next page; null when this page is the last."""
    principal = auth.admin(request)
    page = page_request(request.query, principal)
    if page.limit == 0:
        return common.json_response({"accounts": [], "next_cursor": None})
    # One row more than asked says whether another page exists.
    rows = await request.app[common.STORE].page_accounts(
        model.AccountPage(**{**_fields(page), "limit": page.limit + 1}))
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    return common.json_response({
        "accounts": [account_view(a, request.app[common.CONFIG].refresh) for a in rows],
        "next_cursor": _cursor(rows[-1], page.sort, page.descending) if more else None})


def _fields(page: model.AccountPage) -> dict[str, Any]:
    return {name: getattr(page, name) for name in model.AccountPage.__dataclass_fields__}


async def _act(request: web.Request, action: Callable[[store.Store, str, datetime],
                                                   Awaitable[model.Account]]) -> web.Response:
    """One account action: visible to this token, applied, the loop told to re-plan."""
    principal = auth.admin(request)
    account = await common.visible_account(request, principal, request.match_info["id"])
    try:
        changed = await action(request.app[common.STORE], account.id, clock.now())
    except actions.Refused as exc:
        raise common.ApiError(409, exc.message, state=exc.state) from None
    request.app[common.LOOP].wake()  # the schedule changed: let the loop re-plan its sleep
    return common.json_response(
        {"account": account_view(changed, request.app[common.CONFIG].refresh)})


async def disable(request: web.Request) -> web.Response:
    return await _act(request, actions.disable)


async def enable(request: web.Request) -> web.Response:
    return await _act(request, actions.enable)


async def clear_backoff(request: web.Request) -> web.Response:
    return await _act(request, actions.clear_backoff)


async def attempts(request: web.Request) -> web.Response:
    principal = auth.admin(request)
    unknown = sorted(set(request.query) - {"limit"})
    if unknown:
        raise common.bad(f"unknown parameter {unknown[0]!r}")
    limit = common.int_param(request.query, "limit", ATTEMPTS_LIMIT_DEFAULT, 1,
                             ATTEMPTS_LIMIT_MAX) or ATTEMPTS_LIMIT_DEFAULT
    account = await common.visible_account(request, principal, request.match_info["id"])
    rows = await request.app[common.STORE].list_attempts(account.id, limit=limit)
    return common.json_response({"attempts": [
        {"account_id": a.account_id, "source": a.source, "started_at": a.started_at.isoformat(),
         "finished_at": a.finished_at.isoformat(), "success": a.success,
         "error_code": a.error_code, "error_message": a.error_message} for a in rows]})


async def providers(request: web.Request) -> web.Response:
    """Each configured provider (and any with accounts): its pause, today's calls against
    the daily quota with the projection, and its failing accounts by error code. An org
    token sees the provider's pause and quota, and otherwise its org's figures only: its
    accounts, their projection and failures. Today's calls are counted per provider, not per
    org, and would tell it how busy the other orgs are: it gets none."""
    principal = auth.admin(request)
    db, cfg = request.app[common.STORE], request.app[common.CONFIG]
    now = clock.now()
    pauses = await db.provider_pauses(now)
    usage = await db.budget_usage(now.date()) if principal.org is None else None
    failing = await db.failing_by_error(principal.org)
    out = []
    for projection in await quota.project(db, cfg, principal.org):
        name = projection.provider
        until, reason = pauses.get(name, (None, None))
        calls = None if usage is None else usage.get(name, {})
        out.append({
            "name": name, "configured": name in cfg.providers,
            "paused_until": until.isoformat() if until else None, "pause_reason": reason,
            "calls_today": None if calls is None else sum(calls.values()),
            "calls_today_by_grant": calls, "daily_quota": projection.daily_quota,
            "projected_daily_calls": round(projection.projected_daily_calls, 1),
            "over_quota": projection.over_quota, "active_accounts": projection.active_accounts,
            "failing_by_error": failing.get(name, {})})
    return common.json_response({"providers": out, "day": now.date().isoformat()})


async def resume(request: web.Request) -> web.Response:
    """A pause stops every org's refreshes, so lifting it is the admin's call alone."""
    principal = auth.admin(request)
    name = request.match_info["name"]
    if name not in request.app[common.CONFIG].providers:
        raise common.ApiError(404, "unknown provider")
    if principal.org is not None:
        raise common.ApiError(403, "only the admin token can resume a provider")
    resumed = await actions.resume(request.app[common.STORE], name, clock.now())
    request.app[common.LOOP].wake()
    return common.json_response({"provider": name, "resumed": resumed})


def setup(routes: errors.Routes) -> None:
    routes.get("/api/accounts", accounts)
    routes.post("/api/accounts/{id}/disable", disable)
    routes.post("/api/accounts/{id}/enable", enable)
    routes.post("/api/accounts/{id}/clear-backoff", clear_backoff)
    routes.get("/api/accounts/{id}/attempts", attempts)
    routes.get("/api/providers", providers)
    routes.post("/api/providers/{name}/resume", resume)
