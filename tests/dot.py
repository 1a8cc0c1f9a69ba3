"""A real authorization server for interop tests: Django OAuth Toolkit on loopback.

`Server` migrates a fresh SQLite database, seeds a user and client applications, runs
`django runserver` as a child process on a free port, and walks the authorization-code
flow (with PKCE) the way a browser would, to get real refresh tokens.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
USER, PASSWORD = "seller", "seller-password-" + secrets.token_hex(4)
REDIRECT_URI = "http://127.0.0.1:9/callback"
# Confidential clients; the Basic one has every character RFC 6749 2.3.1 encoding touches.
BASIC_CLIENT, BASIC_SECRET = "basic-app", "p+l%u:s/e=q+" + secrets.token_hex(8)
BODY_CLIENT, BODY_SECRET = "body-app", "body-" + secrets.token_hex(12)
INTROSPECTOR, INTROSPECTOR_SECRET = "introspector", "intro-" + secrets.token_hex(12)
PUBLIC_CLIENT = "public-app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder: Path, *, token_seconds: int) -> None:
        self.folder = folder
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token_url = self.base_url + "/o/token/"
        self.env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "oauth_server.settings",
            "PYTHONPATH": str(HERE), "OAUTH_SERVER_DB": str(folder / "oauth.sqlite3"),
            "OAUTH_SERVER_TOKEN_SECONDS": str(token_seconds), "PYTHONUNBUFFERED": "1",
            # oauthlib refuses plain http unless told that this is a test on loopback.
            "OAUTHLIB_INSECURE_TRANSPORT": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    def _django(self, *args: str) -> None:
        done = subprocess.run([sys.executable, *args], env=self.env, cwd=HERE,
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")

    def start(self) -> Server:
        self._django("-m", "django", "migrate", "--noinput", "-v", "0")
        self._django("-m", "oauth_server.seed", USER, PASSWORD, REDIRECT_URI,
                     f"{BASIC_CLIENT}:confidential:{BASIC_SECRET}",
                     f"{BODY_CLIENT}:confidential:{BODY_SECRET}",
                     f"{INTROSPECTOR}:confidential:{INTROSPECTOR_SECRET}",
                     f"{PUBLIC_CLIENT}:public:-")
        self._log = (self.folder / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", "--noreload",
             f"127.0.0.1:{self.port}"],
            env=self.env, cwd=HERE, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/ping/")[0] == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the authorization server did not start: "
                                   + (self.folder / "server.log").read_text()[-2000:])
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()

    # -- HTTP as a browser or a client would speak it ---------------------------------------

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = urllib.parse.urlencode(form) if form is not None else None
            all_headers = dict(headers or {})
            if body is not None:
                all_headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def consent(self, client_id: str, scope: str = "read") -> tuple[str, str]:
        """Sign in, open the authorize URL (consent is pre-granted): (code, PKCE verifier)."""
        status, headers, _ = self.request("POST", "/login/",
                                          {"username": USER, "password": PASSWORD})
        assert status == 200, status
        cookie = headers["Set-Cookie"].split(";")[0]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
            "scope": scope, "state": secrets.token_hex(8), "code_challenge": challenge,
            "code_challenge_method": "S256"})
        status, headers, body = self.request("GET", "/o/authorize/?" + query,
                                             headers={"Cookie": cookie})
        assert status == 302, (status, body[:500])
        location = urllib.parse.urlsplit(headers["Location"])
        code = urllib.parse.parse_qs(location.query)["code"][0]
        return code, verifier

    def grant(self, client_id: str, secret: str | None, scope: str = "read") -> dict[str, Any]:
        """A fresh grant through the authorization-code flow: the token endpoint's answer."""
        code, verifier = self.consent(client_id, scope)
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": REDIRECT_URI, "code_verifier": verifier,
                "client_id": client_id}
        if secret is not None:
            form["client_secret"] = secret
        status, _, body = self.request("POST", "/o/token/", form)
        assert status == 200, body[:500]
        return orjson.loads(body)

    def refresh_token(self, client_id: str = BASIC_CLIENT, secret: str | None = BASIC_SECRET,
                      ) -> str:
        return self.grant(client_id, secret)["refresh_token"]

    def introspect(self, token: str) -> dict[str, Any]:
        credentials = base64.b64encode(
            f"{INTROSPECTOR}:{INTROSPECTOR_SECRET}".encode()).decode()
        status, _, body = self.request("POST", "/o/introspect/", {"token": token},
                                       headers={"Authorization": "Basic " + credentials})
        assert status == 200, body[:500]
        return orjson.loads(body)

    def revoke(self, token: str, client_id: str, secret: str) -> None:
        status, _, body = self.request("POST", "/o/revoke_token/", {
            "token": token, "token_type_hint": "refresh_token", "client_id": client_id,
            "client_secret": secret})
        assert status == 200, body[:500]
