"""eBay's side of digital signatures for the simulator: the public key as a JWE, and the
verifier of eBay's reference repository (eBay/digital-signature-verification-ebay-api,
`VerificationService.java`) ported step by step, quirks included, so a signature the
simulator accepts is one that reference accepts.

The JWE is what eBay's `KeypairService` makes: `A256GCMKW` key wrapping, `A256GCM`
content, `DEF` compression, claims `pkey` (base64 SubjectPublicKeyInfo) and `cipher`
(`Ed25519` or `RSA`), under a master key only eBay (here: the simulator) holds.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Mapping

import orjson
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The reference's three patterns, as Java's Matcher.find() uses them.
_SIGNATURE_INPUT = re.compile(r".+=(\((.+)\);created=(\d+)(;keyid=.+)?)")
_SIGNATURE = re.compile(r".+=:(.+):")
_CONTENT_DIGEST = re.compile(r"(.+)=:(.+):")
JWE_CIPHERS = {"ED25519": "Ed25519", "RSA": "RSA"}  # signingKeyCipher -> the claim


class VerificationError(Exception):
    """Why a signature was refused, in the reference verifier's words."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwe(master_key: bytes, public_key_der: bytes, cipher: str, *, kid: str,
             app_id: str = "sim-app", lifetime_seconds: int = 3 * 365 * 86400) -> str:
    now = int(time.time())
    claims = {"exp": now + lifetime_seconds, "nbf": now, "iat": now,
              "jti": str(uuid.uuid4()), "appid": app_id,
              "pkey": base64.b64encode(public_key_der).decode(),
              "cipher": JWE_CIPHERS[cipher]}
    cek, wrap_iv, iv = os.urandom(32), os.urandom(12), os.urandom(12)
    wrapped = AESGCM(master_key).encrypt(wrap_iv, cek, None)
    header = {"zip": "DEF", "kid": kid, "enc": "A256GCM", "tag": _b64url(wrapped[-16:]),
              "alg": "A256GCMKW", "iv": _b64url(wrap_iv)}
    protected = _b64url(orjson.dumps(header))
    deflate = zlib.compressobj(wbits=-15)
    payload = deflate.compress(orjson.dumps(claims)) + deflate.flush()
    sealed = AESGCM(cek).encrypt(iv, payload, protected.encode())
    return ".".join((protected, _b64url(wrapped[:-16]), _b64url(iv), _b64url(sealed[:-16]),
                     _b64url(sealed[-16:])))


def open_jwe(master_key: bytes, jwe: str) -> dict:
    """The claims of a JWE made with `master_key`; VerificationError otherwise."""
    try:
        protected, wrapped, iv, ciphertext, tag = jwe.split(".")
        header = orjson.loads(_unb64url(protected))
        if header.get("alg") != "A256GCMKW" or header.get("enc") != "A256GCM":
            raise ValueError("unsupported JWE algorithms")
        cek = AESGCM(master_key).decrypt(_unb64url(header["iv"]),
                                         _unb64url(wrapped) + _unb64url(header["tag"]), None)
        plain = AESGCM(cek).decrypt(_unb64url(iv), _unb64url(ciphertext) + _unb64url(tag),
                                    protected.encode())
        if header.get("zip") == "DEF":
            plain = zlib.decompress(plain, -15)
        claims = orjson.loads(plain)
    except (ValueError, KeyError, TypeError, InvalidTag, binascii.Error, zlib.error,
            orjson.JSONDecodeError):
        raise VerificationError("Error decrypting the JWE from x-ebay-signature-key header") \
            from None
    if not isinstance(claims, dict):
        raise VerificationError("Error parsing JWE from x-ebay-signature-key header")
    return claims


def java_uri(scheme: str, host: str, port: int, raw_path: str, raw_query: str) -> str:
    """The URI the reference rebuilds from a request (`Tools.getURI`): the port is left
    out when it is 80 or 443, whatever the scheme."""
    url = f"{scheme}://{host}" + ("" if port in (80, 443) else f":{port}") + raw_path
    return url + (f"?{raw_query}" if raw_query else "")


def verify(master_key: bytes, body: bytes, headers: Mapping[str, str], uri: str,
           method: str) -> None:
    """`VerificationService.verifyMessage`: `headers` keyed in lower case; raises
    VerificationError with the reference's reason when the message is not signed right."""
    base = _base(headers, uri, method)
    public_key = _public_key(master_key, headers)
    text = body.decode("utf-8", "replace")
    if text:
        _check_digest(text, headers)
    _check_signature(public_key, base, headers)


def _public_key(master_key: bytes, headers: Mapping[str, str]):
    if "x-ebay-signature-key" not in headers:
        raise VerificationError("x-ebay-signature-key header missing")
    claims = open_jwe(master_key, headers["x-ebay-signature-key"])
    try:
        der = base64.b64decode("".join(str(claims["pkey"]).split()))
        key = serialization.load_der_public_key(der)
    except (KeyError, ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"Error parsing JWE from x-ebay-signature-key header: "
                                f"{type(exc).__name__}") from None
    expected = {"Ed25519": ed25519.Ed25519PublicKey, "RSA": rsa.RSAPublicKey}
    if not isinstance(key, expected.get(claims.get("cipher"), ())):
        raise VerificationError("Error parsing JWE from x-ebay-signature-key header: "
                                "cipher does not match the key")
    return key


def _check_digest(body: str, headers: Mapping[str, str]) -> None:
    if "content-digest" not in headers:
        raise VerificationError("Content-Digest header missing")
    match = _CONTENT_DIGEST.search(headers["content-digest"])
    if match is None:
        raise VerificationError("Content-digest header invalid")
    cipher, digest = match.group(1), match.group(2)
    if cipher not in ("sha-256", "sha-512"):
        raise VerificationError(f"Invalid cipher {cipher}")
    algorithm = hashes.SHA256() if cipher == "sha-256" else hashes.SHA512()
    hasher = hashes.Hash(algorithm)
    hasher.update(body.encode())
    expected = base64.b64encode(hasher.finalize()).decode()
    if expected != digest:
        raise VerificationError(
            f"Content-Digest value is invalid. Expected body digest is: {expected}")


def _check_signature(public_key, base: str, headers: Mapping[str, str]) -> None:
    if "signature" not in headers:
        raise VerificationError("Signature header missing")
    match = _SIGNATURE.search(headers["signature"])
    if match is None:
        raise VerificationError("Signature header invalid")
    try:
        signature = base64.b64decode(match.group(1), validate=True)
    except binascii.Error:
        raise VerificationError("Signature not a valid Base64") from None
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, base.encode(), padding.PKCS1v15(), hashes.SHA256())
        else:
            public_key.verify(signature, base.encode())
    except InvalidSignature:
        raise VerificationError("Signature invalid") from None


def _base(headers: Mapping[str, str], uri: str, method: str) -> str:
    if "signature-input" not in headers:
        raise VerificationError("Signature-Input header missing")
    match = _SIGNATURE_INPUT.search(headers["signature-input"])
    if match is None:
        raise VerificationError("Invalid signature-input. Make sure it's of format: "
                                ".+=\\(.+\\;created=\\d+)")
    names = match.group(2).replace('"', "").split(" ")
    while names and not names[-1]:  # Java's split drops trailing empty strings
        names.pop()
    parts = urllib.parse.urlsplit(uri)
    authority = parts.netloc
    pseudo = {"@method": method, "@authority": urllib.parse.unquote(authority),
              "@target-uri": uri, "@scheme": parts.scheme,
              "@path": urllib.parse.unquote(parts.path),
              # Java appends a null query as the text "null".
              "@query": urllib.parse.unquote(parts.query) if parts.query else "null"}
    out = []
    for name in names:
        line = f'"{name.lower()}": '
        if name.startswith("@"):
            value = pseudo.get(name.lower())
            if value is None:
                raise VerificationError(f"Error calculating base: Unknown pseudo header {name}")
        else:
            if name not in headers:
                raise VerificationError(
                    f"Error calculating base: Header {name} not included in message")
            value = headers[name]
        out.append(line + value + "\n")
    return "".join(out) + '"@signature-params": ' + match.group(1)
