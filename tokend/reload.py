"""Secrets that change without a restart: SIGHUP (`systemctl reload tokend`) or a change
seen by the file watch re-reads the configuration and swaps its secrets in.

`Secrets` is the one place a running daemon keeps them: the web auth, the webhook
signer and the provider clients look there at call time, and every keyring user holds
the one `crypto.Keyring`, whose keys are swapped in place. A reload reads and checks
everything first and then assigns it in one synchronous step, so no call sees half of
one and nothing in flight is interrupted: a refresh already sent finishes, and seals
what it receives with the primary key of the moment it saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import structlog

from tokend import config, crypto

log = structlog.get_logger("tokend.reload")

Key = tuple[str, ...]  # a setting's path: ("providers", "ebay", "client_secret")


def _reloadable(path: Key) -> bool:
    """The keys a reload applies: every secret but the database URLs (the pool holds
    connections opened with them) and eBay's verification token (read at start)."""
    match path:
        case ("crypto", "keys") | ("server", "admin_token" | "consumer_token"):
            return True
        case ("server", "org_tokens" | "consumer_org_tokens", _):
            return True
        case ("providers", _, "client_secret") | ("webhooks", _, "secret"):
            return True
    return False


def flatten(cfg: config.Config) -> dict[Key, Any]:
    """Every setting by its path; providers and webhooks by name, token maps by key."""
    out: dict[Key, Any] = {}

    def walk(prefix: Key, value: Any) -> None:
        if dataclasses.is_dataclass(value):
            for field in dataclasses.fields(value):
                walk((*prefix, field.name), getattr(value, field.name))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk((*prefix, str(key)), item)
        elif prefix == ("webhooks",):
            for webhook in value:
                walk((*prefix, webhook.name), webhook)
        else:
            out[prefix] = value

    walk((), cfg)
    return out


def _name(path: Key) -> str:
    return ".".join(path)


class Secrets:
    """The running secrets. Providers and webhooks are those the daemon started with:
    adding one needs a restart, so a secret of one it does not run is not taken."""

    def __init__(self, cfg: config.Config, keyring: crypto.Keyring | None = None) -> None:
        self.started = cfg
        self.keyring = keyring or cfg.crypto.keyring()
        self.server = cfg.server  # only its admin, org and consumer tokens are read here
        self.client_secrets = {n: p.client_secret for n, p in cfg.providers.items()}
        self.webhook_keys = {w.name: w.key for w in cfg.webhooks}
        self._values = {p: v for p, v in flatten(cfg).items() if _reloadable(p)}

    def client_secret(self, provider: str) -> str:
        return self.client_secrets[provider]

    def webhook_key(self, endpoint: str) -> bytes:
        return self.webhook_keys[endpoint]

    def take(self, cfg: config.Config, keyring: crypto.Keyring) -> list[str]:
        """Swap in `cfg`'s secrets (checked already); the names of those that changed."""
        # A provider or webhook gone from the file still runs, with the secret it had.
        kept = {p: v for p, v in self._values.items() if p[0] in ("providers", "webhooks")}
        values = {**kept, **{p: v for p, v in flatten(cfg).items()
                             if _reloadable(p) and self._runs(p)}}
        changed = sorted(_name(p) for p in values.keys() | self._values.keys()
                         if values.get(p) != self._values.get(p))
        self.keyring.replace(keyring)
        self.server = dataclasses.replace(
            self.started.server, admin_token=cfg.server.admin_token,
            org_tokens=cfg.server.org_tokens, consumer_token=cfg.server.consumer_token,
            consumer_org_tokens=cfg.server.consumer_org_tokens)
        self.client_secrets = {**self.client_secrets, **{
            n: p.client_secret for n, p in cfg.providers.items() if n in self.client_secrets}}
        self.webhook_keys = {**self.webhook_keys, **{
            w.name: w.key for w in cfg.webhooks if w.name in self.webhook_keys}}
        self._values = values
        return changed

    def _runs(self, path: Key) -> bool:
        """Whether the provider or webhook a setting belongs to runs in this process."""
        if path[0] == "providers":
            return path[1] in self.client_secrets
        if path[0] == "webhooks":
            return path[1] in self.webhook_keys
        return True

    def needs_restart(self, cfg: config.Config) -> list[str]:
        """The other settings that differ from those the daemon started with."""
        old, new = flatten(self.started), flatten(cfg)
        return sorted(_name(p) for p in old.keys() | new.keys()
                      if old.get(p) != new.get(p)
                      and not (_reloadable(p) and self._runs(p)))


class Reloader:
    """Re-reads the configuration with `load` (the one `tokend run` started from)."""

    def __init__(self, secrets: Secrets, load: Callable[[], config.Config]) -> None:
        self.secrets, self.load = secrets, load
        # What the last look found: a watch says each outcome once, not at every look.
        self._last: object = ("applied", (), ())

    def reload(self, *, reason: str = "signal") -> bool:
        """Apply the secrets that changed; refuse the whole reload, with one line naming
        the key or file, when anything does not parse. True when something changed."""
        try:
            cfg = self.load()
            if not cfg.server.admin_token:
                raise config.ConfigError("server.admin_token", "is required")
            keyring = cfg.crypto.keyring()
        except config.ConfigError as exc:
            if self._say(("refused", str(exc)), reason):
                log.error("config_reload_refused", key=exc.key, error=str(exc), reason=reason)
            return False
        restart = self.secrets.needs_restart(cfg)
        changed = self.secrets.take(cfg, keyring)
        if self._say(("applied", tuple(changed), tuple(restart)), reason) or changed:
            log.info("config_reloaded", changed=changed, primary_kid=keyring.primary_kid,
                     reason=reason)
            if restart:
                log.warning("config_restart_needed", keys=restart)
        return bool(changed)

    def _say(self, outcome: object, reason: str) -> bool:
        """A signal always answers; a watch only when the outcome is new."""
        new = outcome != self._last
        self._last = outcome
        return new or reason == "signal"

    async def watch(self, interval_seconds: float, stop: asyncio.Event) -> None:
        """Look every `interval_seconds` until `stop`: for Secrets mounted as files, which
        Kubernetes replaces in place. Quiet while nothing changes."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)
                return
            try:
                self.reload(reason="watch")
            except Exception:  # a bug here must not take the daemon down
                log.exception("config_watch_failed")


@contextlib.asynccontextmanager
async def watching(reloader: Reloader, interval_seconds: float | None,
                   stop: asyncio.Event) -> AsyncIterator[None]:
    """Run the watch (when an interval is given) while the block runs."""
    if not interval_seconds:
        yield
        return
    task = asyncio.create_task(reloader.watch(interval_seconds, stop), name="config-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
