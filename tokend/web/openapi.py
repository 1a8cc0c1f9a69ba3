"""`GET /openapi.json`: the HTTP contract as an OpenAPI 3.1 document, built once from the
data below. Limits, enums and close codes are read from the modules that enforce them, and
`tests/test_openapi.py` fails when a route is registered and not described here or the other
way round, so the document cannot drift from the router."""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any

from aiohttp import web

from tokend import connect, model, store, vocabulary
from tokend.web import api, common, console, ebay, errors, routes, websocket
from tokend.web import connect as connect_routes

Schema = dict[str, Any]
Operation = dict[str, Any]

def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(type_: str, **more: Any) -> Schema:
    return {"type": [type_, "null"], **more}


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None,
            **more: Any) -> Schema:
    """An object with these properties; later versions may add more (clients ignore them)."""
    return {"type": "object", "required": list(required),
            "properties": {**required, **(optional or {})}, **more}


STRING = {"type": "string"}
TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = _nullable("string", format="date-time")
STRING_OR_NULL = _nullable("string")
INTEGER = {"type": "integer"}
ANY_OBJECT = {"type": "object"}
ANY_OBJECT_OR_NULL = _nullable("object")


# -- shared answers -----------------------------------------------------------------------

def _json(description: str, schema: Schema, *, media: str = common.JSON,
          headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {media: {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(description, _ref("Error"), headers=headers)


def _header(description: str, schema: Schema = STRING) -> dict[str, Any]:
    return {"description": description, "schema": schema}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": STRING}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": STRING}}}


RETRY_AFTER = {"Retry-After": _header("seconds to wait before asking again")}
NO_STORE = {"Cache-Control": _header("always `no-store`: the answer carries a secret")}
BAD_REQUEST = _error("a parameter or the body cannot be understood; the error says which")
UNAUTHORIZED = _error("no bearer token, or not one this route accepts",
                      headers={"WWW-Authenticate": _header("`Bearer`")})
UNKNOWN_ACCOUNT = _error("no such account, or one of another org (the same answer)")
TOO_LARGE = _error("the body is longer than the server accepts (64 KiB)")
DATABASE = _error("the database did not answer; nothing changed, try again")


def _admin_errors(**more: dict[str, Any]) -> dict[str, Any]:
    return {"401": UNAUTHORIZED, **more, "503": DATABASE}


# -- parameters ---------------------------------------------------------------------------

def _query(name: str, description: str, schema: Schema, **more: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema, **more}


def _path(name: str, description: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}, **more}


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return _query("limit", f"how many, at most {maximum}",
                  {"type": "integer", "minimum": 1, "maximum": maximum, "default": default})


def _entry_id(name: str, description: str, low: int = 0) -> dict[str, Any]:
    return _query(name, description,
                  {"type": "integer", "minimum": low, "maximum": store.MAX_ENTRY_ID})


ACCOUNT_ID = _path("id", "the account's id", example="acct-1")
PROVIDER_NAME = _path("name", "a provider table's name in the configuration",
                      example="ebay-sandbox")
ASSET_NAME = _path("name", "a script or style sheet of the page",
                   schema={"type": "string", "enum": sorted(routes.ASSETS)})


# -- schemas ------------------------------------------------------------------------------

def _account() -> Schema:
    return _object({
        "id": STRING, "org": STRING, "provider": STRING, "name": STRING,
        "scopes": {"type": "array", "items": STRING},
        "state": {"type": "string", "enum": list(model.STATES)},
        "status": {"type": "string", "enum": list(console.STATUSES),
                   "description": "the state an operator reads: an active account with "
                                  "failures is `failing`"},
        "access_expires_at": TIME_OR_NULL, "refresh_expires_at": TIME_OR_NULL,
        "last_refresh_at": TIME_OR_NULL, "consecutive_failures": INTEGER,
        "next_attempt_at": TIME, "lease_owner": STRING_OR_NULL,
        "lease_expires_at": TIME_OR_NULL, "version": INTEGER, "last_error": STRING_OR_NULL,
        "created_at": TIME, "updated_at": TIME, "provider_user_id": STRING_OR_NULL,
        "provider_user_name": STRING_OR_NULL, "state_reason": STRING_OR_NULL,
        "refresh_expiry_notice_days": _nullable("integer"), "last_vended_at": TIME_OR_NULL,
    }, description="An account as an operator sees it: never a token, not even encrypted.")


def _entry() -> Schema:
    exchange = _nullable("object", description="masked: secrets are `prefix...suffix`")
    return _object({
        "id": INTEGER, "created_at": TIME,
        "action": {"type": "string", "description": "one of `/api/vocabulary`'s actions",
                   "examples": list(vocabulary.ACTIONS[:3])},
        "source": {"type": "string", "enum": list(vocabulary.SOURCES)},
        "account_id": STRING_OR_NULL, "org_id": STRING_OR_NULL, "provider": STRING_OR_NULL,
        "environment": STRING_OR_NULL, "duration_ms": _nullable("number"),
        "request": exchange, "response": exchange,
        "error": {"oneOf": [{"type": "null"}, _object(
            {"code": STRING}, {"description": STRING_OR_NULL, "kind": STRING_OR_NULL,
                               "retry_after_seconds": _nullable("number")})]},
        "message": STRING_OR_NULL, "details": ANY_OBJECT_OR_NULL,
    }, description="One HTTP-log entry (SPEC section 6), already masked.")


def _stream_messages() -> dict[str, Schema]:
    return {
        "StreamHello": _object({
            "type": {"const": "hello"},
            "token": {"type": "string", "description": "the admin token or an org token"},
        }, {
            "since": {"type": ["integer", "null"], "minimum": 0,
                      "maximum": store.MAX_ENTRY_ID,
                      "description": "send the entries after this id; null: the newest ones"},
            "sources": {"type": "array", "items": {
                "type": "string", "enum": list(vocabulary.SOURCES)},
                "description": "only entries of these sources; empty: all"},
            "account_id": {"type": ["string", "null"]},
        }, description="The client's first message on `/ws/logs`."),
        "StreamReady": _object({"type": {"const": "ready"}}),
        "StreamEntry": {"allOf": [_object({"type": {"const": "entry"}}), _ref("Entry")]},
        "StreamEntries": _object({"type": {"const": "entries"},
                                  "entries": {"type": "array", "items": _ref("Entry")}},
                                 description="entries that were ready together, oldest first"),
        "StreamDropped": _object({"type": {"const": "dropped"},
                                  "count": {"type": "integer", "minimum": 1}},
                                 description="the client fell behind: this many entries "
                                             "were not sent to it"),
    }


def _schemas() -> dict[str, Schema]:
    return {
        "Error": _object({"error": STRING}, description=(
            "Every error of the JSON routes. Some carry one more field that says why "
            "(`state` of an account, `code` of a refused notification).")),
        "Account": _account(),
        "Entry": _entry(),
        "AccessToken": _object({
            "access_token": {"type": "string", "description": "the plaintext token"},
            "token_type": {"const": "Bearer"}, "expires_at": TIME,
            "expires_in": {"type": "integer", "minimum": 0,
                           "description": "seconds the token still lives; may be less "
                                          "than asked when the provider's live shorter"}}),
        "RefreshResult": _object({
            "success": {"type": "boolean"}, "error": STRING_OR_NULL,
            "error_description": STRING_OR_NULL, "entry_id": _nullable("integer"),
        }, {"request": ANY_OBJECT_OR_NULL, "response": ANY_OBJECT_OR_NULL},
            description="`request` and `response` (masked) only when `debug` was asked"),
        "Attempt": _object({
            "account_id": STRING, "source": {"type": "string",
                                             "enum": list(vocabulary.SOURCES)},
            "started_at": TIME, "finished_at": TIME, "success": {"type": "boolean"},
            "error_code": STRING_OR_NULL, "error_message": STRING_OR_NULL}),
        "Delivery": _object({
            "id": INTEGER, "event_id": INTEGER, "endpoint": STRING,
            "type": {"type": "string", "enum": list(vocabulary.EVENT_TYPES)},
            "data": ANY_OBJECT, "event_at": TIME,
            "state": {"type": "string", "enum": list(model.DELIVERY_STATES)},
            "attempts": INTEGER, "next_attempt_at": TIME, "lease_owner": STRING_OR_NULL,
            "lease_expires_at": TIME_OR_NULL, "last_status": _nullable("integer"),
            "last_error": STRING_OR_NULL, "created_at": TIME, "finished_at": TIME_OR_NULL}),
        "Provider": _object({
            "name": STRING, "configured": {"type": "boolean"},
            "paused_until": TIME_OR_NULL, "pause_reason": STRING_OR_NULL,
            "calls_today": INTEGER,
            "calls_today_by_grant": {"type": "object", "additionalProperties": INTEGER},
            "daily_quota": _nullable("integer"), "projected_daily_calls": {"type": "number"},
            "over_quota": {"type": "boolean"}, "active_accounts": INTEGER,
            "failing_by_error": {"type": "object", "additionalProperties": INTEGER}}),
        "LoopStatus": _object({
            "loops": {"type": "array", "items": _object({
                "name": STRING, "instance": STRING, "interval_seconds": {"type": "number"},
                "last_started_at": TIME_OR_NULL, "last_finished_at": TIME_OR_NULL,
                "last_status": STRING_OR_NULL, "stale": {"type": "boolean"},
                "last_summary": ANY_OBJECT_OR_NULL})},
            "accounts": {"type": "object", "additionalProperties": INTEGER},
            "failing_accounts": {"type": "object", "additionalProperties": INTEGER},
            "refresh_tokens_expiring": {"type": "object", "additionalProperties": INTEGER},
            "paused_providers": {"type": "object", "additionalProperties": TIME},
            "quota": {"type": "object", "additionalProperties": ANY_OBJECT},
            "budget": {"type": "object", "additionalProperties": ANY_OBJECT},
            "checked_at": TIME, "instance": STRING}),
        "Health": _object({
            "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
            "serviceId": STRING,
            "checks": {"type": "object", "additionalProperties": {
                "type": "array", "items": _object(
                    {"status": {"type": "string", "enum": ["pass", "warn", "fail"]}},
                    {"componentType": STRING, "observedValue": _nullable("number"),
                     "observedUnit": STRING, "time": TIME, "output": STRING})}}},
            description="The IETF health-check draft format (`application/health+json`)."),
        "Vocabulary": _object({
            "sources": {"type": "array", "items": STRING},
            "actions": {"type": "array", "items": STRING},
            "error_fields": {"type": "array", "items": STRING},
            "close_codes": {"type": "object", "additionalProperties": INTEGER},
            "event_types": {"type": "array", "items": STRING}}),
        **_stream_messages(),
    }


# -- operations ---------------------------------------------------------------------------

ADMIN = [{"adminBearer": []}]
CONSUMER = [{"consumerBearer": []}]
PUBLIC: list[dict[str, list[str]]] = []


def _op(tag: str, summary: str, responses: dict[str, Any], *, security: list = PUBLIC,
        parameters: list[dict[str, Any]] | None = None, body: Schema | None = None,
        body_required: bool = False, example: Any = None, description: str | None = None,
        **more: Any) -> Operation:
    operation: Operation = {"tags": [tag], "summary": summary, "security": security,
                            "responses": responses}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if example is not None:
            media["example"] = example
        operation["requestBody"] = {"required": body_required,
                                    "content": {common.JSON: media}}
    return {**operation, **more}


def _page(tag: str, summary: str) -> Operation:
    return _op(tag, summary, {"200": _html("the page; it asks for a token itself")})


def _asset(tag: str) -> Operation:
    file = {"description": "the file", "content": {
        media: {"schema": STRING} for media in sorted(set(routes.ASSET_TYPES.values()))}}
    return _op(tag, "a script or style sheet of the page", {
        "200": file, "206": {**file, "description": "the asked `Range` of the file"},
        "304": {"description": "not modified since `If-Modified-Since`"},
        "404": _error("no such file"),
        "412": {"description": "`If-Match` or `If-Unmodified-Since` does not hold"},
        "416": {"description": "the asked `Range` is outside the file"},
    }, parameters=[ASSET_NAME])


def _probe(name: str, summary: str) -> Operation:
    return _op("probes", summary, {
        "200": _text("`ok`, or with `?verbose` one `[+]check ok` line per check"),
        "503": _text("one `[+]` or `[-]` line per check, then why it failed"),
    }, parameters=[_query("verbose", "name each check", {"type": "string"},
                          allowEmptyValue=True)])


def _account_action(summary: str, refusal: str) -> Operation:
    return _op("accounts", summary, {
        "200": _json("the account as it is now", _object({"account": _ref("Account")})),
        **_admin_errors(**{"404": UNKNOWN_ACCOUNT,
                           "409": _error(refusal + "; `state` says what the account is")}),
    }, security=ADMIN, parameters=[ACCOUNT_ID])


def _paths() -> dict[str, dict[str, Operation]]:
    access_token = _json("a token valid for at least `min_valid_seconds`",
                         _ref("AccessToken"), headers=NO_STORE)
    entries = {"type": "array", "items": _ref("Entry")}
    return {
        "/": {"get": _page("pages", "the operator's console")},
        "/terminal": {"get": _page("pages", "the live log terminal")},
        "/terminal/{name}": {"get": _asset("pages")},
        "/console/{name}": {"get": _asset("pages")},
        "/openapi.json": {"get": _op("meta", "this document", {
            "200": _json("the OpenAPI document", {"type": "object"})})},
        "/api/vocabulary": {"get": _op("meta", "the words every log entry is written in", {
            "200": _json("sources, actions, error fields, close codes, event types",
                         _ref("Vocabulary"))})},
        "/health": {"get": _op("probes", "health: only a wedged loop fails it", {
            "200": _json("pass or warn (a database outage warns)", _ref("Health"),
                         media=routes.HEALTH_JSON),
            "503": _json("fail: no finished cycle within 3 intervals", _ref("Health"),
                         media=routes.HEALTH_JSON)})},
        "/livez": {"get": _probe("livez", "liveness: the refresh loop turns")},
        "/readyz": {"get": _probe("readyz", "readiness: the database answers and this "
                                            "process is not stopping")},
        "/loop-status": {"get": _op("probes", "each loop's heartbeat, accounts by state, "
                                    "pauses, quota and budget; no secrets", {
            "200": _json("the status", _ref("LoopStatus")), "503": DATABASE})},
        "/metrics": {"get": _op("probes", "Prometheus metrics", {
            "200": _text("the Prometheus text format; the database's gauges keep their "
                         "last values while it does not answer")})},
        "/ws/logs": {"get": _op(
            "stream", "the live log stream (WebSocket)", {
                "101": {"description": "switched to the WebSocket protocol"},
                "400": _error("not a WebSocket upgrade"),
                "403": _error("the Origin is neither this server nor an allowed origin"),
            }, description=(
                "After the upgrade the client sends one `StreamHello` (within "
                f"{websocket.HELLO_TIMEOUT_SECONDS:g} s). The server answers `StreamReady`, "
                "the entries after `since` (or the newest ones) oldest first, then live "
                "entries as `StreamEntry` or `StreamEntries` frames, and `StreamDropped` "
                "when the client fell behind. A bad hello closes the socket with the "
                "close codes in `x-websocket.close_codes`."),
            **{"x-websocket": {
                "client_messages": [_ref("StreamHello")],
                "server_messages": [_ref("StreamReady"), _ref("StreamEntry"),
                                    _ref("StreamEntries"), _ref("StreamDropped")],
                "close_codes": dict(vocabulary.CLOSE_CODES)}})},
        "/api/accounts": {"get": _op("accounts", "the accounts, filtered and paged", {
            "200": _json("a page; pass `next_cursor` back as `cursor` with the same filters "
                         "for the next one (null: this page is the last)", _object({
                             "accounts": {"type": "array", "items": _ref("Account")},
                             "next_cursor": STRING_OR_NULL})),
            **_admin_errors(**{"400": BAD_REQUEST})},
            security=ADMIN, parameters=[
                _query("q", "a part of the id, name, org or seller", {"type": "string"}),
                _query("state", "by status", {"type": "string",
                                              "enum": list(console.STATUSES)}),
                _query("provider", "by provider", {"type": "string"}),
                _query("org", "by org (an org token sees its own only)", {"type": "string"}),
                _query("sort", "sort key", {"type": "string", "enum": list(store.SORT_KEYS),
                                            "default": "name"}),
                _query("order", "sort order", {"type": "string", "enum": ["asc", "desc"],
                                               "default": "asc"}),
                _limit(console.PAGE_LIMIT_DEFAULT, console.PAGE_LIMIT_MAX),
                _query("cursor", "`next_cursor` of the page before", {"type": "string"})])},
        "/api/accounts/{id}/refresh": {"post": _op("accounts", "refresh one account now", {
            "200": _json("the attempt's outcome; a failed refresh is still a 200",
                         _ref("RefreshResult")),
            **_admin_errors(**{"400": BAD_REQUEST, "404": UNKNOWN_ACCOUNT,
                               "409": _error("the account is not active, or another worker "
                                             "is refreshing it"),
                               "413": TOO_LARGE})},
            security=ADMIN, parameters=[ACCOUNT_ID],
            body=_object({}, {"debug": {"type": "boolean", "default": False}},
                         additionalProperties=False), example={"debug": True},
            description="With `{\"debug\": true}` the answer carries the masked exchange "
                        "and the entry has source `debug`.")},
        "/api/accounts/{id}/disable": {"post": _account_action(
            "stop refreshing an account", "a deleted account cannot be disabled")},
        "/api/accounts/{id}/enable": {"post": _account_action(
            "resume refreshing a disabled account", "only a disabled account can be enabled")},
        "/api/accounts/{id}/clear-backoff": {"post": _account_action(
            "try a failing account again at once",
            "only an active account that is not being refreshed has a backoff")},
        "/api/accounts/{id}/attempts": {"get": _op("accounts", "the account's refresh "
                                                   "attempts, newest first", {
            "200": _json("the attempts", _object({
                "attempts": {"type": "array", "items": _ref("Attempt")}})),
            **_admin_errors(**{"400": BAD_REQUEST, "404": UNKNOWN_ACCOUNT})},
            security=ADMIN, parameters=[
                ACCOUNT_ID, _limit(console.ATTEMPTS_LIMIT_DEFAULT, console.ATTEMPTS_LIMIT_MAX)])},
        "/api/accounts/{id}/access-token": {"get": _op(
            "vending", "the account's access token, refreshed on demand", {
                "200": access_token,
                "400": BAD_REQUEST, "401": UNAUTHORIZED, "404": UNKNOWN_ACCOUNT,
                "409": _error("the account is not active; `state` says what it is"),
                "503": _error("no valid token can be had now (the refresh failed, another "
                              "worker holds it, or the database did not answer)",
                              headers=RETRY_AFTER)},
            security=CONSUMER, parameters=[
                ACCOUNT_ID,
                _query("min_valid_seconds", "the token must live at least this long",
                       {"type": "integer", "minimum": 0, "maximum": api.MIN_VALID_MAX_SECONDS,
                        "default": api.MIN_VALID_DEFAULT_SECONDS})])},
        "/api/providers": {"get": _op("providers", "each provider's pause, calls, quota and "
                                      "failing accounts", {
            "200": _json("the providers", _object({
                "providers": {"type": "array", "items": _ref("Provider")},
                "day": {"type": "string", "format": "date"}})),
            **_admin_errors()}, security=ADMIN)},
        "/api/providers/{name}/resume": {"post": _op("providers", "lift a provider's pause", {
            "200": _json("whether a pause was lifted", _object({
                "provider": STRING, "resumed": {"type": "boolean"}})),
            **_admin_errors(**{"403": _error("only the admin token can resume a provider"),
                               "404": _error("no such provider is configured")})},
            security=ADMIN, parameters=[PROVIDER_NAME])},
        "/api/providers/{name}/app-token": {"get": _op(
            "vending", "an application token (client_credentials grant)", {
                "200": access_token,
                "400": BAD_REQUEST, "401": UNAUTHORIZED,
                "404": _error("no such provider is configured"),
                "503": _error("no token can be had now", headers=RETRY_AFTER)},
            security=CONSUMER, parameters=[
                PROVIDER_NAME,
                _query("scopes", f"space- or comma-separated, at most {api.SCOPES_MAX}",
                       {"type": "string"})])},
        "/api/logs": {"get": _op("logs", "the log history, newest first", {
            "200": _json("the entries", _object({"entries": entries})),
            **_admin_errors(**{"400": BAD_REQUEST,
                               "404": _error("an org token asked for another org's account")})},
            security=ADMIN, parameters=[
                _query("source", "a comma list of sources",
                       {"type": "string", "examples": [",".join(vocabulary.SOURCES[:2])]}),
                _query("action", "an action", {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                                               "maxLength": 64}),
                _query("account_id", "one account's entries",
                       {"type": "string", "minLength": 1, "maxLength": 200}),
                _limit(api.LOGS_LIMIT_DEFAULT, api.LOGS_LIMIT_MAX),
                _entry_id("before_id", "entries older than this id"),
                _entry_id("after_id", "entries newer than this id")])},
        "/api/webhook-deliveries": {"get": _op("webhooks", "webhook deliveries, newest first", {
            "200": _json("the deliveries", _object({
                "deliveries": {"type": "array", "items": _ref("Delivery")}})),
            **_admin_errors(**{"400": BAD_REQUEST,
                               "403": _error("an org token sees no deliveries")})},
            security=ADMIN, parameters=[
                _query("endpoint", "one endpoint's", {"type": "string", "minLength": 1,
                                                      "maxLength": 200}),
                _query("state", "by state", {"type": "string",
                                             "enum": list(model.DELIVERY_STATES)}),
                _query("type", "by event type", {"type": "string",
                                                 "enum": list(vocabulary.EVENT_TYPES)}),
                _entry_id("event_id", "one event's deliveries", 1),
                _entry_id("before_id", "deliveries older than this id", 1),
                _limit(api.DELIVERIES_LIMIT_DEFAULT, api.DELIVERIES_LIMIT_MAX)])},
        "/api/connect-links": {"post": _op("connect", "a one-time consent link", {
            "201": _json("the link; it works once, for 15 minutes", _object({
                "url": {"type": "string", "format": "uri"}, "expires_at": TIME}),
                headers=NO_STORE),
            **_admin_errors(**{
                "400": BAD_REQUEST,
                "403": _error("this token cannot make links for that org"),
                "404": UNKNOWN_ACCOUNT,
                "409": _error("links cannot be made: the configuration lacks `public_url`, "
                              "the provider's authorize URL or redirect URI, or the account "
                              "is deleted"),
                "413": TOO_LARGE})},
            security=ADMIN, body_required=True, body=_object({
                "provider": _text_field(), "org": _text_field()}, {
                "account_id": {**_text_field(), "type": ["string", "null"],
                               "description": "reconnect this account"},
                "scopes": {"type": "array", "items": {"type": "string", "minLength": 1,
                                                      "pattern": "^[^ ]+$"}}},
                additionalProperties=False),
            example={"provider": "ebay-sandbox", "org": "acme"})},
        "/connect/{token}": {"get": _op("connect", "open a consent link", {
            "302": {"description": "to the provider's consent page",
                    "headers": {"Location": _header("the provider's authorize URL")}},
            "404": _html("no such link"),
            "409": _html("the link's provider is no longer configured"),
            "410": _html("the link was used or has expired"),
            "503": DATABASE}, parameters=[
                {**_path("token", "the link's secret token"), "schema": {"type": "string"}}])},
        connect.CALLBACK_PATH: {
            "get": _op("connect", "where the provider sends the browser back", {
                "200": _html("the account is connected or reconnected"),
                "400": _html("no or unknown state, no code, a provider error, or the code "
                             "exchange or identity call failed; nothing stored"),
                "403": _html("the seller declined consent"),
                "409": _html("the sign-in was used already, the seller is connected in this "
                             "org already, or a different seller signed in on a reconnect"),
                "410": _html("the sign-in took too long"),
                "503": DATABASE}, parameters=[
                    _query("state", "the state sent to the provider", {"type": "string"}),
                    _query("code", "the authorization code", {"type": "string"}),
                    _query("error", "the provider's error, e.g. `access_denied`",
                           {"type": "string"})])},
        "/ebay/notifications": {
            "get": _op("ebay", "eBay's endpoint challenge", {
                "200": _json("the challenge answered", _object({
                    "challengeResponse": {"type": "string", "pattern": "^[0-9a-f]{64}$"}})),
                "400": BAD_REQUEST,
                "404": _error("eBay notifications are not configured")}, parameters=[
                    _query("challenge_code", "eBay's challenge",
                           {"type": "string", "minLength": 1,
                            "maxLength": ebay.CHALLENGE_LIMIT}, required=True)]),
            "post": _op("ebay", "a notification from eBay (account deletion or revocation)", {
                "204": {"description": "verified and applied (or a replay of one)"},
                "400": _error("a verified message that is not a notification tokend reads"),
                "404": _error("eBay notifications are not configured"),
                "412": _error("the signature is missing, malformed or does not verify; "
                              "nothing changed"),
                "413": TOO_LARGE,
                "503": _error("eBay's public key cannot be fetched now, or the database did "
                              "not answer", headers=RETRY_AFTER)},
                parameters=[{"name": "X-EBAY-SIGNATURE", "in": "header", "required": False,
                             "description": "base64 JSON with `alg`, `kid`, `signature`",
                             "schema": {"type": "string"}}],
                body=ANY_OBJECT, body_required=True,
                description="eBay proves itself by the signature, checked before anything "
                            "changes.")},
        "/api/providers/{name}/signature": {"post": _op(
            "vending", "eBay's digital signature (RFC 9421) for one request", {
                "200": _json("the headers to send with the request", _object({
                    "headers": _object({
                        "x-ebay-signature-key": STRING, "Signature-Input": STRING,
                        "Signature": STRING}, {"Content-Digest": STRING}),
                    "signing_key_id": STRING})),
                "400": BAD_REQUEST, "401": UNAUTHORIZED,
                "404": _error("no such provider is configured"),
                "409": _error("the provider has no signing key"), "413": TOO_LARGE,
                "503": DATABASE},
            security=CONSUMER, parameters=[PROVIDER_NAME], body_required=True,
            body=_object({"method": {"type": "string", "examples": ["POST"]},
                          "url": {"type": "string", "format": "uri"}},
                         {"content_digest": {"type": "string",
                                             "description": "`sha-256=:...:`, only when the "
                                                            "request has a body"}},
                         additionalProperties=False),
            example={"method": "GET", "url": "https://apiz.ebay.com/sell/finances/v1/"
                                             "seller_funds_summary"})},
        "/api/accounts/{id}/access-token/rejected": {"post": _op(
            "vending", "report that the provider refused a token", {
                "200": _json("refreshed when the reported token was the current one; "
                             "otherwise nothing was called", {"oneOf": [
                                 _object({"refreshed": {"const": True}, "expires_at": TIME}),
                                 _object({"refreshed": {"const": False}})]}),
                "400": BAD_REQUEST, "401": UNAUTHORIZED, "404": UNKNOWN_ACCOUNT,
                "409": _error("the account is not active; `state` says what it is"),
                "413": TOO_LARGE,
                "429": _error("this account was reported too often", headers=RETRY_AFTER),
                "503": _error("the refresh failed or the budget is spent",
                              headers=RETRY_AFTER)},
            security=CONSUMER, parameters=[ACCOUNT_ID], body_required=True,
            body=_object({"sha256": {
                "type": "string", "pattern": "^[0-9a-f]{64}$",
                "description": "lowercase hex SHA-256 of the refused token, never the token"}},
                additionalProperties=False), example={"sha256": "0" * 64},
            description="A stale report (not the current token) costs nothing. The refresh "
                        "is single-flight across replicas and logged with source `vend`.")},
    }


def _text_field() -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": connect_routes.MAX_FIELD_CHARS}


def _version() -> str:
    try:
        return importlib.metadata.version("tokend")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def document() -> dict[str, Any]:
    """The document as served; built once, never changed after."""
    paths = _paths()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tokend", "version": _version(),
            "description": (
                "tokend keeps OAuth access tokens fresh and vends them to apps. Every JSON "
                "error is `{\"error\": \"...\"}` (schema `Error`); a request body is at "
                "most 64 KiB. A method a route does not serve answers 405 `Error`, an "
                "unknown path 404 `Error`. Every GET but the two browser routes of a "
                "connect link also answers HEAD.")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminBearer": {"type": "http", "scheme": "bearer", "description": (
                    "the admin token (every org) or an org token (`[server.org_tokens]`: "
                    "that org's accounts and entries only)")},
                "consumerBearer": {"type": "http", "scheme": "bearer", "description": (
                    "a consumer token (`consumer_token`, or `[server.consumer_org_tokens]` "
                    "for one org): vends tokens, nothing else")}},
            "schemas": _schemas()},
    }


@functools.cache
def _body() -> bytes:
    return common.dumps(document())


async def serve(_request: web.Request) -> web.Response:
    return web.Response(body=_body(), content_type=common.JSON)


def setup(routes: errors.Routes) -> None:
    routes.get("/openapi.json", serve)
