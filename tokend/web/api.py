"""The admin API (admin and org tokens) and token vending (consumer tokens); the
console's accounts table and actions are in `tokend.web.console`."""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson
from aiohttp import web

from tokend import apptokens, clock, model, refresher, rejected, store, vending, vocabulary
from tokend.web import auth, common, errors

LOGS_LIMIT_MAX = 1000
LOGS_LIMIT_DEFAULT = 200
MIN_VALID_DEFAULT_SECONDS = 300
MIN_VALID_MAX_SECONDS = 3600
LOG_PARAMS = frozenset({"source", "action", "account_id", "limit", "before_id", "after_id"})
_ACTION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
NO_STORE = {"Cache-Control": "no-store"}
VEND_HEADERS = {"Content-Type": common.JSON, **NO_STORE}


async def _debug_flag(request: web.Request) -> bool:
    body = await request.read()
    if not body.strip():
        return False
    data = common.json_object(body, {"debug"})
    debug = data.get("debug", False)
    if not isinstance(debug, bool):
        raise common.bad("debug must be true or false")
    return debug


async def refresh(request: web.Request) -> web.Response:
    principal = auth.admin(request)
    debug = await _debug_flag(request)
    account_id = request.match_info["id"]
    account, error = None, None
    try:
        account = await common.visible_account(request, principal, account_id)
        outcome = await request.app[common.REFRESHER].refresh_now(
            account_id, source=vocabulary.DEBUG if debug else vocabulary.MANUAL)
    except common.ApiError as exc:
        error = exc
    except refresher.NotFound:
        error = common.ApiError(404, "unknown account")
    except refresher.Busy as exc:
        error = common.ApiError(409, str(exc))
    if error is not None:
        if debug:  # whoever debugs a refresh looks for it in the log
            await _log_refused(request, principal, account_id, account, error)
        raise error
    request.app[common.LOOP].wake()  # the schedule changed: let the loop re-plan its sleep
    answer = {"success": outcome.success, "error": outcome.error_code,
              "error_description": outcome.error_description, "entry_id": outcome.entry.id}
    if debug:
        answer.update(request=outcome.request, response=outcome.response)
    return common.json_response(answer)


async def _log_refused(request: web.Request, principal: auth.Principal, asked: str,
                       account: model.Account | None, error: common.ApiError) -> None:
    code = "unknown_account" if error.status == 404 else "account_busy"
    await common.entries(request).record(model.Entry.about(
        account, action=vocabulary.TOKEN_REFRESH_DEBUG, source=vocabulary.DEBUG,
        created_at=clock.now(), **({} if account else {"org_id": principal.org}),
        error=vocabulary.error(code, error.message),
        message=f"debug refresh refused ({error.status}): {error.message}",
        # The id asked for is kept for the admin only: in an org's view another org's
        # account id must not appear, not even as something that was asked for.
        details={"status": error.status,
                 **({"account_id": asked[:200]} if principal.org is None else {})}))


async def logs(request: web.Request) -> web.Response:
    principal = auth.admin(request)
    query = request.query
    unknown = sorted(set(query) - LOG_PARAMS)
    if unknown:
        raise common.bad(f"unknown parameter {unknown[0]!r}")
    sources = None
    if "source" in query:
        sources = [s.strip() for s in query["source"].split(",") if s.strip()]
        bad = [s for s in sources if s not in vocabulary.SOURCES]
        if bad or not sources:
            raise common.bad(f"source must be a comma list of {', '.join(vocabulary.SOURCES)}")
    action = query.get("action")
    if action is not None and not _ACTION.match(action):
        raise common.bad("action must be a snake_case name")
    account_id = query.get("account_id")
    if account_id is not None:
        if not account_id or len(account_id) > 200:
            raise common.bad("account_id must be 1-200 characters")
        if principal.org is not None:
            await common.visible_account(request, principal, account_id)
    entries = await request.app[common.STORE].list_entries(
        source=sources, action=action, account_id=account_id, org=principal.org,
        before_id=common.int_param(query, "before_id", None, 0, store.MAX_ENTRY_ID),
        after_id=common.int_param(query, "after_id", None, 0, store.MAX_ENTRY_ID),
        limit=common.int_param(query, "limit", LOGS_LIMIT_DEFAULT, 1, LOGS_LIMIT_MAX))
    return common.json_response({"entries": [e.to_dict() for e in entries]})


def _refusal(exc: vending.Refusal) -> common.ApiError:
    """The vendor's refusals as answers, the same for a token and a rejected-token report."""
    if isinstance(exc, vending.NotFound):
        return common.ApiError(404, "unknown account")
    if isinstance(exc, vending.NotActive):
        return common.ApiError(409, str(exc), state=exc.state)
    return common.ApiError(503, str(exc), headers={"Retry-After": "5"})


async def access_token(request: web.Request) -> web.Response:
    """The busy route: an app may ask before every call it makes to the provider."""
    principal = auth.consumer(request)
    min_valid = common.int_param(
        request.query, "min_valid_seconds", MIN_VALID_DEFAULT_SECONDS, 0,
        MIN_VALID_MAX_SECONDS) if request.query_string else MIN_VALID_DEFAULT_SECONDS
    try:
        vended = await request.app[common.VENDOR].vend(
            request.match_info["id"], min_valid_seconds=min_valid, org=principal.org)
    except vending.Refusal as exc:
        raise _refusal(exc) from None
    # expires_in is the token's real remaining life, which may be less than was asked
    # for when the provider's tokens live shorter. orjson writes a datetime as isoformat().
    return web.Response(body=orjson.dumps(
        {"access_token": vended.access_token, "expires_at": vended.expires_at,
         "expires_in": vended.expires_in, "token_type": "Bearer"}), headers=VEND_HEADERS)


async def _sha256_body(request: web.Request) -> str:
    data = common.json_object(await request.read(), {"sha256"})
    sha256 = data.get("sha256")
    if not isinstance(sha256, str) or not rejected.SHA256.fullmatch(sha256):
        raise common.bad("sha256 must be the token's SHA-256 in lowercase hex (64 characters)")
    return sha256


_REPORTED = {
    rejected.REFRESH: "the app says the provider refused the current access token: "
                      "refreshed it",
    rejected.RECENT: "the app says the provider refused a token that a refresh just replaced",
    rejected.STALE: "the app says the provider refused an old token: nothing to do",
    rejected.TOO_SOON: "the app says the provider refused a token refreshed moments ago: "
                       "not refreshed again so soon",
    rejected.BLOCKED: "the app says the provider refused the current access token: the "
                      "provider is paused or the account backs off, not refreshed now",
}


async def rejected_token(request: web.Request) -> web.Response:
    """An app reports that the provider refused a token (by its hash, never the token)."""
    principal = auth.consumer(request)
    sha256 = await _sha256_body(request)
    account_id = request.match_info["id"]
    try:
        report = await request.app[common.VENDOR].report_rejected(
            account_id, sha256, org=principal.org)
    except vending.Refusal as exc:
        raise _refusal(exc) from None
    verdict, account = report.verdict, report.account
    failed = report.error_code is not None
    await common.entries(request).record(model.Entry.about(
        account, action=vocabulary.TOKEN_REJECTED, source=vocabulary.VEND,
        created_at=clock.now(),
        error=vocabulary.error(report.error_code, "the refresh it forced failed")
        if report.error_code else None,
        message="the app says the provider refused the current access token: the refresh "
                "failed" if failed else _REPORTED[verdict.kind],
        details={"verdict": verdict.kind}))
    if failed:
        raise common.ApiError(503, f"refresh failed: {report.error_code}",
                              headers={"Retry-After": "5"})
    retry_after = {"Retry-After": str(max(1, round(verdict.retry_after_seconds or 0)))}
    if verdict.kind == rejected.TOO_SOON:
        raise common.ApiError(429, "this token was refreshed moments ago; not again so soon",
                              headers=retry_after)
    if verdict.kind == rejected.BLOCKED:
        raise common.ApiError(503, "the provider is paused or the account is backing off",
                              headers=retry_after)
    if not verdict.refreshed:
        return common.json_response({"refreshed": False})
    expires_at = account.access_expires_at
    return common.json_response({"refreshed": True,
                                 "expires_at": expires_at.isoformat() if expires_at else None})


SCOPES_MAX = 50
SCOPE_LENGTH_MAX = 300


def _scopes(query: Mapping[str, str]) -> list[str]:
    """`scopes`, space- or comma-separated (a URL carries spaces as %20 or +)."""
    unknown = sorted(set(query) - {"scopes"})
    if unknown:
        raise common.bad(f"unknown parameter {unknown[0]!r}")
    scopes = [s for s in query.get("scopes", "").replace(",", " ").split(" ") if s]
    if len(scopes) > SCOPES_MAX:
        raise common.bad(f"at most {SCOPES_MAX} scopes")
    if any(len(s) > SCOPE_LENGTH_MAX or not s.isprintable() for s in scopes):
        raise common.bad(f"each scope must be 1-{SCOPE_LENGTH_MAX} printable characters")
    return scopes


async def app_token(request: web.Request) -> web.Response:
    """An application token (client_credentials) for the provider and scope set; any
    consumer token may have one, since it belongs to the app, not to a seller."""
    auth.consumer(request)
    scopes = _scopes(request.query)
    try:
        issued = await request.app[common.APP_TOKENS].get(request.match_info["name"], scopes)
    except apptokens.UnknownProvider:
        raise common.ApiError(404, "unknown provider") from None
    except apptokens.BadScope as exc:
        raise common.ApiError(400, str(exc)) from None
    except apptokens.Unavailable as exc:
        raise common.ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
    expires_in = max(0, int((issued.expires_at - clock.now()).total_seconds()))
    return common.json_response(
        {"access_token": issued.access_token, "token_type": "Bearer",
         "expires_in": expires_in, "expires_at": issued.expires_at.isoformat()},
        headers=NO_STORE)


DELIVERY_PARAMS = frozenset({"endpoint", "state", "type", "event_id", "before_id", "limit"})
DELIVERIES_LIMIT_DEFAULT = 100
DELIVERIES_LIMIT_MAX = 1000


async def webhook_deliveries(request: web.Request) -> web.Response:
    """Deliveries newest first, with their state, attempts and last error (SPEC 10.2).
    Events of every org go to the same endpoints: an org token sees none of it."""
    principal = auth.admin(request)
    if principal.org is not None:
        raise common.ApiError(403, "webhook deliveries need the admin token")
    query = request.query
    unknown = sorted(set(query) - DELIVERY_PARAMS)
    if unknown:
        raise common.bad(f"unknown parameter {unknown[0]!r}")
    endpoint = query.get("endpoint")  # rows outlive an endpoint's removal from the config
    if endpoint is not None and not 0 < len(endpoint) <= 200:
        raise common.bad("endpoint must be 1-200 characters")
    state = query.get("state")
    if state is not None and state not in model.DELIVERY_STATES:
        raise common.bad(f"state must be one of {', '.join(model.DELIVERY_STATES)}")
    event_type = query.get("type")
    if event_type is not None and event_type not in vocabulary.EVENT_TYPES:
        raise common.bad(f"type must be one of {', '.join(vocabulary.EVENT_TYPES)}")
    rows = await request.app[common.STORE].list_deliveries(
        endpoint=endpoint, state=state, type=event_type,
        event_id=common.int_param(query, "event_id", None, 1, store.MAX_ENTRY_ID),
        before_id=common.int_param(query, "before_id", None, 1, store.MAX_ENTRY_ID),
        limit=common.int_param(query, "limit", DELIVERIES_LIMIT_DEFAULT, 1, DELIVERIES_LIMIT_MAX))
    return common.json_response({"deliveries": [d.public() for d in rows]})


def setup(routes: errors.Routes) -> None:
    # The busiest route first: its path is matched against these in this order.
    routes.get("/api/accounts/{id}/access-token", access_token)
    routes.post("/api/accounts/{id}/refresh", refresh)
    routes.post("/api/accounts/{id}/access-token/rejected", rejected_token)
    routes.get("/api/providers/{name}/app-token", app_token)
    routes.get("/api/webhook-deliveries", webhook_deliveries)
    routes.get("/api/logs", logs)
