"""Redaction by field name: nested objects, headers, form and JSON bodies, log events."""

from __future__ import annotations

import copy
import urllib.parse

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokend import masking

EBAY = "v^1.1#i^1#r^1#p^3#I^3#f^0#t^Ul4xMF8xOkFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFla"
SEALED = "ENC:v1:k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"


def shares_at_most(masked: str, secret: str, limit: int) -> bool:
    """`masked` is `prefix...suffix` of `secret` with at most `limit` characters kept."""
    for prefix in range(limit + 1):
        for suffix in range(limit + 1 - prefix):
            if prefix + suffix > len(secret):
                continue
            shown = secret[:prefix] + "..." + (secret[len(secret) - suffix:] if suffix else "")
            if masked == shown:
                return True
    return False


# -- mask_secret --------------------------------------------------------------------------


@given(st.text(min_size=1))
def test_mask_secret_keeps_at_most_8_characters(secret: str) -> None:
    masked = masking.mask_secret(secret)
    assert shares_at_most(masked, secret, 8), (secret, masked)


@given(st.text(min_size=1))
def test_mask_secret_never_keeps_half(secret: str) -> None:
    assert shares_at_most(masking.mask_secret(secret), secret, len(secret) // 2)


@given(st.text(alphabet=st.characters(blacklist_characters="."), min_size=1))
def test_mask_secret_never_contains_the_secret(secret: str) -> None:
    assert secret not in masking.mask_secret(secret)


@given(st.text(min_size=20))
def test_mask_secret_tells_ebay_tokens_from_envelopes(rest: str) -> None:
    ebay, sealed = masking.mask_secret("v^1.1#" + rest), masking.mask_secret("ENC:v1:" + rest)
    assert ebay.startswith("v^")
    assert sealed.startswith("ENC:")
    assert ebay != sealed


def test_mask_secret_examples() -> None:
    assert masking.mask_secret(EBAY) == "v^1....WFla"
    assert masking.mask_secret(SEALED) == "ENC:...LS4v"
    assert masking.mask_secret("") == ""
    assert masking.mask_secret("x") == "..."
    assert masking.mask_secret("abcdefgh") == "abcd..."


def test_two_tokens_look_different() -> None:
    assert masking.mask_secret(EBAY) != masking.mask_secret(EBAY[:-4] + "zzzz")


# -- mask(): by field name, at any depth --------------------------------------------------


@pytest.mark.parametrize("field", sorted(masking.SECRET_FIELDS))
def test_every_secret_field_at_any_depth(field: str) -> None:
    secret = EBAY + field
    doc = {
        field: secret,
        "outer": {"list": [{"inner": {field: secret}}, [{field: secret}], "plain"],
                  "tuple": ({field: secret},)},
        "keep": "visible",
    }
    original = copy.deepcopy(doc)
    masked = masking.mask(doc)
    text = orjson.dumps(masked).decode()
    assert secret not in text
    assert text.count("v^1....") == 4
    assert masked["keep"] == "visible"
    assert masked["outer"]["list"][2] == "plain"
    assert doc == original  # a copy; the input is untouched


@pytest.mark.parametrize("field", ["Refresh_Token", "ACCESS_TOKEN", "Client_Secret", "Code"])
def test_field_names_in_any_case(field: str) -> None:
    assert masking.mask({field: EBAY})[field] == masking.mask_secret(EBAY)


def test_other_fields_and_values_are_kept() -> None:
    doc = {"status": 200, "ok": True, "none": None, "expires_in": 7200, "error": "invalid_grant",
           "token_type": "User Access Token", "refresh_token_expires_in": 47304000,
           "items": [1, "two", 3.0]}
    assert masking.mask(doc) == doc


def test_non_string_secret_values_are_not_mistaken_for_tokens() -> None:
    assert masking.mask({"code": 400}) == {"code": 400}
    assert masking.mask({"token": {"access_token": EBAY, "kind": "x"}}) == {
        "token": {"access_token": masking.mask_secret(EBAY), "kind": "x"}}


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION",
                                  "aUtHoRiZaTiOn"])
@pytest.mark.parametrize(("value", "expected"), [
    ("Bearer " + EBAY, "Bearer ****"),
    ("Basic " + "QXBwSWQ6Q2xpZW50U2VjcmV0", "Basic ****"),
    ("bearer x", "bearer ****"),
    (EBAY, "****"),
])
def test_authorization_keeps_only_the_scheme(name: str, value: str, expected: str) -> None:
    assert masking.mask({"headers": {name: value}}) == {"headers": {name: expected}}
    assert masking.mask_headers({name: value, "Content-Type": "text/plain"}) == {
        name: expected, "Content-Type": "text/plain"}


def test_mask_headers_keeps_other_headers() -> None:
    headers = {"Content-Type": "application/json", "X-EBAY-C-MARKETPLACE-ID": "EBAY_US",
               "Retry-After": "30"}
    assert masking.mask_headers(headers) == headers


# -- bodies -------------------------------------------------------------------------------


FORM = urllib.parse.urlencode({
    "grant_type": "refresh_token",
    "refresh_token": EBAY,
    "scope": "https://api.ebay.com/oauth/api_scope https://api.ebay.com/oauth/api_scope/sell",
    "client_secret": "PRD-0123456789ab-cdef-0123-4567-89ab",
    "code": "v^1.1#authorization-code-0123456789",
    "redirect_uri": "Your_App-YourApp-PRD-abcdef",
})


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded",
                                          "application/x-www-form-urlencoded; charset=utf-8",
                                          "Application/X-WWW-Form-Urlencoded"])
def test_form_body(content_type: str) -> None:
    masked = masking.mask_body(FORM, content_type)
    assert isinstance(masked, str)
    for secret in (EBAY, "PRD-0123456789ab-cdef-0123-4567-89ab",
                   "v^1.1#authorization-code-0123456789"):
        assert secret not in masked
        assert urllib.parse.quote(secret, safe="") not in masked
        assert urllib.parse.quote_plus(secret) not in masked
    fields = dict(pair.split("=", 1) for pair in masked.split("&"))
    assert fields["refresh_token"] == masking.mask_secret(EBAY)
    assert fields["client_secret"].startswith("PRD-")
    assert fields["code"].startswith("v^")
    assert fields["grant_type"] == "refresh_token"
    assert urllib.parse.unquote(fields["scope"]) == (
        "https://api.ebay.com/oauth/api_scope https://api.ebay.com/oauth/api_scope/sell")
    assert urllib.parse.unquote(fields["redirect_uri"]) == "Your_App-YourApp-PRD-abcdef"
    assert list(fields) == ["grant_type", "refresh_token", "scope", "client_secret", "code",
                            "redirect_uri"]


ANSWER = {"access_token": EBAY, "expires_in": 7200, "refresh_token": EBAY + "r",
          "refresh_token_expires_in": 47304000, "token_type": "User Access Token",
          "nested": [{"id_token": "eyJhbGciOiJIUzI1NiJ9.payload.signature"}]}


@pytest.mark.parametrize("content_type", ["application/json", "application/json;charset=UTF-8",
                                          "application/problem+json", None, "text/plain"])
def test_json_body(content_type: str | None) -> None:
    masked = masking.mask_body(orjson.dumps(ANSWER).decode(), content_type)
    assert masked["access_token"] == masking.mask_secret(EBAY)
    assert masked["refresh_token"] == masking.mask_secret(EBAY + "r")
    assert masked["expires_in"] == 7200
    assert masked["token_type"] == "User Access Token"
    assert "signature" not in orjson.dumps(masked).decode()


def test_json_array_body() -> None:
    assert masking.mask_body(orjson.dumps([{"token": EBAY}]).decode(), "application/json") == [
        {"token": masking.mask_secret(EBAY)}]


def test_broken_json_is_kept_as_text() -> None:
    body = '{"error": "server_error", '
    assert masking.mask_body(body, "application/json") == body


def test_long_text_is_cut_to_4_kib() -> None:
    body = "<html>" + "a" * 5000 + "TAIL-MARKER</html>"
    masked = masking.mask_body(body, "text/html")
    assert masked.startswith(body[:4096])
    assert "TAIL-MARKER" not in masked
    assert len(masked) <= 4096 + 64
    assert str(len(body) - 4096) in masked  # says how much was left out


def test_short_text_is_kept_whole() -> None:
    body = "x" * 4096
    assert masking.mask_body(body, "text/plain") == body
    assert masking.mask_body("", None) == ""


# -- the structlog processor --------------------------------------------------------------


def test_structlog_processor_masks_event_fields() -> None:
    event = {
        "event": "token_refreshed",
        "account_id": "acct-1",
        "refresh_token": EBAY,
        "client_secret": "PRD-0123456789ab-cdef-0123-4567-89ab",
        "request": {"headers": {"Authorization": "Basic QXBwSWQ6U2VjcmV0"},
                    "body": {"code": "v^1.1#code-0123456789"}},
        "attempts": 3,
    }
    out = masking.structlog_processor(None, "info", event)
    text = orjson.dumps(out).decode()
    for secret in (EBAY, "PRD-0123456789ab-cdef-0123-4567-89ab", "QXBwSWQ6U2VjcmV0",
                   "v^1.1#code-0123456789"):
        assert secret not in text
    assert out["event"] == "token_refreshed"
    assert out["account_id"] == "acct-1"
    assert out["attempts"] == 3
    assert out["request"]["headers"]["Authorization"] == "Basic ****"


def test_unparseable_text_has_token_fields_masked() -> None:
    secret = "v^1.1#" + "q" * 40
    html = f"<pre>{{'access_token': '{secret}', broken</pre> refresh_token={secret}&x=1"
    masked = masking.mask_body(html, "text/html")
    assert secret not in masked and masked.count("v^1....qqqq") == 2
    assert masking.mask_text("access_token=v^1....abcd") == "access_token=v^1....abcd"
