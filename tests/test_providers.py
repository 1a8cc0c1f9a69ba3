"""Provider clients without a network: request building, the parsing matrix, masking."""

from __future__ import annotations

import base64
import secrets
import urllib.parse
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tokend import config, crypto, providers
from tokend.ebay import profile as ebay_profile
from tokend.providers import answer, client

TOKEN_URL = "https://auth.test.invalid/identity/v1/oauth2/token"
SCOPE_A = "https://api.ebay.com/oauth/api_scope"
SCOPE_B = "https://api.ebay.com/oauth/api_scope/sell.inventory"
CANARY_TOKEN = "v^1.1#i^1#CANARYREFRESH" + secrets.token_hex(16)
CANARY_SECRET = "CANARYSECRET-" + secrets.token_hex(16)
NEW_ACCESS = "v^1.1#i^1#NEWACCESS" + secrets.token_hex(16)
NEW_REFRESH = "v^1.1#i^1#NEWREFRESH" + secrets.token_hex(16)


class _Sent:
    output_size = 0


class Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 wants."""

    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("stream_writer", _Sent())
        super().__init__(method, url, **kwargs)


@pytest.fixture
def keyring() -> crypto.Keyring:
    return crypto.Keyring.from_lines([crypto.generate_key_line()])


def provider_config(**overrides) -> config.ProviderConfig:
    values = {
        "name": "ebay-test", "type": "ebay", "environment": "production",
        "client_id": "client-id-1", "client_secret": CANARY_SECRET, "scopes": (SCOPE_A,),
        "token_url": TOKEN_URL, "client_auth": "basic", "daily_quota": None,
    }
    values.update(overrides)
    return config.ProviderConfig(**values)


def ebay(**overrides) -> providers.Provider:
    return providers.build(provider_config(**overrides), request_timeout_seconds=5.0)


def generic(**overrides) -> providers.Provider:
    overrides.setdefault("type", "oauth2")
    overrides.setdefault("name", "acme")
    return providers.build(provider_config(**overrides), request_timeout_seconds=5.0)


def canary_free(*things: object) -> None:
    """None of the planted secrets, in any encoding, shows up in any of `things`."""
    shapes = set()
    for secret in (CANARY_TOKEN, CANARY_SECRET):
        shapes |= {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
                   base64.b64encode(secret.encode()).decode()}
    shapes.add(base64.b64encode(f"client-id-1:{CANARY_SECRET}".encode()).decode())
    for thing in things:
        text = thing if isinstance(thing, str) else repr(thing)
        if not isinstance(thing, str):
            text += orjson.dumps(thing, default=repr).decode()
        for shape in shapes:
            assert shape not in text


async def exchange(provider: providers.Provider, keyring: crypto.Keyring,
                   **response) -> providers.Result:
    prepared = provider.prepare(CANARY_TOKEN, account_id="acct-1")
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, response_class=Response, **response)
        async with aiohttp.ClientSession() as session:
            result = await provider.send(session, prepared)
    canary_free(result, result.request, result.response, result.error_description)
    return result


def sent_form(mocked: aioresponses) -> tuple[dict[str, str], dict[str, str]]:
    [calls] = mocked.requests.values()
    [call] = calls
    body = call.kwargs["data"].decode()
    return dict(urllib.parse.parse_qsl(body, strict_parsing=True)), dict(call.kwargs["headers"])


# -- building the request ------------------------------------------------------------------

async def test_ebay_request_uses_basic_auth_form_body_and_the_provider_scopes(keyring):
    provider = ebay(scopes=(SCOPE_A, SCOPE_B))
    prepared = provider.prepare(CANARY_TOKEN)
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload={"access_token": NEW_ACCESS, "expires_in": 7200},
                    response_class=Response)
        async with aiohttp.ClientSession() as session:
            result = await provider.send(session, prepared)
        form, headers = sent_form(mocked)
    assert result.ok
    expected = base64.b64encode(f"client-id-1:{CANARY_SECRET}".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form == {"grant_type": "refresh_token", "refresh_token": CANARY_TOKEN,
                    "scope": f"{SCOPE_A} {SCOPE_B}"}
    assert "%20" in prepared.body and "+" not in prepared.body
    assert prepared.request["headers"]["Authorization"] == "Basic ****"
    assert prepared.request["method"] == "POST" and prepared.request["url"] == TOKEN_URL
    canary_free(prepared, prepared.request)


async def test_the_accounts_own_scopes_win_over_the_providers(keyring):
    provider = ebay(scopes=(SCOPE_A,))
    prepared = provider.prepare(CANARY_TOKEN, (SCOPE_B,))
    assert dict(urllib.parse.parse_qsl(prepared.body))["scope"] == SCOPE_B


async def test_no_scopes_anywhere_sends_no_scope_parameter(keyring):
    prepared = generic(scopes=()).prepare(CANARY_TOKEN)
    assert "scope" not in dict(urllib.parse.parse_qsl(prepared.body))


async def test_generic_body_auth_puts_the_client_in_the_form(keyring):
    provider = generic(client_auth="body")
    prepared = provider.prepare("opaque-refresh-token")
    form = dict(urllib.parse.parse_qsl(prepared.body))
    assert "Authorization" not in prepared.headers
    assert form["client_id"] == "client-id-1" and form["client_secret"] == CANARY_SECRET
    assert form["refresh_token"] == "opaque-refresh-token"
    assert "opaque-refresh-token" not in repr(prepared)
    canary_free(prepared, prepared.request)


async def test_generic_basic_auth_matches_ebay(keyring):
    prepared = generic().prepare(CANARY_TOKEN)
    assert prepared.headers["Authorization"].startswith("Basic ")
    assert "client_secret" not in prepared.body


def test_build_rejects_an_unknown_type():
    with pytest.raises(ValueError, match="unknown type"):
        providers.build(provider_config(type="saml"), request_timeout_seconds=1.0)


# -- refusing to send ------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["empty", "blank", "double_encrypted", "not_ebay_shaped"])
async def test_unusable_refresh_tokens_fail_with_decrypt_failed_and_send_nothing(keyring, case):
    token = {
        "empty": "", "blank": "  \n",
        "double_encrypted": keyring.encrypt(CANARY_TOKEN, account_id="acct-1",
                                            column="refresh_token"),
        "not_ebay_shaped": "AgAAAA" + CANARY_TOKEN[6:],
    }[case]
    with aioresponses() as mocked:
        with pytest.raises(providers.RefreshError) as caught:
            ebay().prepare(token, account_id="acct-1")
        assert not mocked.requests
    error = caught.value
    assert error.code == "decrypt_failed" and error.kind == "decrypt"
    assert str(error)
    canary_free(str(error), repr(error), error.message, error.args)


async def test_a_non_ebay_token_is_fine_for_a_generic_provider(keyring):
    prepared = generic().prepare("AgAAAA-opaque")
    assert dict(urllib.parse.parse_qsl(prepared.body))["refresh_token"] == "AgAAAA-opaque"


# -- the parsing matrix -----------------------------------------------------------------------

OK = "ok"
MATRIX = [
    # name, response kwargs, expected code (or OK), expected kind
    ("ebay_success", {"payload": {"access_token": NEW_ACCESS, "expires_in": 7200,
                                  "token_type": "User Access Token"}}, OK, None),
    ("expires_in_string", {"payload": {"access_token": "a", "expires_in": " 3600 "}}, OK, None),
    ("expires_in_float", {"payload": {"access_token": "a", "expires_in": 3599.5}}, OK, None),
    ("expires_in_words", {"payload": {"access_token": "a", "expires_in": "soon"}},
     "bad_response", "transient"),
    ("expires_in_negative", {"payload": {"access_token": "a", "expires_in": -5}},
     "bad_response", "transient"),
    ("expires_in_zero", {"payload": {"access_token": "a", "expires_in": 0}},
     "bad_response", "transient"),
    ("expires_in_bool", {"payload": {"access_token": "a", "expires_in": True}},
     "bad_response", "transient"),
    ("expires_in_absurd", {"payload": {"access_token": "a", "expires_in": 1e20}},
     "bad_response", "transient"),
    ("expires_in_object", {"payload": {"access_token": "a", "expires_in": {"s": 1}}},
     "bad_response", "transient"),
    ("expires_in_nan", {"body": '{"access_token": "a", "expires_in": "NaN"}'},
     "bad_response", "transient"),
    ("missing_access_token", {"payload": {"expires_in": 7200}}, "bad_response", "transient"),
    ("blank_access_token", {"payload": {"access_token": " ", "expires_in": 7200}},
     "bad_response", "transient"),
    ("access_token_not_string", {"payload": {"access_token": 12, "expires_in": 7200}},
     "bad_response", "transient"),
    ("refresh_token_not_string", {"payload": {"access_token": "a", "refresh_token": 5}},
     "bad_response", "transient"),
    ("json_array", {"body": "[1, 2]"}, "bad_response", "transient"),
    ("json_null", {"body": "null"}, "bad_response", "transient"),
    ("json_string", {"body": '"v^1.1#looks-like-a-token"'}, "bad_response", "transient"),
    ("empty_200", {"body": ""}, "bad_response", "transient"),
    ("broken_json_200", {"body": '{"access_token": "v^1.1#half'}, "bad_response", "transient"),
    ("html_200", {"body": "<html><body>Sign in</body></html>", "content_type": "text/html"},
     "bad_response", "transient"),
    ("error_in_200", {"payload": {"error": "invalid_grant", "error_description": "revoked"}},
     "invalid_grant", "reauth"),
    ("unknown_error_in_200", {"payload": {"error": "something_odd"}}, "something_odd", "config"),
    ("malformed_error_in_200", {"payload": {"error": {"message": "nope"}}},
     "bad_response", "config"),
    ("form_success", {"body": f"access_token={NEW_ACCESS}&expires_in=3600&scope=a+b",
                      "content_type": "application/x-www-form-urlencoded"}, OK, None),
    ("form_success_as_text", {"body": "access_token=abc&expires_in=60",
                              "content_type": "text/plain"}, OK, None),
    ("json_with_bom", {"body": '\ufeff{"access_token": "a", "expires_in": 60}'}, OK, None),
    ("unknown_charset", {"body": '{"access_token": "a", "expires_in": 60}',
                         "content_type": "application/json; charset=klingon"}, OK, None),
    ("invalid_grant_400", {"status": 400, "payload": {
        "error": "invalid_grant",
        "error_description": "the provided authorization refresh token is invalid"}},
     "invalid_grant", "reauth"),
    ("invalid_grant_form", {"status": 400, "body": "error=invalid_grant&error_description=gone",
                            "content_type": "application/x-www-form-urlencoded"},
     "invalid_grant", "reauth"),
    ("invalid_client_401", {"status": 401, "payload": {"error": "invalid_client"}},
     "invalid_client", "provider"),
    ("unauthorized_client", {"status": 400, "payload": {"error": "unauthorized_client"}},
     "unauthorized_client", "provider"),
    ("bare_401", {"status": 401, "body": ""}, "invalid_client", "provider"),
    ("invalid_scope", {"status": 400, "payload": {"error": "invalid_scope"}},
     "invalid_scope", "config"),
    ("invalid_request", {"status": 400, "payload": {"error": "invalid_request"}},
     "invalid_request", "config"),
    ("unsupported_grant_type", {"status": 400, "payload": {"error": "unsupported_grant_type"}},
     "unsupported_grant_type", "config"),
    ("unknown_code_400", {"status": 400, "payload": {"error": "weird_thing"}},
     "weird_thing", "config"),
    ("html_404", {"status": 404, "body": "<html>Not Found</html>", "content_type": "text/html"},
     "invalid_request", "config"),
    ("redirect_302", {"status": 302, "body": "", "headers": {"Location": "https://x.invalid/"}},
     "invalid_request", "config"),
    ("request_timeout_408", {"status": 408, "body": ""}, "timeout", "transient"),
    ("rate_limited_429", {"status": 429, "payload": {"errors": [{"message": "Too many"}]}},
     "rate_limited", "transient"),
    ("rate_limited_429_coded", {"status": 429, "payload": {"error": "invalid_request"}},
     "rate_limited", "transient"),
    ("server_error_500", {"status": 500, "payload": {"error": "server_error"}},
     "server_error", "transient"),
    ("bare_500", {"status": 500, "body": ""}, "server_error", "transient"),
    ("html_502", {"status": 502, "body": "<html><h1>502 Bad Gateway</h1></html>",
                  "content_type": "text/html"}, "server_error", "transient"),
    ("temporarily_unavailable_503", {"status": 503, "payload": {
        "error": "temporarily_unavailable"}}, "temporarily_unavailable", "transient"),
    ("invalid_grant_with_500", {"status": 500, "payload": {"error": "invalid_grant"}},
     "server_error", "transient"),
    ("garbage_code_500", {"status": 500, "payload": {"error": "<script>" * 20}},
     "server_error", "transient"),
]


@pytest.mark.parametrize(("response", "code", "kind"),
                         [m[1:] for m in MATRIX], ids=[m[0] for m in MATRIX])
async def test_parsing_matrix(keyring, response, code, kind):
    result = await exchange(ebay(), keyring, **response)
    assert result.response is not None
    assert result.response["status"] == response.get("status", 200)
    if code == OK:
        assert result.ok and result.grant is not None and result.error is None
        assert result.error_code is None and result.kind is None
        assert result.grant.expires_in > 0
    else:
        assert not result.ok and result.grant is None
        assert (result.error_code, result.kind) == (code, kind)
        assert result.error_description
        assert result.error["code"] == code and result.error["kind"] == kind


async def test_a_full_grant_is_read_field_by_field(keyring):
    result = await exchange(ebay(), keyring, payload={
        "access_token": NEW_ACCESS, "expires_in": "7200", "refresh_token": NEW_REFRESH,
        "refresh_token_expires_in": 47304000, "scope": [SCOPE_A, SCOPE_B],
        "token_type": "User Access Token",
    })
    grant = result.grant
    assert grant.access_token == NEW_ACCESS and grant.refresh_token == NEW_REFRESH
    assert grant.expires_in == 7200.0 and grant.refresh_token_expires_in == 47304000.0
    assert grant.scope == f"{SCOPE_A} {SCOPE_B}"
    assert NEW_ACCESS not in repr(result) and NEW_REFRESH not in repr(result)
    assert NEW_ACCESS not in orjson.dumps(result.response).decode()
    assert result.response["body"]["token_type"] == "User Access Token"
    before = datetime.now(UTC)
    assert result.sent_at.tzinfo is not None and result.sent_at <= before
    assert result.duration_ms >= 0


async def test_missing_expires_in_takes_the_documented_defaults(keyring):
    ebay_result = await exchange(ebay(), keyring, payload={"access_token": "a"})
    generic_result = await exchange(generic(), keyring, payload={"access_token": "a"})
    assert ebay_result.grant.expires_in == ebay_profile.ACCESS_TOKEN_LIFETIME_SECONDS == 7200
    assert generic_result.grant.expires_in == config.OAUTH2_DEFAULT_EXPIRES_IN_SECONDS


async def test_absent_or_empty_refresh_token_keeps_the_old_one(keyring):
    for payload in ({"access_token": "a"}, {"access_token": "a", "refresh_token": ""},
                    {"access_token": "a", "refresh_token": None}):
        result = await exchange(ebay(), keyring, payload=payload)
        assert result.grant.refresh_token is None
        assert result.grant.refresh_token_expires_in is None


async def test_nonsense_refresh_token_expiry_is_ignored_not_fatal(keyring):
    result = await exchange(ebay(), keyring, payload={
        "access_token": "a", "refresh_token": NEW_REFRESH, "refresh_token_expires_in": "never"})
    assert result.ok and result.grant.refresh_token_expires_in is None


async def test_error_descriptions_are_kept_and_bounded(keyring):
    result = await exchange(ebay(), keyring, status=400, payload={
        "error": "invalid_grant", "error_description": "line1\nline2 " + "x" * 1000})
    assert result.error_description.startswith("line1 line2 ")
    assert len(result.error_description) <= answer.DESCRIPTION_LIMIT
    ebay_style = await exchange(ebay(), keyring, status=429, payload={
        "errors": [{"errorId": 2001, "message": "Too many requests."}]})
    assert ebay_style.error_description == "Too many requests."
    html = await exchange(ebay(), keyring, status=502, body="<html>bad gateway</html>",
                          content_type="text/html")
    assert html.error_description.startswith("HTTP 502")
    assert html.response["body"] == "<html>bad gateway</html>"


class Stream:
    """A response body stream that counts what was taken from it."""

    def __init__(self, size: int | None) -> None:
        self.left = size
        self.consumed = 0

    async def read(self, n: int) -> bytes:
        if self.left is not None:
            n = min(n, self.left)
            self.left -= n
        self.consumed += n
        return b"x" * n


# Bodies this large do not fit through aioresponses; test_simulator sends a real 10 MiB one.
async def test_read_limited_stops_reading_past_the_limit():
    endless = Stream(None)
    body, too_big = await client.read_limited(endless, None, limit=1024 * 1024)
    assert too_big and body == b""
    assert endless.consumed == 1024 * 1024 + 1


async def test_read_limited_reads_a_body_of_exactly_the_limit():
    stream = Stream(client.BODY_LIMIT_BYTES)
    body, too_big = await client.read_limited(stream, client.BODY_LIMIT_BYTES)
    assert not too_big and len(body) == client.BODY_LIMIT_BYTES


async def test_read_limited_trusts_a_declared_oversize_without_reading():
    stream = Stream(None)
    _, too_big = await client.read_limited(stream, 50 * 1024 * 1024)
    assert too_big and stream.consumed == 0


async def test_a_session_that_raises_for_status_changes_nothing(keyring):
    provider = ebay()
    prepared = provider.prepare(CANARY_TOKEN)
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, status=400, payload={"error": "invalid_grant"},
                    response_class=Response)
        async with aiohttp.ClientSession(raise_for_status=True) as session:
            result = await provider.send(session, prepared)
    assert (result.error_code, result.kind) == ("invalid_grant", "reauth")


@pytest.mark.parametrize(("exception", "code", "kind"), [
    (TimeoutError(), "timeout", "transient"),
    (aiohttp.ServerTimeoutError("read timed out"), "timeout", "transient"),
    (aiohttp.ClientConnectionError("connection refused"), "connection_error", "transient"),
    (aiohttp.ServerDisconnectedError(), "connection_error", "transient"),
    (aiohttp.ClientPayloadError("response payload is not completed"), "connection_error",
     "transient"),
    (ConnectionResetError(104, "Connection reset by peer"), "connection_error", "transient"),
    (aiohttp.ClientResponseError(
        aiohttp.RequestInfo(URL(TOKEN_URL), "POST", CIMultiDictProxy(CIMultiDict()),
                            URL(TOKEN_URL)),
        (), status=400, message="bad status line"),
     "bad_response", "transient"),
    (aiohttp.InvalidURL("not a url"), "connection_error", "config"),
])
async def test_transport_failures_are_classified(keyring, exception, code, kind):
    result = await exchange(ebay(), keyring, exception=exception)
    assert (result.error_code, result.kind) == (code, kind)
    assert result.response is None and result.grant is None
    assert result.request["body"]


# -- Retry-After ---------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("header", "expected"), [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5), ("-5", 0.0),
    ("999999", answer.MAX_RETRY_AFTER_SECONDS),
    (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
    ("Wed, 01 May 2024 12:00:45 -0000", 45.0),
    (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
    (format_datetime(NOW + timedelta(days=3), usegmt=True), answer.MAX_RETRY_AFTER_SECONDS),
    ("soon", None), ("", None), (None, None), ("nan", None), ("inf", None),
    ("Wed, 99 Foo 2024", None),
])
def test_retry_after_forms(header, expected):
    assert answer.retry_after_seconds(header, NOW) == expected


async def test_retry_after_reaches_the_result(keyring):
    limited = await exchange(ebay(), keyring, status=429, body="",
                             headers={"Retry-After": "17"})
    assert (limited.error_code, limited.retry_after_seconds) == ("rate_limited", 17.0)
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    unavailable = await exchange(ebay(), keyring, status=503, body="",
                                 headers={"Retry-After": future})
    assert 100 <= unavailable.retry_after_seconds <= 120
    plain = await exchange(ebay(), keyring, status=500, body="")
    assert plain.retry_after_seconds is None


# -- masking of the exchange ----------------------------------------------------------------

ECHOES = [
    {"status": 400, "payload": {"error": "invalid_grant",
                                "error_description": f"token {CANARY_TOKEN} is revoked"}},
    {"status": 401, "payload": {"error": "invalid_client",
                                "error_description": f"bad secret {CANARY_SECRET}"}},
    {"status": 400, "body": "error=invalid_grant&error_description="
                            + urllib.parse.quote_plus(f"bad {CANARY_TOKEN}"),
     "content_type": "application/x-www-form-urlencoded"},
    {"status": 502, "body": f"<html>upstream said {CANARY_TOKEN} and "
                            f"{urllib.parse.quote(CANARY_SECRET)}</html>",
     "content_type": "text/html"},
    {"status": 200, "body": f'{{"access_token": "{NEW_ACCESS}", "refresh_token": '
                            f'"{CANARY_TOKEN}", "note": "{CANARY_SECRET}"}}'},
    {"status": 200, "body": f'{{"access_token": "{NEW_ACCESS}", "refresh_token": '
                            f'"{CANARY_TOKEN}", broken'},
    {"status": 200, "body": f"access_token={NEW_ACCESS}&refresh_token={CANARY_TOKEN}",
     "content_type": "text/plain"},
    {"status": 500, "body": f"Traceback: refresh_token={CANARY_TOKEN} "
                            f"client_secret={CANARY_SECRET}", "content_type": "text/plain"},
]


@pytest.mark.parametrize("response", ECHOES)
async def test_echoed_secrets_never_reach_the_result(keyring, response):
    # `exchange` checks every planted secret against repr(result), request and response.
    result = await exchange(ebay(), keyring, **response)
    dumped = orjson.dumps([result.request, result.response, result.error_description]).decode()
    assert NEW_ACCESS not in dumped
    assert result.request["headers"]["Authorization"] == "Basic ****"


async def test_the_masked_request_keeps_what_an_operator_needs(keyring):
    result = await exchange(ebay(scopes=(SCOPE_A, SCOPE_B)), keyring, payload={
        "access_token": NEW_ACCESS, "expires_in": 7200})
    form = dict(urllib.parse.parse_qsl(result.request["body"]))
    assert form["grant_type"] == "refresh_token"
    assert form["scope"] == f"{SCOPE_A} {SCOPE_B}"
    assert form["refresh_token"].startswith("v^1.")
    assert len(form["refresh_token"].replace(".", "")) <= 8
    assert result.response["body"]["access_token"].startswith("v^1.")
    assert result.response["body"]["expires_in"] == 7200


async def test_body_auth_secret_is_masked_in_the_request(keyring):
    result = await exchange(generic(client_auth="body"), keyring,
                            payload={"access_token": "a", "expires_in": 60})
    form = dict(urllib.parse.parse_qsl(result.request["body"]))
    assert form["client_id"] == "client-id-1"
    assert CANARY_SECRET not in form["client_secret"]
