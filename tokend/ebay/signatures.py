"""eBay's digital signatures: RFC 9421 message signatures over RFC 9530 digests, profiled
as eBay's guide "Digital Signatures for APIs" and its reference signer and verifier
(github.com/eBay/digital-signature-verification-ebay-api) build them.

Pure functions, no I/O: the signature base, the two header values, the keys. The profile:
label `sig1`, components `("content-digest" "x-ebay-signature-key" "@method" "@path"
"@authority")` (no `content-digest` without a body), `created` and no other parameter,
Ed25519 or RSASSA-PKCS1-v1_5 with SHA-256 (what eBay's verifier checks RSA keys with,
not PSS). `@path` is the path with its percent-escapes decoded once and `@authority` the
host and any port but 80 and 443: both as eBay's reference code computes them (Java's
`URI.getPath()`, its servlet's server name and port), which is what eBay verifies; dot
segments are resolved first, as the server does before it reads the path.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
import urllib.parse
from collections.abc import Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

LABEL = "sig1"
KEY_HEADER = "x-ebay-signature-key"
DIGEST_HEADER = "content-digest"
COMPONENTS_WITH_BODY = (DIGEST_HEADER, KEY_HEADER, "@method", "@path", "@authority")
COMPONENTS_WITHOUT_BODY = COMPONENTS_WITH_BODY[1:]
ED25519, RSA = "ED25519", "RSA"  # eBay's signingKeyCipher values
CIPHERS = (ED25519, RSA)
_DIGEST = re.compile(r"^sha-256=:([A-Za-z0-9+/]{43}=):$")
_METHOD = re.compile(r"^[A-Z]{1,16}$")
_DEFAULT_PORTS = (80, 443)

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class SigningError(ValueError):
    """A request that cannot be signed as asked; the message says why (never a key)."""


class KeyFormatError(ValueError):
    """Text that is not a private key tokend can sign with; never quotes the text."""


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What the signature covers of a request, derived once from its method and URL."""

    method: str
    path: str
    authority: str


def content_digest(body: bytes) -> str:
    """RFC 9530 `Content-Digest` of a body, the single SHA-256 eBay accepts."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def check_digest(value: str) -> str:
    """A `Content-Digest` value as eBay takes it (`sha-256=:<base64 of 32 bytes>:`)."""
    if not _DIGEST.match(value):
        raise SigningError("content_digest must be sha-256=:<base64 of the SHA-256>:")
    return value


def target(method: str, url: str) -> Target:
    if not _METHOD.match(method):
        raise SigningError("method must be an upper-case HTTP method such as GET or POST")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise SigningError("url is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SigningError("url must be an absolute http(s) URL")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise SigningError("url must not contain spaces or control characters")
    host = parts.hostname
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    authority = host if port is None or port in _DEFAULT_PORTS else f"{host}:{port}"
    path = urllib.parse.unquote(_without_dot_segments(parts.path)) or "/"
    return Target(method=method, path=path, authority=authority)


def _without_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: the path the server sees, as servers (and eBay's reference,
    behind its servlet container) resolve `.` and `..` before anything reads it."""
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out)


def signature_params(components: Sequence[str], created: int, keyid: str | None = None) -> str:
    """The inner list and its parameters, as both `Signature-Input` and the base carry it."""
    inner = " ".join(f'"{name}"' for name in components)
    return f"({inner});created={created}" + (f';keyid="{keyid}"' if keyid else "")


def signature_base(lines: Sequence[tuple[str, str]], params: str) -> bytes:
    """RFC 9421 section 2.5: one `"name": value` line per component, LF-separated (never
    CRLF), then `"@signature-params"`, with no newline at the end."""
    text = "".join(f'"{name}": {value}\n' for name, value in lines)
    return (text + f'"@signature-params": {params}').encode()


def sign_base(key: PrivateKey, base: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(base)
    return key.sign(base, padding.PKCS1v15(), hashes.SHA256())


def headers(key: PrivateKey, jwe: str, request: Target, *, created: int,
            digest: str | None) -> dict[str, str]:
    """The headers eBay wants on a request: `Content-Digest` (only with a body),
    `x-ebay-signature-key`, `Signature-Input` and `Signature`."""
    components = COMPONENTS_WITH_BODY if digest is not None else COMPONENTS_WITHOUT_BODY
    values = {DIGEST_HEADER: digest, KEY_HEADER: jwe, "@method": request.method,
              "@path": request.path, "@authority": request.authority}
    params = signature_params(components, created)
    base = signature_base([(name, values[name] or "") for name in components], params)
    signature = base64.b64encode(sign_base(key, base)).decode()
    out = {} if digest is None else {"Content-Digest": digest}
    out.update({KEY_HEADER: jwe, "Signature-Input": f"{LABEL}={params}",
                "Signature": f"{LABEL}=:{signature}:"})
    return out


def load_private_key(text: str) -> tuple[PrivateKey, str]:
    """A private key as PEM (PKCS#8 or traditional) or as eBay's createSigningKey answers it
    (the PKCS#8 DER in bare base64); returns it with its cipher."""
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(stripped.encode(), password=None)
        else:
            der = base64.b64decode("".join(stripped.split()), validate=True)
            key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise KeyFormatError("not a PEM or base64 PKCS#8 private key without a password") \
            from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, ED25519
    if isinstance(key, rsa.RSAPrivateKey):
        return key, RSA
    raise KeyFormatError("the key is neither Ed25519 nor RSA, the ciphers eBay signs with")


def private_key_text(key: PrivateKey) -> str:
    """The key as PKCS#8 PEM: what tokend seals and stores."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_key_text(key: PrivateKey) -> str:
    """The public half as eBay answers it: bare base64 of the SubjectPublicKeyInfo DER."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()
