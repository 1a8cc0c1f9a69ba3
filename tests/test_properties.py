"""Properties: the token-endpoint answer parser against any answer, secrets in echoed
answers, and what the schedule promises under clock skew and to the due selection."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from tokend import config, crypto, model, providers, schedule, store
from tokend.providers import answer, client

KNOWN_CODES = ["invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope",
               "invalid_request", "unsupported_grant_type", "server_error",
               "temporarily_unavailable", "slow_down", "access_denied"]
PLAUSIBLE_KEYS = ["error", "error_description", "message", "errors", "longMessage",
                  "access_token", "expires_in", "refresh_token", "refresh_token_expires_in",
                  "refresh_expires_in", "scope", "token_type"]
SECRET_FIELDS = ["refresh_token", "access_token", "id_token", "client_secret"]
CONTENT_TYPES = [None, "", "application/json", "application/json; charset=utf-8",
                 "application/problem+json", "text/html", "text/html; charset=iso-8859-1",
                 "text/plain", "application/x-www-form-urlencoded", "application/octet-stream",
                 "application/xml"]
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

json_scalars = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(PLAUSIBLE_KEYS) | st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
keys = st.sampled_from(PLAUSIBLE_KEYS) | st.text(max_size=12)
token_shaped = st.dictionaries(
    keys,
    json_values | st.sampled_from(KNOWN_CODES) | st.integers(-10, 100_000)
    | st.from_regex(r"v\^1\.1#[A-Za-z0-9_#^-]{4,40}", fullmatch=True),
    max_size=6)


def _form(pairs: dict[str, str]) -> str:
    return urllib.parse.urlencode(pairs)


bodies = st.one_of(
    st.text(max_size=300),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    token_shaped.map(lambda v: orjson.dumps(v).decode()),
    st.dictionaries(keys, st.text(max_size=30) | st.sampled_from(KNOWN_CODES), max_size=5)
    .map(_form),
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", errors="replace")),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", " ", "\ufeff{}", "null", "[]", "{", "<html><body>502</body></html>",
                     '{"error": null}', '{"error": ""}', '{"access_token": ""}',
                     '{"access_token": "x", "expires_in": "NaN"}',
                     '{"access_token": "x", "expires_in": 1e309}',
                     '{"access_token": "x", "expires_in": -5}',
                     '{"access_token": "x", "refresh_token": 7}']),
)
statuses = st.integers(min_value=0, max_value=999) | st.sampled_from(
    [200, 201, 204, 301, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504])
content_types = st.sampled_from(CONTENT_TYPES) | st.text(max_size=40)
reasons = st.none() | st.text(max_size=40)


def check_error(outcome: answer.Error, status: int) -> None:
    assert isinstance(outcome.code, str) and _CODE.match(outcome.code), outcome
    assert outcome.kind in providers.KINDS and outcome.kind != providers.DECRYPT
    assert isinstance(outcome.description, str) and outcome.description
    assert len(outcome.description) <= answer.DESCRIPTION_LIMIT
    assert not _CONTROL.search(outcome.description)
    # A server error never costs a reauth or a provider pause: only the kinds that say
    # "try again" may come from a 5xx or a 429.
    if status >= 500 or status == 429:
        assert outcome.kind == providers.TRANSIENT
    if outcome.kind == providers.REAUTH:
        assert outcome.code == providers.INVALID_GRANT
    if outcome.kind == providers.PROVIDER:
        assert outcome.code in (providers.INVALID_CLIENT, providers.UNAUTHORIZED_CLIENT)


@settings(max_examples=400, deadline=None)
@given(statuses, reasons, bodies, content_types)
def test_interpret_never_raises_and_always_classifies(status: int, reason: str | None,
                                                      text: str, content_type: str | None,
                                                      ) -> None:
    outcome = answer.interpret(status, reason, text, content_type,
                               default_expires_in_seconds=7200.0)
    if isinstance(outcome, providers.Grant):
        assert 200 <= status < 300
        assert isinstance(outcome.access_token, str) and outcome.access_token.strip()
        assert 0 < outcome.expires_in <= answer.MAX_EXPIRES_IN_SECONDS
        assert outcome.refresh_token is None or (
            isinstance(outcome.refresh_token, str) and outcome.refresh_token)
        assert outcome.refresh_token_expires_in is None or outcome.refresh_token_expires_in > 0
    else:
        assert isinstance(outcome, answer.Error)
        check_error(outcome, status)


# -- secrets in the body --------------------------------------------------------------------

secret_values = st.builds(
    lambda prefix, tail: prefix + "SeCrEt" + tail,
    st.sampled_from(["v^1.1#i^1#r^1#", "", "ENC:v1:k1:", "eyJ"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_#^.",
            min_size=12, max_size=60))


@st.composite
def bodies_with_secrets(draw: st.DrawFn) -> tuple[str, str | None, list[str]]:
    """A body carrying secrets under secret field names, anywhere in its structure."""
    planted: list[str] = []

    def secret_dict() -> dict[str, Any]:
        fields = draw(st.lists(st.sampled_from(SECRET_FIELDS), min_size=1, max_size=3,
                               unique=True))
        out = {}
        for field in fields:
            value = draw(secret_values)
            planted.append(value)
            out[field] = value
        return out

    top: dict[str, Any] = draw(st.dictionaries(
        st.sampled_from(["error", "error_description", "message", "expires_in", "scope"]),
        st.sampled_from(KNOWN_CODES) | st.text(max_size=40) | st.integers(0, 10_000),
        max_size=4))
    top.update(secret_dict())
    shape = draw(st.sampled_from(["flat", "nested", "errors", "form", "form-as-text"]))
    if shape == "nested":
        top["error"] = {"message": draw(st.text(max_size=30)), **secret_dict()}
    elif shape == "errors":
        top["errors"] = [{"message": draw(st.text(max_size=30)), **secret_dict()}]
    if shape.startswith("form"):
        text = _form({k: str(v) for k, v in top.items()})
        content_type = ("application/x-www-form-urlencoded" if shape == "form"
                        else draw(st.sampled_from(["text/plain", None])))
    else:
        text = orjson.dumps(top).decode()
        content_type = draw(st.sampled_from(["application/json", None, "text/plain",
                                             "text/html"]))
    return text, content_type, planted


@settings(max_examples=300, deadline=None)
@given(statuses, bodies_with_secrets())
def test_a_secret_field_of_the_body_never_reaches_the_error_description(
        status: int, body: tuple[str, str | None, list[str]]) -> None:
    text, content_type, planted = body
    outcome = answer.interpret(status, "Reason", text, content_type,
                               default_expires_in_seconds=7200.0)
    if isinstance(outcome, answer.Error):
        check_error(outcome, status)
        for secret in planted:
            assert secret not in outcome.description
            assert secret not in outcome.code


# -- our own secrets echoed back, through the whole client -------------------------------------

CLIENT_ID = "client-id-1"
KEYRING = crypto.Keyring.from_lines([crypto.generate_key_line("k1")])


def _provider(secret: str) -> providers.Provider:
    return providers.build(config.ProviderConfig(
        name="ebay-test", type="ebay", environment="production", client_id=CLIENT_ID,
        client_secret=secret, scopes=("https://api.ebay.com/oauth/api_scope",),
        token_url="https://auth.test.invalid/identity/v1/oauth2/token"),
        request_timeout_seconds=5.0)


def shapes(token: str, secret: str) -> dict[str, str]:
    """Every form of our secrets a provider (or a proxy in front of it) might echo."""
    credentials = client.basic_credentials(CLIENT_ID, secret)  # what we send (RFC 6749 2.3.1)
    return {
        "token": token, "token_quoted": urllib.parse.quote(token, safe=""),
        "token_plus": urllib.parse.quote_plus(token), "secret": secret,
        "secret_quoted": urllib.parse.quote(secret, safe=""),
        "basic_credentials": credentials,
    }


ECHO_TEMPLATES = [
    '{{"error": "{code}", "error_description": "bad token {value}"}}',
    '{{"error": "{code}", "message": "{value}"}}',
    '{{"errors": [{{"errorId": 1, "message": "echo {value}"}}]}}',
    '{{"error": "{code}", "error_description": "x", "request": {{"body": "{value}"}}}}',
    "error={code}&error_description=got+{value}",
    "<html><body><pre>POST /token\nAuthorization: Basic {value}\n{value}</pre></body></html>",
    "Traceback (most recent call last): refresh_token={value} client_secret={value}",
    '{{"error": "{code}", "error_description": "cut here {value}',  # broken JSON
    "{value}",
    '{{"error": "{value}", "error_description": "a code no one defined"}}',
    "error={value}",
]
_SAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(alphabet=_SAFE_ALPHABET + "#^.~!*()'", min_size=16, max_size=48),
    st.text(alphabet=_SAFE_ALPHABET + "+/=:@$&", min_size=12, max_size=40),
    st.sampled_from(ECHO_TEMPLATES),
    st.sampled_from(["token", "token_quoted", "token_plus", "secret", "secret_quoted",
                     "basic_credentials"]),
    st.sampled_from([200, 400, 401, 404, 429, 500, 502, 503]),
    st.sampled_from(KNOWN_CODES),
    st.sampled_from(CONTENT_TYPES),
    st.booleans(),
)
def test_our_echoed_secrets_never_reach_what_is_kept_of_the_exchange(
        tail: str, secret_tail: str, template: str, shape: str, status: int, code: str,
        content_type: str | None, in_header: bool) -> None:
    token = "v^1.1#i^1#r^1#" + tail
    secret = "SECRET-" + secret_tail
    provider = _provider(secret)
    prepared = provider.prepare(token, account_id="acct-1")
    forms = shapes(token, secret)
    value = forms[shape]
    text = template.format(code=code, value=value.replace('"', ""))
    headers = CIMultiDict({"Content-Type": content_type or ""} if content_type else {})
    if in_header:
        headers["WWW-Authenticate"] = f'Basic realm="you sent {value}"'
        headers["X-Debug-Request"] = f"refresh_token={value}"
    outcome = provider.classify(prepared, datetime.now(UTC), time.monotonic(), status,
                                 "Reason", CIMultiDictProxy(headers), text.encode(), False,
                                 None)
    kept = orjson.dumps([outcome.error_code, outcome.error_description, outcome.request,
                         outcome.response, outcome.error]).decode()
    kept += repr(outcome)
    for name, form in forms.items():
        assert form not in kept, f"{name} echoed by the provider was kept as it is"


# -- the schedule ------------------------------------------------------------------------------

DAY = 86_400.0
EPOCH = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
SKEW_SECONDS = 300.0


@given(
    expires_in=st.floats(min_value=1.0, max_value=10 * DAY),
    threshold=st.floats(min_value=0.0, max_value=DAY),
    max_age=st.floats(min_value=1.0, max_value=30 * DAY),
    skew=st.floats(min_value=-SKEW_SECONDS, max_value=SKEW_SECONDS),
)
def test_a_replica_five_minutes_off_still_refreshes_in_time(
        expires_in: float, threshold: float, max_age: float, skew: float) -> None:
    """A replica whose clock is `skew` seconds ahead claims an account `skew` seconds early
    (behind: late). The schedule's margins make that harmless when they exceed the skew:
    the token is refreshed before it expires and not before the last refresh was sent."""
    due = schedule.next_refresh_at(EPOCH, expires_in, expiry_threshold_seconds=threshold,
                                   max_age_seconds=max_age)
    claimed = due - timedelta(seconds=skew)  # in true time
    expiry = EPOCH + timedelta(seconds=expires_in)
    if min(threshold, expires_in / 2) > SKEW_SECONDS:
        assert claimed < expiry
    if min(expires_in / 2, max_age) > SKEW_SECONDS:
        assert claimed > EPOCH


def test_ebay_defaults_tolerate_five_minutes_of_skew() -> None:
    refresh = config.RefreshConfig()
    for skew in (-SKEW_SECONDS, 0.0, SKEW_SECONDS):
        due = schedule.next_refresh_at(EPOCH, 7200.0,
                                       expiry_threshold_seconds=refresh.expiry_threshold_seconds,
                                       max_age_seconds=refresh.max_age_seconds)
        claimed = due - timedelta(seconds=skew)
        remaining = (EPOCH + timedelta(seconds=7200) - claimed).total_seconds()
        assert remaining >= refresh.expiry_threshold_seconds - SKEW_SECONDS


async def _due_count_at_the_scheduled_time(expires_in: float, threshold: float,
                                           max_age: float) -> tuple[int, int]:
    db = await store.connect("sqlite://:memory:")
    try:
        await db.migrate()
        sealed = KEYRING.encrypt("v^1.1#x", account_id="a", column="refresh_token")
        await db.add_account(model.NewAccount(
            id="a", org="o", provider="p", name="n", scopes=(), refresh_token=sealed,
            refresh_expires_at=None), EPOCH)
        claimed = await db.claim_account("a", "me", EPOCH, lease_seconds=60)
        assert claimed is not None
        due = schedule.next_refresh_at(EPOCH, expires_in, expiry_threshold_seconds=threshold,
                                       max_age_seconds=max_age)
        success = model.Success(
            access_token=KEYRING.encrypt("at", account_id="a", column="access_token"),
            access_expires_at=EPOCH + timedelta(seconds=expires_in), refresh_token=None,
            refresh_expires_at=None, refreshed_at=EPOCH, next_attempt_at=due)
        attempt = model.Attempt(account_id="a", source="scheduled", started_at=EPOCH,
                                finished_at=EPOCH, success=True, error_code=None,
                                error_message=None)
        entry = model.Entry(action="token_refreshed", source="scheduled", created_at=EPOCH)
        applied, _ = await db.finish(claimed, "me", success, attempt, entry, EPOCH)
        assert applied
        kwargs = {"expiry_threshold_seconds": threshold, "max_age_seconds": max_age}
        # SQLite keeps timestamps as float seconds: allow it a millisecond of rounding.
        before = await db.count_due(due - timedelta(seconds=0.01), **kwargs)
        at = await db.count_due(due + timedelta(milliseconds=1), **kwargs)
        return before, at
    finally:
        await db.close()


@settings(max_examples=60, deadline=None)
@given(
    expires_in=st.floats(min_value=60.0, max_value=10 * DAY),
    threshold=st.floats(min_value=1.0, max_value=DAY),
    max_age=st.floats(min_value=60.0, max_value=30 * DAY),
)
def test_the_scheduled_time_is_due_by_the_stores_own_rule(
        expires_in: float, threshold: float, max_age: float) -> None:
    """The loop sleeps until next_attempt_at; at that moment the store's due rule (expiry
    within the threshold, or older than max_age) must agree, or the loop wakes to nothing
    and the token silently ages past its threshold."""
    assume(abs(expires_in - 2 * threshold) > 0.01)  # away from the exact float tie
    before, at = asyncio.run(_due_count_at_the_scheduled_time(expires_in, threshold, max_age))
    assert before == 0
    assert at == 1

