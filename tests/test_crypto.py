"""The `ENC:v1:` envelope: round trips, binding to row and column, keyrings, key lines."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokend import crypto

ENVELOPE = re.compile(r"^ENC:v1:(?P<kid>[A-Za-z0-9_-]{1,32}):(?P<payload>[A-Za-z0-9_-]+)$")
TOKEN = "v^1.1#i^1#p^3#r^1#I^3#f^0#t^Ul4xMF8yOkNBTkFSWQ=="


@pytest.fixture
def old_line() -> str:
    return crypto.generate_key_line("old")


@pytest.fixture
def new_line() -> str:
    return crypto.generate_key_line("new")


@pytest.fixture
def ring(old_line: str) -> crypto.Keyring:
    return crypto.Keyring.from_lines([old_line])


@pytest.fixture
def both(new_line: str, old_line: str) -> crypto.Keyring:
    """After adding a new first key: `new` encrypts, `old` still decrypts."""
    return crypto.Keyring.from_lines([new_line, old_line])


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_quiet(exc: crypto.DecryptError, *secrets: str) -> None:
    """The error names the problem but carries neither plaintext nor ciphertext."""
    message = str(exc)
    assert message
    for secret in secrets:
        assert secret not in message
        if secret.startswith(crypto.PREFIX):
            assert secret.rsplit(":", 1)[-1][:16] not in message
    assert exc.code == "decrypt_failed"


# -- the envelope -------------------------------------------------------------------------


def test_round_trip(ring: crypto.Keyring) -> None:
    sealed = ring.encrypt(TOKEN, account_id="acct-1", column="refresh_token")
    assert ring.decrypt(sealed, account_id="acct-1", column="refresh_token") == TOKEN


def test_envelope_format(ring: crypto.Keyring) -> None:
    sealed = ring.encrypt(TOKEN, account_id="acct-1", column="access_token")
    m = ENVELOPE.match(sealed)
    assert m, sealed
    assert m["kid"] == "old"
    raw = b64decode(m["payload"])
    assert len(raw) == 12 + len(TOKEN.encode()) + 16  # nonce | ciphertext | tag
    assert TOKEN not in sealed
    assert TOKEN.encode() not in raw


def test_nonce_is_fresh_each_time(ring: crypto.Keyring) -> None:
    a = ring.encrypt(TOKEN, account_id="a", column="refresh_token")
    b = ring.encrypt(TOKEN, account_id="a", column="refresh_token")
    assert a != b
    assert b64decode(a.rsplit(":", 1)[1])[:12] != b64decode(b.rsplit(":", 1)[1])[:12]


@pytest.mark.parametrize("plaintext", ["", "x", "ünïcødé ✓", "a" * 10_000])
def test_round_trip_shapes(ring: crypto.Keyring, plaintext: str) -> None:
    sealed = ring.encrypt(plaintext, account_id="a", column="access_token")
    assert ring.decrypt(sealed, account_id="a", column="access_token") == plaintext


@settings(max_examples=50, deadline=None)
@given(plaintext=st.text(st.characters(blacklist_categories=("Cs",))),
       account_id=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1))
def test_round_trip_property(plaintext: str, account_id: str) -> None:
    ring = crypto.Keyring([("k", bytes(range(32)))])
    sealed = ring.encrypt(plaintext, account_id=account_id, column="refresh_token")
    assert ENVELOPE.match(sealed)
    assert ring.decrypt(sealed, account_id=account_id, column="refresh_token") == plaintext


# -- associated data: a value belongs to its row and column -------------------------------


def test_moved_to_another_account_fails(ring: crypto.Keyring) -> None:
    sealed = ring.encrypt(TOKEN, account_id="acct-1", column="refresh_token")
    with pytest.raises(crypto.DecryptError) as info:
        ring.decrypt(sealed, account_id="acct-2", column="refresh_token")
    assert_quiet(info.value, TOKEN, sealed)


def test_moved_to_another_column_fails(ring: crypto.Keyring) -> None:
    sealed = ring.encrypt(TOKEN, account_id="acct-1", column="refresh_token")
    with pytest.raises(crypto.DecryptError) as info:
        ring.decrypt(sealed, account_id="acct-1", column="access_token")
    assert_quiet(info.value, TOKEN, sealed)


def test_account_ids_that_share_a_prefix(ring: crypto.Keyring) -> None:
    sealed = ring.encrypt(TOKEN, account_id="acct|1", column="access_token")
    for other in ("acct", "acct|", "acct|10", "ACCT|1"):
        with pytest.raises(crypto.DecryptError):
            ring.decrypt(sealed, account_id=other, column="access_token")


def test_relabelled_kid_fails(old_line: str) -> None:
    """Same key material under another kid: the kid is part of the associated data."""
    material = old_line.partition(":")[2]
    ring = crypto.Keyring.from_lines([old_line, f"alias:{material}"])
    sealed = ring.encrypt(TOKEN, account_id="a", column="refresh_token")
    relabelled = sealed.replace(":old:", ":alias:")
    with pytest.raises(crypto.DecryptError) as info:
        ring.decrypt(relabelled, account_id="a", column="refresh_token")
    assert_quiet(info.value, TOKEN, sealed)


# -- what does not decrypt ----------------------------------------------------------------


def test_unknown_kid(ring: crypto.Keyring, new_line: str) -> None:
    sealed = crypto.Keyring.from_lines([new_line]).encrypt(
        TOKEN, account_id="a", column="refresh_token")
    with pytest.raises(crypto.DecryptError) as info:
        ring.decrypt(sealed, account_id="a", column="refresh_token")
    assert "'new'" in str(info.value)
    assert_quiet(info.value, TOKEN, sealed)


def test_same_kid_other_key(ring: crypto.Keyring) -> None:
    impostor = crypto.Keyring.from_lines([crypto.generate_key_line("old")])
    sealed = impostor.encrypt(TOKEN, account_id="a", column="refresh_token")
    with pytest.raises(crypto.DecryptError) as info:
        ring.decrypt(sealed, account_id="a", column="refresh_token")
    assert_quiet(info.value, TOKEN, sealed)


@pytest.mark.parametrize("index", [0, 5, 11, 12, 20, -1])
def test_tampered_payload(ring: crypto.Keyring, index: int) -> None:
    sealed = ring.encrypt(TOKEN, account_id="a", column="refresh_token")
    head, payload = sealed.rsplit(":", 1)
    raw = bytearray(b64decode(payload))
    raw[index] ^= 0x01
    tampered = f"{head}:{b64encode(bytes(raw))}"
    with pytest.raises(crypto.DecryptError) as info:
        ring.decrypt(tampered, account_id="a", column="refresh_token")
    assert_quiet(info.value, TOKEN, sealed, tampered)


@pytest.mark.parametrize("junk", ["!", " ", "*", "é"])
def test_payload_with_foreign_characters(ring: crypto.Keyring, junk: str) -> None:
    sealed = ring.encrypt(TOKEN, account_id="a", column="refresh_token")
    head, payload = sealed.rsplit(":", 1)
    with pytest.raises(crypto.DecryptError):
        ring.decrypt(f"{head}:{payload[:10]}{junk}{payload[10:]}", account_id="a",
                     column="refresh_token")


@pytest.mark.parametrize("value", [TOKEN, "", "plain text", "ENC:v2:old:abcd", "enc:v1:old:x",
                                   "ENC:v1"])
def test_not_an_envelope(ring: crypto.Keyring, value: str) -> None:
    with pytest.raises(crypto.DecryptError) as info:
        ring.decrypt(value, account_id="a", column="refresh_token")
    assert_quiet(info.value, TOKEN, "plain text", "abcd")


def test_truncated(ring: crypto.Keyring) -> None:
    sealed = ring.encrypt(TOKEN, account_id="a", column="refresh_token")
    payload = sealed.rsplit(":", 1)[1]
    for cut in (sealed[:-1], sealed[:-5], sealed[:-30], sealed[: len("ENC:v1:old:") + 3],
                "ENC:v1:old:", "ENC:v1:old", "ENC:v1:", f"ENC:v1:{payload}"):
        with pytest.raises(crypto.DecryptError) as info:
            ring.decrypt(cut, account_id="a", column="refresh_token")
        assert_quiet(info.value, TOKEN, sealed)
        assert payload[:16] not in str(info.value)


# -- keyrings with several keys -----------------------------------------------------------


def test_two_keys_decrypt_both_and_encrypt_with_the_first(
        ring: crypto.Keyring, both: crypto.Keyring, new_line: str) -> None:
    sealed_old = ring.encrypt("old secret", account_id="a", column="refresh_token")
    sealed_new = crypto.Keyring.from_lines([new_line]).encrypt(
        "new secret", account_id="a", column="refresh_token")
    assert both.primary_kid == "new"
    assert both.decrypt(sealed_old, account_id="a", column="refresh_token") == "old secret"
    assert both.decrypt(sealed_new, account_id="a", column="refresh_token") == "new secret"
    fresh = both.encrypt("x", account_id="a", column="refresh_token")
    assert fresh.startswith("ENC:v1:new:")


def test_reseal_moves_to_the_primary_key(ring: crypto.Keyring, both: crypto.Keyring) -> None:
    sealed = ring.encrypt(TOKEN, account_id="a", column="access_token")
    resealed = both.reseal(sealed, account_id="a", column="access_token")
    assert resealed.startswith("ENC:v1:new:")
    assert both.decrypt(resealed, account_id="a", column="access_token") == TOKEN
    assert both.is_current(resealed)
    # Still bound to its row and column after the move.
    with pytest.raises(crypto.DecryptError):
        both.decrypt(resealed, account_id="b", column="access_token")


def test_reseal_leaves_current_values_untouched(both: crypto.Keyring) -> None:
    sealed = both.encrypt(TOKEN, account_id="a", column="refresh_token")
    assert both.reseal(sealed, account_id="a", column="refresh_token") is sealed


def test_reseal_of_an_unreadable_value_raises(both: crypto.Keyring) -> None:
    stranger = crypto.Keyring.from_lines([crypto.generate_key_line("gone")])
    sealed = stranger.encrypt(TOKEN, account_id="a", column="refresh_token")
    with pytest.raises(crypto.DecryptError):
        both.reseal(sealed, account_id="a", column="refresh_token")


def test_is_current(ring: crypto.Keyring, both: crypto.Keyring) -> None:
    sealed_old = ring.encrypt(TOKEN, account_id="a", column="refresh_token")
    sealed_new = both.encrypt(TOKEN, account_id="a", column="refresh_token")
    assert both.is_current(None)
    assert both.is_current(sealed_new)
    assert not both.is_current(sealed_old)
    assert ring.is_current(sealed_old)
    assert not both.is_current(TOKEN)
    assert not both.is_current("ENC:v1:newer:abc")  # kid `new` is not a prefix match


# -- key lines ----------------------------------------------------------------------------


def test_generate_key_line_round_trips() -> None:
    line = crypto.generate_key_line()
    kid, key = crypto.parse_key_line(line)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", kid)
    assert len(key) == 32
    assert line == f"{kid}:{b64encode(key)}"
    assert crypto.parse_key_line(crypto.generate_key_line("mine"))[0] == "mine"


def test_generated_keys_differ() -> None:
    lines = {crypto.generate_key_line("k") for _ in range(20)}
    assert len(lines) == 20
    assert len({crypto.generate_key_line().partition(":")[0] for _ in range(20)}) > 1


@pytest.mark.parametrize("kid", ["bad kid", "a" * 33, "k:1", "é", "k1\n"])
def test_generate_key_line_rejects_bad_kids(kid: str) -> None:
    with pytest.raises(crypto.KeyLineError):
        crypto.generate_key_line(kid)


def test_parse_key_line_tolerates_whitespace_and_padding() -> None:
    key = bytes(range(32))
    assert crypto.parse_key_line(f"  k1:{b64encode(key)}\n") == ("k1", key)
    padded = base64.urlsafe_b64encode(key).decode()
    assert padded.endswith("=")
    assert crypto.parse_key_line(f"k1:{padded}") == ("k1", key)


MATERIAL = b64encode(bytes(range(32)))


@pytest.mark.parametrize(("line", "says"), [
    ("no colon at all", "kid"),
    (MATERIAL, "kid"),
    (f"bad kid:{MATERIAL}", "kid"),
    (f":{MATERIAL}", "kid"),
    (f"{'k' * 33}:{MATERIAL}", "kid"),
    (f"k1\n:{MATERIAL}", "kid"),
    ("k1:@@not base64@@", "base64"),
    (f"k1:{MATERIAL[:10]}!{MATERIAL[10:]}", "base64"),
    (f"k1:{MATERIAL}AB", "base64"),
    ("k1:" + b64encode(bytes(16)), "32 bytes"),
    ("k1:" + b64encode(bytes(33)), "32 bytes"),
    ("k1:", "32 bytes"),
])
def test_bad_key_lines(line: str, says: str) -> None:
    with pytest.raises(crypto.KeyLineError) as info:
        crypto.parse_key_line(line)
    assert says in str(info.value)
    assert MATERIAL[:12] not in str(info.value)


def test_duplicate_kid() -> None:
    with pytest.raises(crypto.KeyLineError, match="twice"):
        crypto.Keyring.from_lines([crypto.generate_key_line("k"), crypto.generate_key_line("k")])


def test_empty_keyring() -> None:
    with pytest.raises(crypto.KeyLineError):
        crypto.Keyring.from_lines([])


# -- envelopes kept taken apart -------------------------------------------------------------


def test_an_opened_envelope_still_binds_its_row_and_column(ring: crypto.Keyring) -> None:
    """The second decrypt takes the envelope apart from memory: the same checks hold."""
    sealed = ring.encrypt(TOKEN, account_id="acct-1", column="access_token")
    for _ in range(2):
        assert ring.decrypt(sealed, account_id="acct-1", column="access_token",
                            keep=True) == TOKEN
        for account_id, column in (("acct-2", "access_token"), ("acct-1", "refresh_token")):
            with pytest.raises(crypto.DecryptError):
                ring.decrypt(sealed, account_id=account_id, column=column)


def test_a_replaced_keyring_forgets_what_its_old_keys_opened(
        ring: crypto.Keyring, new_line: str) -> None:
    sealed = ring.encrypt(TOKEN, account_id="a", column="access_token")
    assert ring.decrypt(sealed, account_id="a", column="access_token", keep=True) == TOKEN
    ring.replace(crypto.Keyring.from_lines([new_line]))  # a reload that retired `old`
    with pytest.raises(crypto.DecryptError, match="unknown key id 'old'"):
        ring.decrypt(sealed, account_id="a", column="access_token")


def test_opened_envelopes_are_bounded(ring: crypto.Keyring, monkeypatch) -> None:
    monkeypatch.setattr(crypto, "OPENED_MAX", 3)
    sealed = [ring.encrypt(f"{TOKEN}{n}", account_id="a", column="access_token")
              for n in range(5)]
    for n, value in enumerate(sealed):
        assert ring.decrypt(value, account_id="a", column="access_token",
                            keep=True) == f"{TOKEN}{n}"
    assert [key[0] for key in ring._opened] == sealed[2:]  # the oldest went first
    ring.decrypt(sealed[0], account_id="a", column="access_token")
    assert [key[0] for key in ring._opened] == sealed[2:]  # kept only when asked
    kept = [part for opened in ring._opened.values() for part in opened[1:]]
    assert not any(TOKEN.encode() in part for part in kept)  # ciphertext only
