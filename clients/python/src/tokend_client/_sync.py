"""The blocking client: `Tokend`, safe to share between threads."""

from __future__ import annotations

import threading
import time

import httpx

from tokend_client import _common


class Tokend:
    """Access tokens from tokend for a blocking app (threads welcome).

        with Tokend("http://127.0.0.1:8765", consumer_token) as tokend:
            token = tokend.access_token("acct-1", min_valid_seconds=600)

    A token is reused while it stays valid for the asked number of seconds; concurrent
    callers for one account share one request to tokend. `client`: an `httpx.Client`
    to use (not closed here); by default one of its own.
    """

    def __init__(
        self, base_url: str, consumer_token: str, *, client: httpx.Client | None = None,
        timeout_seconds: float = _common.DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._consumer_token = consumer_token
        self._client = client
        self._owns_client = client is None
        self._timeout = httpx.Timeout(timeout_seconds)
        self._cache = _common.TokenCache()
        self._locks: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"Tokend({self.base_url!r})"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout)
        return self._client

    def access_token(
        self, account_id: str, min_valid_seconds: float = _common.DEFAULT_MIN_VALID_SECONDS,
    ) -> str:
        """A token valid for at least `min_valid_seconds` (or as long as the provider's
        tokens live, when that is shorter)."""
        cached = self._cache.valid(account_id, min_valid_seconds)
        if cached is not None:
            return cached
        with self._lock(account_id):
            cached = self._cache.valid(account_id, min_valid_seconds)
            if cached is not None:
                return cached
            return self._fetch(account_id, min_valid_seconds).token

    def _fetch(self, account_id: str, min_valid_seconds: float) -> _common.AccessToken:
        response = self.client.get(
            self.base_url + _common.token_path(account_id), timeout=self._timeout,
            params={"min_valid_seconds": str(int(min_valid_seconds))},
            headers=_common.headers(self._consumer_token))
        return self._cache.put(account_id, _common.access_token(response))

    def report_rejected(self, account_id: str, token: str) -> _common.Rejection:
        """Tell tokend the provider refused `token` (only its hash is sent)."""
        self._cache.forget(account_id, token)
        response = self.client.post(
            self.base_url + _common.token_path(account_id) + "/rejected",
            json={"sha256": _common.sha256(token)}, timeout=self._timeout,
            headers=_common.headers(self._consumer_token))
        return _common.rejection(response)

    def renewed(
        self, account_id: str, rejected: str,
        min_valid_seconds: float = _common.DEFAULT_MIN_VALID_SECONDS,
    ) -> str | None:
        """A token other than `rejected` after reporting it, or None when tokend has none
        (it declined to refresh). Callers refused together send one report."""
        with self._lock(f"{account_id}\x00rejected"):
            renewed = self._cache.other_than(account_id, rejected)
            if renewed is not None:
                return renewed  # another caller reported it meanwhile
            answer = self.report_rejected(account_id, rejected)
            if answer.status != 200:
                return None
            deadline = time.monotonic() + _common.FRESH_WAIT_SECONDS
            while True:
                fresh = self._fetch(account_id, min_valid_seconds)
                if fresh.token != rejected:
                    return fresh.token
                self._cache.forget(account_id, rejected)
                if time.monotonic() >= deadline:
                    return None
                time.sleep(_common.FRESH_POLL_SECONDS)

    def _lock(self, key: str) -> threading.Lock:
        return self._locks.setdefault(key, threading.Lock())  # atomic: one lock per key

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
        self._client = None

    def __enter__(self) -> Tokend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
