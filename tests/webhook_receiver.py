"""A webhook receiver on loopback that verifies every delivery with the `standardwebhooks`
reference implementation (code written elsewhere), and can fail, hang or be slow."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from typing import Any

import standardwebhooks
from aiohttp import web

from tokend import config


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Receiver:
    """`mode`: "ok" (204), "fail" (500), "hang" (no answer until `release`), or "slow"
    (answers after `delay` seconds). `fail_first` answers 500 to that many requests first."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or new_secret()
        self.verifier = standardwebhooks.Webhook(self.secret)
        self.mode, self.delay, self.fail_first = "ok", 0.0, 0
        self.requests = 0  # every POST, whatever became of it
        self.request_times: list[float] = []  # time.monotonic() of each POST's arrival
        self.in_flight = 0
        self.bad_signatures = 0
        self.received: list[dict[str, Any]] = []  # verified and answered 2xx
        self.arrived_at: dict[str, float] = {}  # webhook-id -> time.time() of first arrival
        self.released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def endpoint(self, **overrides: Any) -> config.WebhookConfig:
        settings = {"url": self.url, "secret": self.secret, "name": "receiver",
                    "timeout_seconds": 2.0, "backoff_base_seconds": 0.1,
                    "backoff_max_seconds": 0.5, **overrides}
        return config.WebhookConfig(**settings)

    def ids(self) -> list[str]:
        return [r["id"] for r in self.received]

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.released.set()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.request_times.append(time.monotonic())
        self.in_flight += 1
        try:
            body = await request.read()
            try:
                payload = self.verifier.verify(body, dict(request.headers))
            except standardwebhooks.WebhookVerificationError:
                self.bad_signatures += 1
                return web.Response(status=401)
            if self.fail_first > 0:
                self.fail_first -= 1
                return web.Response(status=500)
            if self.mode == "fail":
                return web.Response(status=500)
            if self.mode == "hang":
                await self.released.wait()
                if request.transport is None or request.transport.is_closing():
                    return web.Response(status=499)  # its sender gave up or died: not received
            if self.mode == "slow":
                await asyncio.sleep(self.delay)
            msg_id = request.headers["webhook-id"]
            self.arrived_at.setdefault(msg_id, time.time())
            self.received.append({"id": msg_id, "payload": payload,
                                  "headers": dict(request.headers)})
            return web.Response(status=204)
        finally:
            self.in_flight -= 1
