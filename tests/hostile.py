"""Hostile HTTP for a tokend over a raw socket: bytes no well-behaved client sends (headers
that are not UTF-8, bodies that contradict their Content-Encoding, broken request lines),
drawn from a seeded generator over every route, so a failure replays from its seed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gzip
import random
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence

from tokend.web import openapi

# Every route the app serves, as templates, from the OpenAPI document: the fuzz follows the
# contract, and tests/test_api_fuzz.py checks that the app has no route missing here.
ROUTES = tuple((method.upper(), path) for path, operations in openapi.document()["paths"].items()
               for method in operations)
BROWSER_PAGES = ("/connect/", "/oauth/callback")

ODD_TEXT = ["", "x", "%00", "a%00b", "%ff%fe", "%C3%A9", "..%2F..%2Fsql", "x" * 3000,
            "%F0%9F%99%82", "'%3B--", "%0d%0aSet-Cookie:x", "null", "-1", "9" * 40]
QUERY_KEYS = ["source", "action", "account_id", "limit", "before_id", "after_id", "cursor",
              "q", "org", "state", "sort", "order", "provider", "scopes", "min_valid_seconds",
              "challenge_code", "state", "code", "error", "endpoint", "type", "event_id"]
NON_UTF8 = [b"\xe9", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc", b"\xf0\x9f\x99"]

# Messages no HTTP/1.1 parser accepts: garbage, other protocols, broken or oversized lines,
# contradicting lengths.
MALFORMED = (
    b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 9000 + b"\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"POST /api/connect-links HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /ebay/notifications HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Content-Length: 3\r\n\r\n{}",
    b"POST /api/accounts/x/refresh HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: bogus\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET / HTTP/1.1\r\nHo\x00st: x\r\n\r\n", b"G\xe9T / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: the server closed without an answer
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


def message(method: str, target: str, headers: Sequence[tuple[bytes, bytes]] = (),
            body: bytes | None = None, *, host: str = "127.0.0.1") -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + host.encode(),
             b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None and not any(n.lower() in (b"content-length", b"transfer-encoding")
                                    for n, _ in headers):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


async def exchange(host: str, port: int, data: bytes, *, timeout: float = 10.0) -> Answer:
    """Send raw bytes, read the answer to its end (every message says Connection: close),
    or to its head when it is a WebSocket upgrade. Status -1: no end within `timeout`."""
    reader, writer = await asyncio.open_connection(host, port)
    raw = b""
    try:
        async with asyncio.timeout(timeout):
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
                while chunk := await reader.read(65536):
                    raw += chunk
                    if raw.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in raw:
                        break
    except TimeoutError:
        return Answer(-1, {}, raw)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse(raw)


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ")[1])
    except (IndexError, ValueError):
        return Answer(0, {}, raw)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return Answer(status, headers, body)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


class Generator:
    """Seeded requests: `tokens` maps a principal's name to its token."""

    def __init__(self, seed: int, tokens: Mapping[str, str], account_ids: Sequence[str],
                 provider: str) -> None:
        self.rng = random.Random(seed)
        self.tokens, self.account_ids, self.provider = tokens, list(account_ids), provider

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        while True:
            yield self.draw()

    def draw(self) -> tuple[str, bytes]:
        """(kind, the raw message); kind "malformed" is not HTTP a parser accepts."""
        r = self.rng
        if r.random() < 0.12:
            return "malformed", self.malformed()
        method, template = r.choice(ROUTES)
        if r.random() < 0.15:
            method = r.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
        path = template.replace("{id}", self.odd_id()).replace("{name}", self.odd_name()) \
            .replace("{token}", self.odd_id())
        query = "&".join(f"{r.choice(QUERY_KEYS)}={r.choice(ODD_TEXT + self.cursors())}"
                         for _ in range(r.choice([0, 0, 1, 2, 3])))
        headers = [*self.authorization(), *self.body_headers()]
        body = self.body() if method in ("POST", "PUT", "PATCH") or r.random() < 0.1 else None
        encoding = r.random()
        if body is not None and encoding < 0.2:  # a body that contradicts its encoding
            headers.append((b"Content-Encoding", r.choice([b"gzip", b"deflate", b"br"])))
        elif body is not None and encoding < 0.25:
            headers.append((b"Content-Encoding", b"gzip"))
            body = gzip.compress(body)[:-r.randint(1, 8)]  # truncated
        if template == "/ws/logs" and r.random() < 0.5:
            headers += self.upgrade()
        target = path + (f"?{query}" if query else "")
        return "request", message(method, target, headers, body)

    def odd_id(self) -> str:
        r = self.rng
        if r.random() < 0.4 and self.account_ids:
            return r.choice(self.account_ids)
        return r.choice(ODD_TEXT)

    def odd_name(self) -> str:
        return self.provider if self.rng.random() < 0.5 else self.rng.choice(ODD_TEXT)

    def cursors(self) -> list[str]:
        raw = self.rng.choice([b'["name", false, "a\\u0000b", "x"]', b"[1,2,3]", b"\xff\xfe",
                               b'["name",false,"a","\\u0000"]', b'["name", false, "x", "a"]'])
        return [base64.urlsafe_b64encode(raw).decode().rstrip("=")]

    def authorization(self) -> list[tuple[bytes, bytes]]:
        r = self.rng
        roll = r.random()
        if roll < 0.2:
            return []
        if roll < 0.55:
            return [(b"Authorization", b"Bearer " + r.choice(list(self.tokens.values())).encode())]
        if roll < 0.75:
            return [(b"Authorization", b"Bearer " + r.choice(NON_UTF8))]
        return [(b"Authorization", r.choice([
            b"Bearer", b"Bearer ", b"Basic YWRtaW46YWRtaW4=", b"bearer x" * 200,
            b"Bearer " + r.choice(list(self.tokens.values())).encode() + b"\xe9",
            b"\xe9\xe9 \xe9"]))]

    def body_headers(self) -> list[tuple[bytes, bytes]]:
        r = self.rng
        out = []
        if r.random() < 0.6:
            out.append((b"Content-Type", r.choice([b"application/json", b"text/plain",
                                                   b"application/x-www-form-urlencoded",
                                                   b"multipart/form-data; boundary=x",
                                                   b"application/json; charset=\xe9"])))
        if r.random() < 0.1:
            out.append((b"X-EBAY-SIGNATURE", r.choice([b"", b"e30=", b"\xe9\xff", b"x" * 500])))
        if r.random() < 0.1:
            out.append((r.choice([b"Cookie", b"Origin", b"Referer", b"Accept"]),
                        r.choice(NON_UTF8) + b"x"))
        return out

    def body(self) -> bytes:
        r = self.rng
        return r.choice([
            b"", b"{}", b'{"debug": true}', b'{"debug": "x"}', b"[]", b"null", b"{",
            b"\x00\xff" * 10,
            b'{"provider": "' + self.provider.encode() + b'", "org": "a\\u0000b"}',
            b'{"provider": "' + self.provider.encode() + b'", "org": "acme"}',
            b'{"provider": "x", "org": "\xe9"}', b'{"metadata": {"topic": "x"}}',
            b'{"debug": "' + b"x" * 70_000 + b'"}', r.randbytes(r.randint(1, 300)),
        ])

    def upgrade(self) -> list[tuple[bytes, bytes]]:
        r = self.rng
        return [(b"Upgrade", r.choice([b"websocket", b"WebSocket", b"h2c", b"\xe9"])),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Version", r.choice([b"13", b"8", b"x", b""])),
                (b"Sec-WebSocket-Key", r.choice([b"dGhlIHNhbXBsZSBub25jZQ==", b"short", b"",
                                                 b"\xe9" * 16]))]

    def malformed(self) -> bytes:
        return self.rng.choice(MALFORMED)


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")
