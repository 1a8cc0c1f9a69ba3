"""The `ENC:v1:` envelope for secrets at rest, and the keyring that opens it.

`ENC:v1:<kid>:<base64url(nonce | ciphertext | tag)>`, AES-256-GCM. The associated data
binds a value to its account id, its column and its key id, so a ciphertext copied to
another row or column does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "ENC:v1:"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NONCE_BYTES = 12
OPENED_MAX = 10_000  # envelopes kept taken apart: 1-2.5 KiB each for eBay-sized tokens

# An envelope taken apart: its key, nonce, ciphertext with tag, and associated data.
_Opened = tuple[AESGCM, bytes, bytes, bytes]


class DecryptError(Exception):
    """A stored secret that cannot be opened. The message never contains the value."""

    code = "decrypt_failed"


class KeyLineError(ValueError):
    """A malformed key line; the message names the problem, never the key material."""


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64decode(text: str) -> bytes:
    # base64url without padding. Strict: characters outside the alphabet are an error, not
    # silently skipped (base64.b64decode(validate=True) without its per-call overhead).
    data = (text + "=" * (-len(text) % 4)).encode("ascii").translate(_URLSAFE)
    return binascii.a2b_base64(data, strict_mode=True)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_key_line(line: str) -> tuple[str, bytes]:
    """`kid:base64` -> (kid, 32 bytes)."""
    kid, sep, material = line.strip().partition(":")
    if not sep or not _KID.fullmatch(kid):
        raise KeyLineError("expected 'kid:base64' with a kid of letters, digits, '-' or '_'")
    try:
        key = _b64decode(material)
    except (binascii.Error, ValueError):
        raise KeyLineError(f"key {kid!r} is not valid base64") from None
    if len(key) != 32:
        raise KeyLineError(f"key {kid!r} must be 32 bytes, got {len(key)}")
    return kid, key


def generate_key_line(kid: str | None = None) -> str:
    kid = kid or "k" + secrets.token_hex(3)
    if not _KID.fullmatch(kid):
        raise KeyLineError("kid must be 1-32 letters, digits, '-' or '_'")
    return f"{kid}:{_b64encode(os.urandom(32))}"


def _aad(account_id: str, column: str, kid: str) -> bytes:
    return f"tokend|{account_id}|{column}|{kid}".encode()


class Keyring:
    """Several keys by id; the first encrypts, all decrypt."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        self._keys: dict[str, AESGCM] = {}
        self._opened: dict[tuple[str, str, str], _Opened] = {}  # (value, account, column)
        for kid, key in keys:
            if kid in self._keys:
                raise KeyLineError(f"key id {kid!r} appears twice")
            self._keys[kid] = AESGCM(key)
        if not self._keys:
            raise KeyLineError("at least one key is required")
        self.primary_kid = next(iter(self._keys))

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> Keyring:
        return cls(parse_key_line(line) for line in lines)

    def replace(self, other: Keyring) -> None:
        """Take `other`'s keys in place (a reload): every part that holds this keyring
        seals with the new primary from its next call and opens with any key it lists."""
        self._keys, self.primary_kid = other._keys, other.primary_kid
        self._opened = {}  # opened with keys that may be gone

    def encrypt(self, plaintext: str, *, account_id: str, column: str) -> str:
        kid = self.primary_kid
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[kid].encrypt(nonce, plaintext.encode(), _aad(account_id, column, kid))
        return f"{PREFIX}{kid}:{_b64encode(nonce + sealed)}"

    def decrypt(self, value: str, *, account_id: str, column: str, keep: bool = False) -> str:
        """`keep`: the envelope stays taken apart for the next decrypt of the same value
        (a vended access token, asked for many times a second). Only what the database
        holds is kept, never the plaintext."""
        opened = self._opened.get((value, account_id, column))
        if opened is None:
            opened = self._open(value, account_id, column)
            if keep:
                if len(self._opened) >= OPENED_MAX:
                    del self._opened[next(iter(self._opened))]  # the oldest
                self._opened[value, account_id, column] = opened
        aead, nonce, sealed, aad = opened
        try:
            return aead.decrypt(nonce, sealed, aad).decode()
        except (InvalidTag, ValueError):  # a short nonce, bytes that are not UTF-8
            raise DecryptError(f"{column} does not decrypt for account {account_id!r} with "
                               f"key {value[len(PREFIX):].partition(':')[0]!r}") from None

    def _open(self, value: str, account_id: str, column: str) -> _Opened:
        """The envelope taken apart: its key, nonce, ciphertext and associated data."""
        if not value.startswith(PREFIX):
            raise DecryptError(f"{column} is not an ENC:v1 envelope")
        kid, sep, payload = value[len(PREFIX):].partition(":")
        aead = self._keys.get(kid) if sep else None
        if aead is None:
            if not sep or not _KID.fullmatch(kid):  # what stands there may be ciphertext
                raise DecryptError(f"{column} is not a complete ENC:v1 envelope")
            raise DecryptError(f"{column} is sealed with unknown key id {kid!r}")
        try:
            raw = _b64decode(payload)
        except (binascii.Error, ValueError):
            raise DecryptError(
                f"{column} does not decrypt for account {account_id!r} with key {kid!r}"
            ) from None
        return aead, raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(account_id, column, kid)

    @property
    def current_prefix(self) -> str:
        """How every value sealed with the primary key begins."""
        return f"{PREFIX}{self.primary_kid}:"

    def is_current(self, value: str | None) -> bool:
        """True when `value` is absent or already sealed with the primary key."""
        return value is None or value.startswith(self.current_prefix)

    def reseal(self, value: str, *, account_id: str, column: str) -> str:
        if self.is_current(value):
            return value
        plain = self.decrypt(value, account_id=account_id, column=column)
        return self.encrypt(plain, account_id=account_id, column=column)
