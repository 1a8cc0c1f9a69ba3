"""The TOML configuration as frozen dataclasses, with one clear line for every mistake.

A secret comes from its environment variable, else `<key>_file` (relative paths resolve
against `$CREDENTIALS_DIRECTORY`, then the config file's folder), else inline.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokend import crypto, store, vocabulary
from tokend.ebay import profile as ebay_profile


class ConfigError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    url: str = dataclasses.field(default="sqlite:///var/lib/tokend/tokend.db", repr=False)
    pool_max_size: int = 10
    log_retention_seconds: float = 30 * 86_400.0
    # PgBouncer in transaction pooling mode sits in front of `url`: no prepared-statement
    # cache, and LISTEN needs `listen_url` (a direct connection) or the stream polls.
    pgbouncer: bool = False
    listen_url: str | None = dataclasses.field(default=None, repr=False)
    connect_timeout_seconds: float = store.DEFAULT_TIMEOUTS.connect_timeout_seconds
    statement_timeout_seconds: float = store.DEFAULT_TIMEOUTS.statement_timeout_seconds
    idle_in_transaction_timeout_seconds: float = (
        store.DEFAULT_TIMEOUTS.idle_in_transaction_timeout_seconds)
    health_check_seconds: float = store.DEFAULT_TIMEOUTS.health_check_seconds

    def store_options(self) -> dict[str, Any]:
        """The keyword arguments of `store.open`/`store.connect` besides the URL."""
        timeouts = store.Timeouts(**{f.name: getattr(self, f.name)
                                     for f in dataclasses.fields(store.Timeouts)})
        return {"pool_max_size": self.pool_max_size, "pgbouncer": self.pgbouncer,
                "listen_url": self.listen_url, "timeouts": timeouts}


@dataclasses.dataclass(frozen=True)
class RefreshConfig:
    interval_seconds: float = 600.0
    expiry_threshold_seconds: float = 900.0
    max_age_seconds: float = 3600.0
    concurrency: int = 16
    request_timeout_seconds: float = 15.0
    lease_seconds: float = 120.0
    shutdown_grace_seconds: float = 30.0
    backoff_base_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    provider_pause_seconds: float = 3600.0


@dataclasses.dataclass(frozen=True)
class CryptoConfig:
    keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    def keyring(self) -> crypto.Keyring:
        if not self.keys:
            raise ConfigError("crypto.keys", "at least one key is required "
                              "(create one with tokend keygen; or TOKEND_ENCRYPTION_KEYS)")
        return crypto.Keyring.from_lines(self.keys)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    admin_token: str = dataclasses.field(default="", repr=False)
    org_tokens: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    consumer_token: str = dataclasses.field(default="", repr=False)
    consumer_org_tokens: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    allowed_origins: tuple[str, ...] = ()
    stream_backlog: int = 200
    stream_queue_size: int = 1000
    terminal_max_entries: int = 2000
    drain_seconds: float = 1.0
    # Where browsers reach this tokend (connect links, `{public_url}/oauth/callback`).
    public_url: str = ""


CLIENT_AUTHS = ("basic", "body", "none")
DEFAULT_REAUTH_ERROR_CODES = ("invalid_grant",)
# Elsewhere than eBay, one hour is the common lifetime of an access token.
OAUTH2_DEFAULT_EXPIRES_IN_SECONDS = 3600.0


@dataclasses.dataclass(frozen=True)
class Profile:
    """What differs between provider types, set once here so that no other module asks
    which type a provider is."""

    label: str  # how messages name the type
    token_prefix: str | None  # every token of this type starts so; None: any shape
    token_types: tuple[str, ...]  # lower-cased `token_type` values we can use
    pkce: bool  # connect links send an S256 challenge (eBay takes none)
    redirect_uri_required: bool  # no default redirect_uri (eBay: the app's RuName)
    identity_lookup: bool  # after consent, ask the provider who signed in (eBay's getUser)
    app_scopes: tuple[str, ...]  # an application token's scopes when none is named
    access_token_lifetime_seconds: float  # when an answer has no expires_in
    refresh_token_lifetime_seconds: float | None  # from consent; None: unknown
    signing_keys: bool  # Key Management API keys sign calls (digital signatures)

    def looks_like_token(self, token: str) -> bool:
        return self.token_prefix is None or token.startswith(self.token_prefix)


PROFILES = {
    "ebay": Profile(
        label="eBay", token_prefix=ebay_profile.TOKEN_PREFIX,
        token_types=ebay_profile.TOKEN_TYPES, pkce=False, redirect_uri_required=True,
        identity_lookup=True, app_scopes=ebay_profile.APP_SCOPES,
        access_token_lifetime_seconds=ebay_profile.ACCESS_TOKEN_LIFETIME_SECONDS,
        refresh_token_lifetime_seconds=ebay_profile.REFRESH_TOKEN_LIFETIME_SECONDS,
        signing_keys=True),
    "oauth2": Profile(
        label="OAuth 2.0", token_prefix=None, token_types=("bearer",), pkce=True,
        redirect_uri_required=False, identity_lookup=False, app_scopes=(),
        access_token_lifetime_seconds=OAUTH2_DEFAULT_EXPIRES_IN_SECONDS,
        refresh_token_lifetime_seconds=None, signing_keys=False),
}


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    environment: str | None  # eBay's endpoint; None for a generic provider
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    scopes: tuple[str, ...]
    token_url: str
    client_auth: str = "basic"  # basic | body | none (a public client: client_id only)
    daily_quota: int | None = None  # eBay only
    # Error codes from the token endpoint that mean "the user must sign in again".
    reauth_error_codes: tuple[str, ...] = DEFAULT_REAUTH_ERROR_CODES
    # The access token's lifetime when an answer has no expires_in; None: the type's own
    # (eBay documents two hours, elsewhere one hour is common).
    default_expires_in_seconds: float | None = None
    # Some servers refuse `scope` on a refresh; the grant keeps its scopes without it.
    refresh_sends_scope: bool = True
    # The authorization-code grant (connect links): the consent page, eBay's Identity API
    # (getUser), and the redirect_uri sent (eBay: the app's RuName; else the callback URL).
    authorize_url: str = ""
    identity_url: str = ""
    redirect_uri: str = ""
    # eBay's Key Management API (signing keys for digital signatures); eBay only.
    key_management_url: str = ""
    # The share of daily_quota after which only expiring healthy accounts are refreshed.
    budget_reserve: float = 0.8
    # Demand-aware scheduling: an account whose access token no app has had for this long
    # is refreshed only when one asks (then it is back on the schedule). None: always.
    idle_after_seconds: float | None = None

    @property
    def profile(self) -> Profile:
        """What this provider's type does differently (KeyError: an unknown type)."""
        return PROFILES[self.type]

    @property
    def expires_in_fallback_seconds(self) -> float:
        if self.default_expires_in_seconds is not None:
            return self.default_expires_in_seconds
        return self.profile.access_token_lifetime_seconds


WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (Standard Webhooks' prefix, not a secret)


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    """One `[[webhooks]]` endpoint (SPEC 10.2)."""

    url: str
    secret: str = dataclasses.field(repr=False)  # whsec_ + base64 of the signing key
    name: str = ""  # its label in the table, the API and metrics; default host + path
    events: tuple[str, ...] = ()  # empty: every event type
    timeout_seconds: float = 10.0
    max_attempts: int = 12
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 3600.0
    breaker_failures: int = 5
    breaker_seconds: float = 60.0

    @property
    def key(self) -> bytes:
        return base64.b64decode(self.secret.removeprefix(WEBHOOK_SECRET_PREFIX))

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@dataclasses.dataclass(frozen=True)
class EbayNotificationsConfig:
    """`[ebay_notifications]`: eBay's Notification API endpoint (SPEC 10.1)."""

    verification_token: str = dataclasses.field(repr=False)
    endpoint: str  # the exact public URL registered with eBay
    provider: str  # the eBay provider whose client credentials fetch application tokens
    public_key_url: str  # getPublicKey; the key id is appended


@dataclasses.dataclass(frozen=True)
class Config:
    database: DatabaseConfig = DatabaseConfig()
    refresh: RefreshConfig = RefreshConfig()
    crypto: CryptoConfig = CryptoConfig()
    server: ServerConfig = ServerConfig()
    providers: Mapping[str, ProviderConfig] = dataclasses.field(default_factory=dict)
    ebay_notifications: EbayNotificationsConfig | None = None
    webhooks: tuple[WebhookConfig, ...] = ()

    def idle_after(self) -> dict[str, float]:
        """The demand-aware providers and their idle_after_seconds."""
        return {name: p.idle_after_seconds for name, p in self.providers.items()
                if p.idle_after_seconds is not None}


class _Table:
    """One TOML table being read: typed getters that name the full key on error."""

    def __init__(self, prefix: str, data: Any, base_dir: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(prefix, "expected a table")
        self.prefix, self.data, self.base_dir = prefix, dict(data), base_dir
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(name)
        value = self.data.get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(self.key(name), f"expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise ConfigError(self.key(name), f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0,
               minimum_allowed: bool = False) -> float:
        value = float(self.get(name, (int, float), default))
        if not math.isfinite(value):  # TOML allows inf and nan
            raise ConfigError(self.key(name), "must be a finite number")
        if minimum_allowed and value < minimum:
            raise ConfigError(self.key(name), f"must be at least {minimum:g}")
        if not minimum_allowed and value <= minimum:
            raise ConfigError(self.key(name), f"must be greater than {minimum:g}")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 1) -> int:
        value = self.get(name, int, default)
        if value < minimum:
            raise ConfigError(self.key(name), f"must be at least {minimum}")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in options:
            raise ConfigError(self.key(name), f"must be one of {', '.join(options)}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list, default)
        if any(not isinstance(item, str) for item in value):
            raise ConfigError(self.key(name), "expected a list of strings")
        return tuple(value)

    def secret(self, name: str, env: str | None, default: Any = "") -> Any:
        """The secret from `env`, else `<name>_file`, else inline."""
        self.seen.update((name, f"{name}_file"))
        if env and os.environ.get(env):
            return os.environ[env]
        file_value = self.data.get(f"{name}_file")
        if file_value is not None and name in self.data:
            raise ConfigError(self.key(name), f"give either {name} or {name}_file, not both")
        if file_value is not None:
            if not isinstance(file_value, str):
                raise ConfigError(self.key(f"{name}_file"), "expected a path string")
            return _read_secret_file(self.key(f"{name}_file"), file_value, self.base_dir)
        return self.data.get(name, default)

    def table(self, name: str) -> _Table:
        self.seen.add(name)
        return _Table(self.key(name), self.data.get(name, {}), self.base_dir)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             bool: "a boolean", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return "a number" if float in kinds else " or ".join(names[k] for k in kinds)


def _read_secret_file(key: str, path: str, base_dir: Path) -> str:
    candidates = [Path(path)]
    if not candidates[0].is_absolute():
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        candidates = ([Path(creds) / path] if creds else []) + [base_dir / path]
    for candidate in candidates:
        try:
            return candidate.read_text().strip()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(key, f"cannot read {candidate}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(key, f"{candidate} is not UTF-8 text") from None
    searched = ", ".join(str(c.parent) for c in candidates)
    hint = "" if Path(path).is_absolute() or os.environ.get("CREDENTIALS_DIRECTORY") \
        else "; $CREDENTIALS_DIRECTORY is not set"
    raise ConfigError(key, f"file not found: {path} (looked in {searched}{hint})")


def _env_name(provider: str) -> str:
    return "TOKEND_PROVIDER_" + provider.upper().replace("-", "_") + "_CLIENT_SECRET"


def _database(t: _Table) -> DatabaseConfig:
    d = DatabaseConfig()
    # A secret too: a PostgreSQL URL may carry the password.
    url = t.secret("url", None, d.url)
    if not isinstance(url, str):
        raise ConfigError(t.key("url"), "expected a string")
    if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(t.key("url"), "must start with sqlite://, postgresql:// or postgres://")
    if url.startswith("sqlite://") and not url.removeprefix("sqlite://"):
        raise ConfigError(t.key("url"), "sqlite:// needs a file path")
    listen_url = t.secret("listen_url", None, None)
    if listen_url is not None and (not isinstance(listen_url, str) or not listen_url.startswith(
            ("postgresql://", "postgres://"))):
        raise ConfigError(t.key("listen_url"), "must start with postgresql:// or postgres://")
    if listen_url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(t.key("listen_url"), "only applies to a PostgreSQL url")
    out = DatabaseConfig(
        url=url, pool_max_size=t.integer("pool_max_size", d.pool_max_size),
        log_retention_seconds=t.number("log_retention_seconds", d.log_retention_seconds),
        pgbouncer=t.get("pgbouncer", bool, d.pgbouncer), listen_url=listen_url,
        **{f.name: t.number(f.name, getattr(d, f.name))
           for f in dataclasses.fields(store.Timeouts)})
    t.done()
    return out


def _refresh(t: _Table) -> RefreshConfig:
    values = {
        f.name: (t.integer(f.name, f.default) if f.type == "int" else t.number(f.name, f.default))
        for f in dataclasses.fields(RefreshConfig)
    }
    t.done()
    return RefreshConfig(**values)


def _crypto(t: _Table) -> CryptoConfig:
    env = os.environ.get("TOKEND_ENCRYPTION_KEYS")
    if env:
        t.seen.update(("keys", "keys_file"))
        keys = tuple(k.strip() for k in env.split(",") if k.strip())
        key_name = "crypto.keys (TOKEND_ENCRYPTION_KEYS)"
    else:
        raw = t.secret("keys", None, default=[])
        key_name = t.key("keys")
        if isinstance(raw, str) and "keys" not in t.data:  # a keys_file: one line per key
            keys = tuple(line.strip() for line in raw.splitlines() if line.strip())
        elif isinstance(raw, list) and all(isinstance(k, str) for k in raw):
            keys = tuple(raw)
        else:
            raise ConfigError(key_name, "expected a list of 'kid:base64' strings")
    t.done()
    try:
        if keys:
            crypto.Keyring.from_lines(keys)
    except crypto.KeyLineError as exc:
        raise ConfigError(key_name, str(exc)) from None
    return CryptoConfig(keys=keys)


def _token_map(t: _Table) -> dict[str, str]:
    names = {k.removesuffix("_file") for k in t.data}
    out = {}
    for name in sorted(names):
        value = t.secret(name, None)
        if not isinstance(value, str) or not value:
            raise ConfigError(t.key(name), "expected a non-empty token string")
        out[name] = value
    t.done()
    return out


def _server(t: _Table) -> ServerConfig:
    d = ServerConfig()
    admin_token = t.secret("admin_token", "TOKEND_ADMIN_TOKEN")
    consumer_token = t.secret("consumer_token", "TOKEND_CONSUMER_TOKEN")
    for name, value in (("admin_token", admin_token), ("consumer_token", consumer_token)):
        if not isinstance(value, str):
            raise ConfigError(t.key(name), "expected a string")
        if value and len(value) < 16:
            raise ConfigError(t.key(name), "must be at least 16 characters")
    out = ServerConfig(
        host=t.get("host", str, d.host),
        port=t.integer("port", d.port, minimum=0),
        admin_token=admin_token,
        org_tokens=_token_map(t.table("org_tokens")),
        consumer_token=consumer_token,
        consumer_org_tokens=_token_map(t.table("consumer_org_tokens")),
        allowed_origins=t.strings("allowed_origins", d.allowed_origins),
        stream_backlog=t.integer("stream_backlog", d.stream_backlog, minimum=0),
        stream_queue_size=t.integer("stream_queue_size", d.stream_queue_size),
        terminal_max_entries=t.integer("terminal_max_entries", d.terminal_max_entries),
        drain_seconds=t.number("drain_seconds", d.drain_seconds, minimum_allowed=True),
        public_url=_url(t, "public_url", d.public_url).rstrip("/"),
    )
    if out.port > 65535:
        raise ConfigError(t.key("port"), "must be at most 65535")
    t.done()
    return out


def _url(t: _Table, name: str, default: str) -> str:
    value = t.get(name, str, default)
    if value and not value.startswith(("https://", "http://")):
        raise ConfigError(t.key(name), "must be an http(s) URL")
    return value


def _provider(name: str, t: _Table) -> ProviderConfig:
    kind = t.choice("type", tuple(PROFILES), "ebay")
    ebay = kind == "ebay"
    if not ebay:
        for only_ebay in ("environment", "daily_quota", "key_management_url"):
            if only_ebay in t.data:
                raise ConfigError(t.key(only_ebay), "only means something for type ebay")
    environment = t.choice("environment", ebay_profile.ENVIRONMENTS, "production") \
        if ebay else None
    client_id = t.get("client_id", str, "")
    if not client_id:
        raise ConfigError(t.key("client_id"), "is required")
    client_auth = t.choice("client_auth", CLIENT_AUTHS, "basic")
    if client_auth == "none":
        if ebay:
            raise ConfigError(t.key("client_auth"), "eBay needs basic client authentication")
        if "client_secret" in t.data or "client_secret_file" in t.data:
            raise ConfigError(t.key("client_secret"), "is not sent with client_auth = none")
        t.seen.update(("client_secret", "client_secret_file"))
        client_secret = ""
    else:
        client_secret = t.secret("client_secret", _env_name(name))
        if not isinstance(client_secret, str) or not client_secret:
            raise ConfigError(t.key("client_secret"),
                              f"is required (inline, client_secret_file or {_env_name(name)})")
    default_url = ebay_profile.TOKEN_URLS[environment] if environment else ""
    token_url = t.get("token_url", str, default_url)
    if not token_url:
        raise ConfigError(t.key("token_url"), "is required for type oauth2")
    if not token_url.startswith(("https://", "http://")):
        raise ConfigError(t.key("token_url"), "must be an http(s) URL")
    reauth_codes = t.strings("reauth_error_codes", DEFAULT_REAUTH_ERROR_CODES)
    if not reauth_codes or any(not code.strip() for code in reauth_codes):
        raise ConfigError(t.key("reauth_error_codes"), "expected a non-empty list of codes")
    out = ProviderConfig(
        name=name, type=kind, environment=environment, client_id=client_id,
        client_secret=client_secret,
        scopes=t.strings("scopes", ebay_profile.DEFAULT_SCOPES if ebay else ()),
        token_url=token_url,
        client_auth=client_auth,
        daily_quota=t.get("daily_quota", int, ebay_profile.REFRESH_DAILY_QUOTA if ebay else None),
        reauth_error_codes=tuple(code.strip() for code in reauth_codes),
        default_expires_in_seconds=None if "default_expires_in_seconds" not in t.data
        else t.number("default_expires_in_seconds", 0.0),
        refresh_sends_scope=t.get("refresh_sends_scope", bool, True),
        authorize_url=_url(t, "authorize_url",
                           ebay_profile.AUTHORIZE_URLS[environment] if environment else ""),
        identity_url=_url(t, "identity_url",
                          ebay_profile.IDENTITY_URLS[environment] if environment else ""),
        redirect_uri=t.get("redirect_uri", str, ""),
        key_management_url=_url(t, "key_management_url",
                                ebay_profile.KEY_MANAGEMENT_URLS[environment] if environment
                                else ""),
        budget_reserve=t.number("budget_reserve", 0.8),
        idle_after_seconds=None if "idle_after_seconds" not in t.data
        else t.number("idle_after_seconds", 0.0),
    )
    if out.budget_reserve > 1:
        raise ConfigError(t.key("budget_reserve"), "must be a share between 0 and 1")
    if out.daily_quota is not None and out.daily_quota < 1:
        raise ConfigError(t.key("daily_quota"), "must be at least 1")
    t.done()
    return out


_VERIFICATION_TOKEN = re.compile(
    rf"^[{ebay_profile.VERIFICATION_TOKEN_CHARS}]"
    rf"{{{ebay_profile.VERIFICATION_TOKEN_LENGTHS[0]},{ebay_profile.VERIFICATION_TOKEN_LENGTHS[1]}}}$")


def _ebay_notifications(
    t: _Table, providers: Mapping[str, ProviderConfig],
) -> EbayNotificationsConfig | None:
    if not t.data:
        return None
    token = t.secret("verification_token", "TOKEND_EBAY_VERIFICATION_TOKEN")
    low, high = ebay_profile.VERIFICATION_TOKEN_LENGTHS
    if not isinstance(token, str) or not token:
        raise ConfigError(t.key("verification_token"),
                          "is required (inline, verification_token_file or "
                          "TOKEND_EBAY_VERIFICATION_TOKEN)")
    if not _VERIFICATION_TOKEN.match(token):
        raise ConfigError(t.key("verification_token"),
                          f"must be {low} to {high} letters, digits, '_' or '-' "
                          f"(eBay's rule)")
    endpoint = t.get("endpoint", str, "")
    if not endpoint.startswith(("https://", "http://")):
        raise ConfigError(t.key("endpoint"), "must be the http(s) URL registered with eBay")
    name = t.get("provider", str, "")
    provider = providers.get(name)
    if provider is None:
        raise ConfigError(t.key("provider"), "must name a [providers.NAME] table")
    if provider.type != "ebay":
        raise ConfigError(t.key("provider"), f"provider {name!r} is not of type ebay")
    assert provider.environment is not None
    public_key_url = t.get("public_key_url", str,
                           ebay_profile.PUBLIC_KEY_URLS[provider.environment])
    if not public_key_url.startswith(("https://", "http://")):
        raise ConfigError(t.key("public_key_url"), "must be an http(s) URL")
    t.done()
    return EbayNotificationsConfig(verification_token=token, endpoint=endpoint, provider=name,
                                   public_key_url=public_key_url)


def _webhook_env_name(name: str) -> str:
    return "TOKEND_WEBHOOK_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_SECRET"


def _webhook_secret(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise ConfigError(key, "expected whsec_ followed by base64")
    try:
        raw = base64.b64decode(value.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(key, "expected whsec_ followed by base64") from None
    if len(raw) < 16:
        raise ConfigError(key, "the key must be at least 16 bytes")
    return value


def _webhook(t: _Table) -> WebhookConfig:
    d = WebhookConfig(url="", secret="")
    url = t.get("url", str, "")
    if not url.startswith(("https://", "http://")):
        raise ConfigError(t.key("url"), "is required: an http(s) URL")
    without_scheme = url.split("://", 1)[1]
    name = t.get("name", str, "") or without_scheme.split("?", 1)[0].split("@")[-1]
    if not name or "\x00" in name or len(name) > 200:
        raise ConfigError(t.key("name"), "must be 1-200 characters")
    events = t.strings("events", ())
    unknown = [e for e in events if e not in vocabulary.EVENT_TYPES]
    if unknown:
        raise ConfigError(t.key("events"), f"unknown event type {unknown[0]!r} "
                          f"(one of {', '.join(vocabulary.EVENT_TYPES)})")
    out = WebhookConfig(
        url=url, name=name, events=events,
        secret=_webhook_secret(t.key("secret"),
                               t.secret("secret", _webhook_env_name(name), None)),
        timeout_seconds=t.number("timeout_seconds", d.timeout_seconds),
        max_attempts=t.integer("max_attempts", d.max_attempts),
        backoff_base_seconds=t.number("backoff_base_seconds", d.backoff_base_seconds),
        backoff_max_seconds=t.number("backoff_max_seconds", d.backoff_max_seconds),
        breaker_failures=t.integer("breaker_failures", d.breaker_failures),
        breaker_seconds=t.number("breaker_seconds", d.breaker_seconds))
    t.done()
    return out


def _webhooks(root: _Table) -> tuple[WebhookConfig, ...]:
    items = root.get("webhooks", list, [])
    out = tuple(_webhook(_Table(f"webhooks[{n}]", item, root.base_dir))
                for n, item in enumerate(items))
    names = [w.name for w in out]
    for n, name in enumerate(names):
        if name in names[:n]:
            raise ConfigError(f"webhooks[{n}].name", f"{name!r} is used twice; give each a name")
    return out


def parse(data: Mapping[str, Any], base_dir: Path) -> Config:
    root = _Table("", data, base_dir)
    providers_table = root.table("providers")
    providers = {
        name: _provider(name, providers_table.table(name)) for name in providers_table.data
    }
    config = Config(
        database=_database(root.table("database")),
        refresh=_refresh(root.table("refresh")),
        crypto=_crypto(root.table("crypto")),
        server=_server(root.table("server")),
        providers=providers,
        ebay_notifications=_ebay_notifications(root.table("ebay_notifications"), providers),
        webhooks=_webhooks(root),
    )
    root.done()
    return config


def load(path: str | os.PathLike[str] | None) -> Config:
    """Read `path` (or `$TOKEND_CONFIG`; none at all means defaults plus environment)."""
    data, base_dir = _read(path)
    return parse(data, base_dir)


def load_database(path: str | os.PathLike[str] | None) -> DatabaseConfig:
    """Only the [database] section: a migration job needs nothing else, so a provider's
    missing secret file must not stop it. Other sections are not even validated."""
    data, base_dir = _read(path)
    return _database(_Table("", data, base_dir).table("database"))


def _read(path: str | os.PathLike[str] | None) -> tuple[dict[str, Any], Path]:
    path = path or os.environ.get("TOKEND_CONFIG")
    if not path:
        return {}, Path.cwd()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}") from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"invalid TOML in {path}: {exc}") from None
    return data, Path(path).resolve().parent
