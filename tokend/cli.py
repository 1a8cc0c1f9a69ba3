"""The `tokend` command line: argparse commands, logging setup, `asyncio.run`.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib.metadata
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from tokend import (
    actions,
    clock,
    config,
    crypto,
    daemon,
    logs,
    model,
    refresher,
    rotation,
    store,
    vocabulary,
)
from tokend.ebay import signatures, signing

HISTORY_ENTRIES = 200


class UsageError(Exception):
    """Bad input on the command line or stdin: exit 2 with this line."""


class RuntimeFailure(Exception):
    """Something outside the command line failed: exit 1 with this line."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except config.ConfigError as exc:
        print(f"tokend: config: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"tokend: {exc}", file=sys.stderr)
        return 2
    except refresher.NotFound as exc:
        print(f"tokend: no account {str(exc)!r}", file=sys.stderr)
        return 1
    except (daemon.StartupError, store.StoreError, refresher.Busy, RuntimeFailure) as exc:
        print(f"tokend: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    def options(**defaults: Any) -> argparse.ArgumentParser:
        common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
        common.add_argument("--config", metavar="PATH",
                            help="TOML configuration (default: $TOKEND_CONFIG)")
        common.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                            help="least severe log level shown (default: info)")
        common.set_defaults(**defaults)
        return common

    # Only the main parser has defaults: argparse copies a subparser's defaults over
    # what the main parser read, which would lose the X of `tokend --config X run`.
    after = options()
    parser = argparse.ArgumentParser(prog="tokend", parents=[options(config=None,
                                                                     log_level="info")],
                                     description="Keeps OAuth access tokens fresh.")
    parser.add_argument("--version", action="version", version=f"tokend {_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Any, help_text: str,
                into: Any = sub) -> argparse.ArgumentParser:
        p = into.add_parser(name, parents=[after], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    command("run", cmd_run, "run the daemon").add_argument(
        "--watch-secrets", type=float, default=None, metavar="SECONDS",
        help="besides SIGHUP, re-read the secrets when they change, looking every SECONDS "
             "(Kubernetes Secrets mounted as files)")
    command("migrate", cmd_migrate,
            "apply the database migrations (needs only the [database] section)")
    command("keygen", cmd_keygen, "print a new key line for [crypto].keys").add_argument(
        "--kid", help="key id (default: random)")
    command("rotate-keys", cmd_rotate_keys,
            "re-encrypt every stored secret under the primary key").add_argument(
        "--batch-size", type=int, default=500, metavar="N",
        help="accounts re-encrypted per transaction (default: 500)")

    accounts = command("accounts", None, "manage accounts")
    acc = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    add = command("add", cmd_accounts_add, "store an account; refresh token on stdin", acc)
    add.add_argument("--provider", required=True, help="a [providers.NAME] of the configuration")
    add.add_argument("--org", required=True, help="the organisation the account belongs to")
    add.add_argument("--name", required=True, help="a name unique per provider and org")
    add.add_argument("--id", dest="account_id", help="the account id (default: random)")
    add.add_argument("--scopes", nargs="+", default=[], metavar="SCOPE",
                     help="the scopes the seller consented to (default: the provider's)")
    add.add_argument("--refresh-token-expires-in", type=float, metavar="SECONDS",
                     help="how long the refresh token lives, when known: the "
                          "refresh_token_expires_in of the provider's answer, counted from "
                          "--consented-at (default: now)")
    add.add_argument("--refresh-token-expires-at", metavar="TIME",
                     help="when the refresh token expires (ISO 8601, UTC unless it says)")
    add.add_argument("--consented-at", metavar="TIME",
                     help="when the seller consented (ISO 8601): eBay's refresh tokens live "
                          "18 months from then")
    command("list", cmd_accounts_list, "list accounts (never a token)", acc).add_argument(
        "--json", action="store_true", help="JSON instead of a table")
    link = command("connect-link", cmd_accounts_connect_link,
                   "print a one-time link that connects (or reconnects) an account", acc)
    link.add_argument("--provider", required=True, help="a configured provider's name")
    link.add_argument("--org", required=True, help="the org the account belongs to")
    link.add_argument("--account", dest="account_id", help="reconnect this account")
    link.add_argument("--scopes", nargs="+", default=[],
                      help="scopes to ask for (default: the provider's)")
    reauth = command("reauth", cmd_accounts_reauth,
                     "new refresh token from stdin for an account", acc)
    reauth.add_argument("account_id", help="the account's id")
    reauth.add_argument("--refresh-token-expires-in", type=float, metavar="SECONDS",
                        help="the new refresh token's lifetime, when known")

    command("disable", cmd_accounts_disable, "stop refreshing an account", acc).add_argument(
        "account_id", help="the account's id")
    command("enable", cmd_accounts_enable, "resume refreshing a disabled account",
            acc).add_argument("account_id", help="the account's id")
    command("clear-backoff", cmd_accounts_clear_backoff,
            "make a failing account due now, without its backoff", acc).add_argument(
        "account_id", help="the account's id")

    providers_cmd = command("providers", None, "act on configured providers")
    prov = providers_cmd.add_subparsers(dest="providers_command", required=True,
                                        metavar="ACTION")
    command("resume", cmd_providers_resume, "lift a provider's pause (the daily budget's or "
            "a credentials failure's)", prov).add_argument("provider", help="its name")

    ebay_cmd = command("ebay", None, "eBay-specific tools")
    ebay_sub = ebay_cmd.add_subparsers(dest="ebay_command", required=True, metavar="TOOL")
    keys_cmd = command("signing-key", None, "signing keys for eBay's digital signatures",
                       ebay_sub)
    keys = keys_cmd.add_subparsers(dest="signing_key_command", required=True,
                                   metavar="ACTION")
    create = command("create", cmd_signing_key_create, "create a signing key with eBay's "
                     "Key Management API and keep it sealed; prints its id", keys)
    create.add_argument("--provider", required=True, help="an eBay provider's name")
    create.add_argument("--cipher", choices=signatures.CIPHERS, default=signatures.ED25519,
                        help="ED25519 (eBay's advice, the default) or RSA")
    imp = command("import", cmd_signing_key_import, "keep a signing key made elsewhere; the "
                  "private key (PEM or eBay's bare base64) on stdin", keys)
    imp.add_argument("--provider", required=True, help="an eBay provider's name")
    imp.add_argument("--signing-key-id", required=True, help="eBay's signingKeyId")
    imp.add_argument("--jwe-file", required=True, type=Path, metavar="F",
                     help="a file holding the key's JWE (the public key eBay answered)")
    listing = command("list", cmd_signing_key_list, "signing keys (never a private key)", keys)
    listing.add_argument("--provider", help="only this provider's keys")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")

    refresh = command("refresh", cmd_refresh, "refresh one account now")
    refresh.add_argument("account_id", help="the account's id")
    refresh.add_argument("--debug", action="store_true",
                         help="log as source debug and print the whole exchange, masked")
    command("status", cmd_status, "loop status from the database").add_argument(
        "--json", action="store_true", help="JSON instead of text")

    logs_cmd = command("logs", cmd_logs, "the terminal in a shell (history from the database "
                       "when the daemon is not running)")
    logs_cmd.add_argument("--follow", "-f", action="store_true",
                          help="keep printing new entries as they happen")
    logs_cmd.add_argument("--source", action="append", metavar="SOURCE[,SOURCE]",
                          help=f"only these sources ({', '.join(_sources())}); repeatable")
    logs_cmd.add_argument("--account", dest="account_id", metavar="ID",
                          help="only this account's entries")
    logs_cmd.add_argument("--json", action="store_true", help="JSON lines")
    logs_cmd.add_argument("--url", help="daemon URL (default: from [server])")

    demo = command("demo", cmd_demo, "run the whole daemon against a built-in simulator")
    demo.add_argument("--port", type=int, default=8765,
                      help="port of the demo's web server (default: 8765)")
    demo.add_argument("--seconds", type=float, help="stop by itself after this long")
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("tokend")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _sources() -> tuple[str, ...]:
    return vocabulary.SOURCES


def _load(args: argparse.Namespace) -> config.Config:
    logs.setup(level=args.log_level, stream=sys.stderr if args.command != "run" else None)
    return config.load(args.config)


def require_database(database: config.DatabaseConfig) -> None:
    """Commands that only read or change rows must not create an empty SQLite file (the
    default path is /var/lib/tokend) as a side effect; `tokend migrate` creates it."""
    if database.url.startswith("sqlite://"):
        path = database.url.removeprefix("sqlite://")
        if path != ":memory:" and not Path(path).exists():
            raise RuntimeFailure(f"no database at {path} (run `tokend migrate`, or give "
                                 "--config / TOKEND_CONFIG)")


def _open(cfg: config.Config) -> contextlib.AbstractAsyncContextManager[store.Store]:
    require_database(cfg.database)
    return store.open(cfg.database.url, **cfg.database.store_options())


def _emit(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


# -- commands -------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if not cfg.server.admin_token:
        raise config.ConfigError(
            "server.admin_token", "is required (inline, admin_token_file or TOKEND_ADMIN_TOKEN)")
    cfg.crypto.keyring()
    clean = asyncio.run(daemon.run(cfg, load=lambda: config.load(args.config),
                                   watch_seconds=args.watch_secrets, hard_exit=True))
    return 0 if clean else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    logs.setup(level=args.log_level, stream=sys.stderr)
    database = config.load_database(args.config)

    async def go() -> list[str]:
        async with store.open(database.url, **database.store_options(),
                              check_schema=False) as db:
            return await db.migrate()

    applied = asyncio.run(go())
    print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {n}" for n in applied))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        print(crypto.generate_key_line(args.kid))
    except crypto.KeyLineError as exc:
        raise UsageError(f"--kid: {exc}") from None
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    cfg = _load(args)
    keyring = cfg.crypto.keyring()

    async def go() -> rotation.RotationCounts:
        async with _open(cfg) as db:
            return await rotation.rotate(db, keyring, batch_size=args.batch_size)

    counts = asyncio.run(go())
    print(f"rotated {counts.rotated}, failed to decrypt {counts.failed}, "
          f"changed meanwhile {counts.conflicts} (run again), primary key {keyring.primary_kid}")
    return 1 if counts.failed or counts.conflicts else 0


def _read_refresh_token(cfg: config.Config, provider: str) -> str:
    if provider not in cfg.providers:
        known = ", ".join(sorted(cfg.providers)) or "none is configured"
        raise UsageError(f"--provider: no provider {provider!r} in the configuration "
                         f"(providers: {known})")
    if sys.stdin.isatty():
        token = getpass.getpass("refresh token (not echoed): ")
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise UsageError("stdin: expected a refresh token, got nothing")
    if token.startswith(crypto.PREFIX[:4]):
        raise UsageError("stdin: that is an encrypted value; give the plain refresh token")
    profile = cfg.providers[provider].profile
    if not profile.looks_like_token(token):
        raise UsageError(f"stdin: an {profile.label} refresh token starts with "
                         f"{profile.token_prefix!r}")
    return token


def cmd_accounts_add(args: argparse.Namespace) -> int:
    cfg = _load(args)
    keyring = cfg.crypto.keyring()
    token = _read_refresh_token(cfg, args.provider)
    account_id = args.account_id or "acct_" + secrets.token_hex(8)
    if args.refresh_token_expires_in is not None and args.refresh_token_expires_in <= 0:
        raise UsageError("--refresh-token-expires-in: must be positive")
    expires = _added_expiry(args, cfg.providers[args.provider].profile, clock.now())

    async def go() -> model.Account:
        async with _open(cfg) as db:
            now = clock.now()
            return await db.add_account(model.NewAccount(
                id=account_id, org=args.org, provider=args.provider, name=args.name,
                scopes=tuple(args.scopes),
                refresh_token=keyring.encrypt(token, account_id=account_id,
                                              column="refresh_token"),
                refresh_expires_at=expires), now)

    try:
        account = asyncio.run(go())
    except store.DuplicateAccount:
        raise UsageError(asyncio.run(_duplicate(cfg, args, account_id))) from None
    print(account.id)
    return 0


async def _duplicate(cfg: config.Config, args: argparse.Namespace, account_id: str) -> str:
    """Which existing account the new one collides with, by the id it really has."""
    async with _open(cfg) as db:
        accounts = await db.list_accounts()
    for other in accounts:
        if (other.provider, other.org, other.name) == (args.provider, args.org, args.name):
            return (f"--name: account {other.id} already has provider/org/name "
                    f"{other.provider}/{other.org}/{other.name}")
    return f"--id: an account with id {account_id!r} already exists"


def _time_flag(flag: str, value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: {value!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _added_expiry(args: argparse.Namespace, profile: config.Profile,
                  now: datetime) -> datetime | None:
    """The refresh token's expiry as the operator knows it: an absolute time, a lifetime
    from the provider's answer counted from consent (or now), or for eBay 18 months from
    consent. Nothing given: unknown (None), never a guess."""
    if args.refresh_token_expires_at is not None:
        if args.consented_at is not None or args.refresh_token_expires_in is not None:
            raise UsageError("--refresh-token-expires-at: give it alone, without "
                             "--consented-at or --refresh-token-expires-in")
        expires = _time_flag("--refresh-token-expires-at", args.refresh_token_expires_at)
    elif args.consented_at is not None:
        consented = _time_flag("--consented-at", args.consented_at)
        if consented > now:
            raise UsageError("--consented-at: is in the future")
        lifetime = args.refresh_token_expires_in
        if lifetime is None:
            lifetime = profile.refresh_token_lifetime_seconds
        if lifetime is None:
            raise UsageError("--consented-at: this provider's refresh token lifetime is "
                             "unknown; add --refresh-token-expires-in")
        expires = consented + timedelta(seconds=lifetime)
    else:
        return _expires_at(now, args.refresh_token_expires_in)
    if expires <= now:
        raise UsageError("--refresh-token-expires-at: that refresh token has expired"
                         if args.refresh_token_expires_at is not None
                         else "--consented-at: that refresh token has expired")
    return expires


def _expires_at(now: datetime, seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    if seconds <= 0:
        raise UsageError("--refresh-token-expires-in: must be positive")
    return now + timedelta(seconds=seconds)


def cmd_accounts_list(args: argparse.Namespace) -> int:
    cfg = _load(args)

    async def go() -> list[model.Account]:
        async with _open(cfg) as db:
            return await db.list_accounts()

    accounts = asyncio.run(go())
    if args.json:
        _emit([a.public() for a in accounts])
        return 0
    columns = ("id", "org", "provider", "name", "state", "access_expires_at",
               "last_refresh_at", "refresh_expires_at", "consecutive_failures")
    rows = [[_cell(a.public()[c]) for c in columns] for a in accounts]
    _table(columns, rows)
    return 0


def cmd_accounts_reauth(args: argparse.Namespace) -> int:
    cfg = _load(args)
    keyring = cfg.crypto.keyring()

    async def go() -> model.Account | None:
        async with _open(cfg) as db:
            account = await db.get_account(args.account_id)
            if account is None:
                raise refresher.NotFound(args.account_id)
            token = _read_refresh_token(cfg, account.provider)
            now = clock.now()
            return await db.reauth_account(
                account.id, keyring.encrypt(token, account_id=account.id, column="refresh_token"),
                _expires_at(now, args.refresh_token_expires_in), now)

    account = asyncio.run(go())
    print(f"{account.id} is {account.state}" if account else "account vanished")
    return 0


def cmd_accounts_connect_link(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from tokend import connect

    async def go() -> connect.Link:
        async with _open(cfg) as db:
            service = connect.Service(db=db, keyring=cfg.crypto.keyring(), cfg=cfg, clients={},
                                      session=None, hub=None)  # a link needs neither
            return await service.create_link(provider=args.provider, org=args.org,
                                             account_id=args.account_id, scopes=args.scopes)

    try:
        link = asyncio.run(go())
    except connect.LinkError as exc:
        raise UsageError(exc.message) from None
    print(link.url)
    print(f"expires at {link.expires_at.isoformat()} (works once)", file=sys.stderr)
    return 0


def _act(args: argparse.Namespace, action: Callable[[store.Store, str, datetime],
                                                  Awaitable[model.Account]]) -> int:
    """One of the console's account actions (tokend/actions.py), on the configured store."""
    cfg = _load(args)

    async def go() -> model.Account:
        async with _open(cfg) as db:
            return await action(db, args.account_id, clock.now())

    try:
        after = asyncio.run(go())
    except actions.Refused as exc:
        print(f"tokend: {args.account_id} is {exc.state}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{after.id} is {after.state}")
    return 0


def cmd_accounts_disable(args: argparse.Namespace) -> int:
    return _act(args, actions.disable)


def cmd_accounts_enable(args: argparse.Namespace) -> int:
    return _act(args, actions.enable)


def cmd_accounts_clear_backoff(args: argparse.Namespace) -> int:
    return _act(args, actions.clear_backoff)


def cmd_providers_resume(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.provider not in cfg.providers:
        raise UsageError(f"no provider {args.provider!r} in the configuration "
                         f"(providers: {', '.join(sorted(cfg.providers)) or 'none'})")

    async def go() -> bool:
        async with _open(cfg) as db:
            return await actions.resume(db, args.provider, clock.now())

    resumed = asyncio.run(go())
    print(f"{args.provider}: " + ("resumed" if resumed else "was not paused"))
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    cfg = _load(args)
    require_database(cfg.database)
    from tokend import manual  # the CLI's one-shot refresher, built like the daemon's

    outcome = asyncio.run(manual.refresh_once(
        cfg, args.account_id, source=vocabulary.DEBUG if args.debug else vocabulary.MANUAL))
    manual.print_outcome(outcome, sys.stdout)
    return 0 if outcome.success else 1


def _ebay_provider(cfg: config.Config, name: str) -> None:
    if cfg.providers.get(name) is None or not cfg.providers[name].profile.signing_keys:
        known = ", ".join(sorted(n for n, p in cfg.providers.items() if p.profile.signing_keys))
        raise UsageError(f"--provider: no eBay provider {name!r} in the configuration "
                         f"(eBay providers: {known or 'none is configured'})")


def cmd_signing_key_create(args: argparse.Namespace) -> int:
    cfg = _load(args)
    _ebay_provider(cfg, args.provider)
    require_database(cfg.database)

    async def go() -> model.SigningKey:
        async with daemon.assemble(cfg) as parts:
            return await parts.signer.create(args.provider, args.cipher)

    try:
        key = asyncio.run(go())
    except signing.Unavailable as exc:
        raise RuntimeFailure(f"createSigningKey: {exc}") from None
    print(key.id)
    return 0


def cmd_signing_key_import(args: argparse.Namespace) -> int:
    cfg = _load(args)
    _ebay_provider(cfg, args.provider)
    require_database(cfg.database)
    try:
        jwe = args.jwe_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--jwe-file: cannot read {args.jwe_file}: "
                         f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    if sys.stdin.isatty():
        raise UsageError("stdin: give the private key on standard input (< key.pem)")
    private = sys.stdin.read()

    async def go() -> model.SigningKey:
        async with daemon.assemble(cfg) as parts:
            return await parts.signer.import_key(args.provider, args.signing_key_id, jwe,
                                                 private)

    try:
        key = asyncio.run(go())
    except signing.ImportRefused as exc:
        raise UsageError(str(exc)) from None
    print(key.id)
    return 0


def cmd_signing_key_list(args: argparse.Namespace) -> int:
    cfg = _load(args)
    require_database(cfg.database)

    async def go() -> list[dict[str, Any]]:
        async with daemon.assemble(cfg) as parts:
            return await parts.signer.listing(args.provider)

    keys = asyncio.run(go())
    if args.json:
        _emit(keys)
        return 0
    columns = ("signing_key_id", "provider", "cipher", "created_at", "expires_at", "in_use")
    _table(columns, [[_cell(k[c]) for c in columns] for k in keys])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load(args)
    require_database(cfg.database)
    from tokend import status

    report = asyncio.run(status.collect(cfg))
    if args.json:
        _emit(report)
    else:
        status.print_report(report, sys.stdout)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from tokend import logclient

    sources = None
    if args.source:
        sources = [s.strip() for item in args.source for s in item.split(",") if s.strip()]
        unknown = [s for s in sources if s not in _sources()]
        if unknown or not sources:
            raise UsageError(f"--source: unknown source {(unknown or [''])[0]!r} "
                             f"(one of {', '.join(_sources())})")
    url = args.url or f"http://{cfg.server.host}:{cfg.server.port}"
    if not cfg.server.admin_token:
        raise config.ConfigError("server.admin_token", "is required to read the log stream")
    try:
        asyncio.run(logclient.follow(
            url, cfg.server.admin_token, sources=sources, account_id=args.account_id,
            follow=args.follow, json_lines=args.json, out=sys.stdout))
    except logclient.Unreachable as exc:
        # No daemon: the history is in the database all the same.
        try:
            entries = asyncio.run(_history(cfg, sources, args.account_id))
        except (store.StoreError, RuntimeFailure) as db_exc:
            raise RuntimeFailure(f"{exc}, and {db_exc}") from None
        if not args.follow:
            print(f"tokend: {exc}; the history below is from the database", file=sys.stderr)
        color = not args.json and sys.stdout.isatty()
        for entry in entries:
            data = entry.to_dict()
            sys.stdout.write(orjson.dumps(data).decode() + "\n" if args.json
                             else logclient.render(data, color=color) + "\n")
        if args.follow:
            raise RuntimeFailure(f"{exc}; the history above is from the database, and "
                                 "following needs a running daemon") from None
    except logclient.LogsError as exc:
        raise RuntimeFailure(str(exc)) from None
    return 0


async def _history(cfg: config.Config, sources: list[str] | None,
                   account_id: str | None) -> list[model.Entry]:
    async with _open(cfg) as db:
        entries = await db.list_entries(source=sources, account_id=account_id,
                                        limit=HISTORY_ENTRIES)
    return sorted(entries, key=lambda e: e.id or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    logs.setup(level=args.log_level, stream=sys.stderr)
    from tokend import demo

    asyncio.run(demo.run(port=args.port, seconds=args.seconds))
    return 0


# -- output helpers -------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text[:19].replace("T", " ") if len(text) >= 19 and text[10:11] == "T" else text


def _table(columns: Sequence[str], rows: list[list[str]]) -> None:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for row in (list(columns), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
