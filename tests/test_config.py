"""config.load: the documented example, defaults, one-line errors naming the key, secrets."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tokend import config, crypto
from tokend.ebay import profile as ebay_profile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"

PROVIDER = """
[providers.p]
client_id = "app-id"
client_secret = "inline-client-secret"
"""

SECRET_KEYS = {"url", "listen_url", "keys", "admin_token", "consumer_token", "client_secret"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TOKEND_* or CREDENTIALS_DIRECTORY from the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith("TOKEND_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def load_text(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "tokend.toml"
    path.write_text(text)
    return config.load(path)


def expect_error(tmp_path: Path, text: str, key: str) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as info:
        load_text(tmp_path, text)
    assert_names(info.value, key)
    return info.value


def assert_names(exc: config.ConfigError, key: str) -> None:
    message = str(exc)
    assert "\n" not in message
    assert exc.key == key
    assert message.startswith(f"{key}: ")
    assert len(message) > len(key) + 2


# -- the example file ---------------------------------------------------------------------


def documented_keys(text: str) -> dict[str, set[str]]:
    """Keys per table in the example, counting commented-out `# key = value` lines too."""
    header = re.compile(r"^#?\s*\[\[?([A-Za-z0-9_.-]+)\]\]?")
    assignment = re.compile(r"^#?\s*([A-Za-z0-9_-]+)\s*=")
    tables: dict[str, set[str]] = {"": set()}
    current = ""
    for line in text.splitlines():
        if m := header.match(line):
            current = m.group(1)
            tables.setdefault(current, set())
            parent, _, name = current.rpartition(".")
            tables.setdefault(parent, set()).add(name)  # [server.org_tokens] documents org_tokens
        elif m := assignment.match(line):
            tables[current].add(m.group(1))
    return tables


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_example_loads_and_matches_the_defaults() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.database == config.DatabaseConfig()
    assert cfg.refresh == config.RefreshConfig()
    assert cfg.crypto == config.CryptoConfig()
    assert cfg.server == config.ServerConfig()
    provider = cfg.providers["ebay-production"]
    assert provider.token_url == ebay_profile.TOKEN_URLS["production"]
    assert provider.daily_quota == ebay_profile.REFRESH_DAILY_QUOTA


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    docs = documented_keys(text)
    sections = {"database": config.DatabaseConfig, "refresh": config.RefreshConfig,
                "crypto": config.CryptoConfig, "server": config.ServerConfig}
    assert set(data) <= set(sections) | {"providers", "webhooks"}
    for name, cls in sections.items():
        missing = field_names(cls) - docs[name]
        assert not missing, f"[{name}] keys missing from config.example.toml: {missing}"
        # Every documented key is one the loader knows (or a secret's `_file` form).
        known = field_names(cls) | {f"{k}_file" for k in field_names(cls) & SECRET_KEYS}
        assert docs[name] <= known, f"[{name}] documents unknown keys: {docs[name] - known}"
    notifications = field_names(config.EbayNotificationsConfig)
    assert docs["ebay_notifications"] == notifications | {"verification_token_file"}
    provider_docs = set().union(*(keys for table, keys in docs.items()
                                  if table.startswith("providers.")))
    missing = field_names(config.ProviderConfig) - {"name"} - provider_docs
    assert not missing, f"provider keys missing from config.example.toml: {missing}"
    assert provider_docs <= field_names(config.ProviderConfig) | {"client_secret_file"}
    missing = field_names(config.WebhookConfig) - docs["webhooks"]
    assert not missing, f"[[webhooks]] keys missing from config.example.toml: {missing}"
    assert docs["webhooks"] <= field_names(config.WebhookConfig) | {"secret_file"}


def test_example_values_in_real_toml_match_the_dataclass_defaults() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    for name, cls in (("database", config.DatabaseConfig), ("refresh", config.RefreshConfig),
                      ("server", config.ServerConfig)):
        defaults = cls()
        for key, value in data[name].items():
            if isinstance(value, dict):
                continue
            expected = getattr(defaults, key)
            assert value == (list(expected) if isinstance(expected, tuple) else expected), key


# -- defaults -----------------------------------------------------------------------------


def test_no_file_means_defaults() -> None:
    assert config.load(None) == config.Config()


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == config.Config()


def test_tokend_config_variable_names_the_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "from-env.toml"
    path.write_text("[refresh]\ninterval_seconds = 42\n")
    monkeypatch.setenv("TOKEND_CONFIG", str(path))
    assert config.load(None).refresh.interval_seconds == 42.0


def test_default_values() -> None:
    r = config.RefreshConfig()
    assert (r.interval_seconds, r.expiry_threshold_seconds, r.max_age_seconds) == (600, 900, 3600)
    assert (r.concurrency, r.request_timeout_seconds, r.lease_seconds) == (16, 15, 120)
    assert config.DatabaseConfig().url.startswith("sqlite://")
    s = config.ServerConfig()
    assert (s.host, s.port, s.stream_backlog, s.stream_queue_size) == ("127.0.0.1", 8765,
                                                                      200, 1000)


def test_integers_are_accepted_for_durations(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[refresh]\ninterval_seconds = 5\nlease_seconds = 0.5\n")
    assert cfg.refresh.interval_seconds == 5.0
    assert isinstance(cfg.refresh.interval_seconds, float)
    assert cfg.refresh.lease_seconds == 0.5


def test_ebay_provider_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, PROVIDER + '[providers.sb]\nenvironment = "sandbox"\n'
                    'client_id = "x"\nclient_secret = "y"\n')
    p, sb = cfg.providers["p"], cfg.providers["sb"]
    assert (p.name, p.type, p.environment, p.client_auth) == ("p", "ebay", "production", "basic")
    assert p.token_url == "https://api.ebay.com/identity/v1/oauth2/token"
    assert sb.token_url == "https://api.sandbox.ebay.com/identity/v1/oauth2/token"
    assert p.scopes == ebay_profile.DEFAULT_SCOPES
    assert p.daily_quota == ebay_profile.REFRESH_DAILY_QUOTA
    assert p.client_id == "app-id"
    assert p.client_secret == "inline-client-secret"


def test_oauth2_provider(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, """
[providers.acme]
type = "oauth2"
token_url = "https://auth.example.com/oauth/token"
client_auth = "body"
client_id = "a"
client_secret = "b"
scopes = ["read", "write"]
""")
    acme = cfg.providers["acme"]
    assert acme.type == "oauth2"
    assert acme.token_url == "https://auth.example.com/oauth/token"
    assert acme.client_auth == "body"
    assert acme.scopes == ("read", "write")
    assert acme.daily_quota is None


def test_token_url_override(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, PROVIDER + 'token_url = "http://127.0.0.1:9000/token"\n')
    assert cfg.providers["p"].token_url == "http://127.0.0.1:9000/token"


def test_config_is_frozen() -> None:
    cfg = config.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.refresh.interval_seconds = 1.0  # type: ignore[misc]


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "key"), [
    ("bogus = 1\n", "bogus"),
    ("[bogus]\nx = 1\n", "bogus"),
    ("[database]\nbogus = 1\n", "database.bogus"),
    ("[refresh]\nbogus = 1\n", "refresh.bogus"),
    ("[refresh]\ninterval = 1\n", "refresh.interval"),
    ("[crypto]\nbogus = 1\n", "crypto.bogus"),
    ("[server]\nbogus = 1\n", "server.bogus"),
    ("[server]\norg_tokens_file = 'x'\n", "server.org_tokens_file"),
    (PROVIDER + "bogus = 1\n", "providers.p.bogus"),
    (PROVIDER + "client_id_file = 'x'\n", "providers.p.client_id_file"),
])
def test_unknown_keys(tmp_path: Path, text: str, key: str) -> None:
    exc = expect_error(tmp_path, text, key)
    assert "unknown key" in str(exc)


def test_org_tokens_are_free_form(tmp_path: Path) -> None:
    (tmp_path / "beta-token").write_text("beta-org-token-value\n")
    cfg = load_text(tmp_path, """
[server.org_tokens]
acme = "acme-org-token-value"
any-name_at_all = "another-org-token"
beta_file = "beta-token"
[server.consumer_org_tokens]
acme = "acme-consumer-token"
""")
    assert dict(cfg.server.org_tokens) == {
        "acme": "acme-org-token-value", "any-name_at_all": "another-org-token",
        "beta": "beta-org-token-value"}
    assert dict(cfg.server.consumer_org_tokens) == {"acme": "acme-consumer-token"}


@pytest.mark.parametrize(("text", "key"), [
    ("[server.org_tokens]\nacme = 5\n", "server.org_tokens.acme"),
    ("[server.org_tokens]\nacme = ''\n", "server.org_tokens.acme"),
    ("[server.org_tokens]\nacme = 'a'\nacme_file = 'x'\n", "server.org_tokens.acme"),
    ("[server]\norg_tokens = 'x'\n", "server.org_tokens"),
])
def test_org_token_errors(tmp_path: Path, text: str, key: str) -> None:
    expect_error(tmp_path, text, key)


@pytest.mark.parametrize(("text", "key"), [
    ("[refresh]\ninterval_seconds = '600'\n", "refresh.interval_seconds"),
    ("[refresh]\ninterval_seconds = true\n", "refresh.interval_seconds"),
    ("[refresh]\ninterval_seconds = [1]\n", "refresh.interval_seconds"),
    ("[refresh]\nconcurrency = 1.5\n", "refresh.concurrency"),
    ("[refresh]\nconcurrency = 16.0\n", "refresh.concurrency"),
    ("[refresh]\nconcurrency = true\n", "refresh.concurrency"),
    ("[refresh]\nconcurrency = '16'\n", "refresh.concurrency"),
    ("[database]\npool_max_size = false\n", "database.pool_max_size"),
    ("[database]\nurl = 5\n", "database.url"),
    ("[database]\npgbouncer = 'yes'\n", "database.pgbouncer"),
    ("[database]\nurl = 'postgresql://u@h/db'\nlisten_url = 5\n", "database.listen_url"),
    ("[database]\nurl = 'postgresql://u@h/db'\nlisten_url = 'mysql://x'\n",
     "database.listen_url"),
    ("[database]\nlisten_url = 'postgresql://u@h/db'\n", "database.listen_url"),
    ("[server]\nport = '8765'\n", "server.port"),
    ("[server]\nport = 8765.0\n", "server.port"),
    ("[server]\nhost = 127\n", "server.host"),
    ("[server]\nallowed_origins = 'https://x'\n", "server.allowed_origins"),
    ("[server]\nallowed_origins = ['https://x', 1]\n", "server.allowed_origins"),
    ("[server]\nadmin_token = 12345678901234567\n", "server.admin_token"),
    ("[crypto]\nkeys = [1]\n", "crypto.keys"),
    ("[crypto]\nkeys = 'k1:abc'\n", "crypto.keys"),
    ("[crypto]\nkeys_file = 5\n", "crypto.keys_file"),
    (PROVIDER + "scopes = [1, 2]\n", "providers.p.scopes"),
    (PROVIDER + "scopes = 'a b'\n", "providers.p.scopes"),
    (PROVIDER + "daily_quota = 1.5\n", "providers.p.daily_quota"),
    (PROVIDER + "daily_quota = true\n", "providers.p.daily_quota"),
    (PROVIDER + "token_url = 5\n", "providers.p.token_url"),
    ("[providers.p]\nclient_id = 7\nclient_secret = 'x'\n", "providers.p.client_id"),
    ("[providers.p]\nclient_id = 'x'\nclient_secret = 7\n", "providers.p.client_secret"),
    ("[providers.p]\nclient_id = 'x'\nclient_secret = 'y'\ntype = 1\n", "providers.p.type"),
    ("database = 'sqlite:///x'\n", "database"),
    ("providers = 1\n", "providers"),
    ("[providers]\np = 'x'\n", "providers.p"),
])
def test_wrong_types(tmp_path: Path, text: str, key: str) -> None:
    expect_error(tmp_path, text, key)


REFRESH_FLOATS = [f.name for f in dataclasses.fields(config.RefreshConfig)
                  if f.name.endswith("_seconds")]


@pytest.mark.parametrize("name", REFRESH_FLOATS)
@pytest.mark.parametrize("value", ["0", "-1", "0.0", "-0.5", "inf", "nan", "-inf"])
def test_durations_must_be_positive_and_finite(tmp_path: Path, name: str, value: str) -> None:
    expect_error(tmp_path, f"[refresh]\n{name} = {value}\n", f"refresh.{name}")


@pytest.mark.parametrize(("text", "key"), [
    ("[refresh]\nconcurrency = 0\n", "refresh.concurrency"),
    ("[refresh]\nconcurrency = -3\n", "refresh.concurrency"),
    ("[database]\npool_max_size = 0\n", "database.pool_max_size"),
    ("[server]\nport = 65536\n", "server.port"),
    ("[server]\nport = -1\n", "server.port"),
    ("[server]\nstream_queue_size = 0\n", "server.stream_queue_size"),
    ("[server]\nstream_backlog = -1\n", "server.stream_backlog"),
    ("[server]\nterminal_max_entries = 0\n", "server.terminal_max_entries"),
    ("[server]\nadmin_token = 'short'\n", "server.admin_token"),
    ("[server]\nconsumer_token = 'short'\n", "server.consumer_token"),
    (PROVIDER + "daily_quota = 0\n", "providers.p.daily_quota"),
    (PROVIDER + "daily_quota = -5\n", "providers.p.daily_quota"),
])
def test_out_of_range(tmp_path: Path, text: str, key: str) -> None:
    expect_error(tmp_path, text, key)


def test_port_bounds_are_inclusive(tmp_path: Path) -> None:
    assert load_text(tmp_path, "[server]\nport = 65535\n").server.port == 65535
    assert load_text(tmp_path, "[server]\nport = 0\n").server.port == 0


@pytest.mark.parametrize(("text", "key"), [
    ("[providers.p]\nclient_secret = 'x'\n", "providers.p.client_id"),
    ("[providers.p]\nclient_id = ''\nclient_secret = 'x'\n", "providers.p.client_id"),
    ("[providers.p]\nclient_id = 'x'\n", "providers.p.client_secret"),
    ("[providers.p]\nclient_id = 'x'\nclient_secret = ''\n", "providers.p.client_secret"),
    ("[providers.p]\ntype = 'oauth2'\nclient_id = 'x'\nclient_secret = 'y'\n",
     "providers.p.token_url"),
    (PROVIDER + "token_url = 'ftp://auth.example.com/token'\n", "providers.p.token_url"),
    (PROVIDER + "token_url = 'auth.example.com/token'\n", "providers.p.token_url"),
    (PROVIDER + "type = 'saml'\n", "providers.p.type"),
    (PROVIDER + "environment = 'staging'\n", "providers.p.environment"),
    (PROVIDER + "client_auth = 'digest'\n", "providers.p.client_auth"),
    ("[database]\nurl = 'mysql://localhost/x'\n", "database.url"),
    ("[database]\nurl = '/var/lib/tokend.db'\n", "database.url"),
    ("[database]\nurl = 'sqlite://'\n", "database.url"),
    ("[database]\nurl = 5\n", "database.url"),
    ("[database]\nurl_file = 'absent'\n", "database.url_file"),
    ("[server]\ndrain_seconds = -1\n", "server.drain_seconds"),
    ("[server]\ndrain_seconds = 'soon'\n", "server.drain_seconds"),
])
def test_missing_or_invalid_values(tmp_path: Path, text: str, key: str) -> None:
    expect_error(tmp_path, text, key)


def test_client_secret_error_names_its_sources(tmp_path: Path) -> None:
    exc = expect_error(tmp_path, "[providers.ebay-sandbox]\nclient_id = 'x'\n",
                       "providers.ebay-sandbox.client_secret")
    assert "TOKEND_PROVIDER_EBAY_SANDBOX_CLIENT_SECRET" in str(exc)


@pytest.mark.parametrize("url", ["sqlite:///tmp/x.db", "postgresql://u@h:5432/db",
                                 "postgres://u@h/db"])
def test_database_urls(tmp_path: Path, url: str) -> None:
    assert load_text(tmp_path, f"[database]\nurl = '{url}'\n").database.url == url


def test_database_url_from_a_file_keeps_its_password_out_of_reprs(tmp_path: Path) -> None:
    url = "postgresql://tokend:s3cret-pw@db.internal:5432/tokend"
    (tmp_path / "db-url").write_text(url + "\n")
    cfg = load_text(tmp_path, "[database]\nurl_file = 'db-url'\n")
    assert cfg.database.url == url
    assert "s3cret-pw" not in repr(cfg)


def test_drain_seconds_may_be_zero(tmp_path: Path) -> None:
    assert load_text(tmp_path, "[server]\ndrain_seconds = 0\n").server.drain_seconds == 0.0


def test_invalid_toml(tmp_path: Path) -> None:
    exc = expect_error(tmp_path, "[refresh\ninterval_seconds = \n", "--config")
    assert "invalid TOML" in str(exc)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(tmp_path / "absent.toml")
    assert_names(info.value, "--config")
    assert "absent.toml" in str(info.value)


def test_config_path_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(tmp_path)
    assert_names(info.value, "--config")


# -- secrets ------------------------------------------------------------------------------


def provider_with(line: str) -> str:
    return f"[providers.ebay-production]\nclient_id = 'app'\n{line}\n"


def secret_of(cfg: config.Config) -> str:
    return cfg.providers["ebay-production"].client_secret


def test_secret_inline(tmp_path: Path) -> None:
    assert secret_of(load_text(tmp_path, provider_with("client_secret = 'inline'"))) == "inline"


def test_secret_file_absolute(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "secret"
    secret.parent.mkdir()
    secret.write_text("  from-file \n")
    cfg = load_text(tmp_path, provider_with(f"client_secret_file = '{secret}'"))
    assert secret_of(cfg) == "from-file"


def test_secret_file_relative_to_credentials_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "secret").write_text("from-credentials\n")
    (tmp_path / "secret").write_text("from-config-folder\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = load_text(tmp_path, provider_with("client_secret_file = 'secret'"))
    assert secret_of(cfg) == "from-credentials"


def test_secret_file_relative_to_config_folder(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret").write_text("from-config-folder\n")
    cfg = load_text(tmp_path, provider_with("client_secret_file = 'secret'"))
    assert secret_of(cfg) == "from-config-folder"
    # A credentials directory without the file falls back to the config file's folder.
    empty = tmp_path / "empty-creds"
    empty.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(empty))
    monkeypatch.chdir(empty)  # not the working directory: the config file's folder
    cfg = load_text(tmp_path, provider_with("client_secret_file = 'secret'"))
    assert secret_of(cfg) == "from-config-folder"


def test_secret_file_missing(tmp_path: Path) -> None:
    exc = expect_error(tmp_path, provider_with("client_secret_file = 'nope'"),
                       "providers.ebay-production.client_secret_file")
    assert "nope" in str(exc)


def test_secret_file_unreadable(tmp_path: Path) -> None:
    (tmp_path / "a-folder").mkdir()
    exc = expect_error(tmp_path, provider_with("client_secret_file = 'a-folder'"),
                       "providers.ebay-production.client_secret_file")
    assert "cannot read" in str(exc)


def test_secret_file_not_text(tmp_path: Path) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00secret")
    expect_error(tmp_path, provider_with("client_secret_file = 'binary'"),
                 "providers.ebay-production.client_secret_file")


def test_secret_inline_and_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-file\n")
    exc = expect_error(
        tmp_path, provider_with("client_secret = 'inline'\nclient_secret_file = 'secret'"),
        "providers.ebay-production.client_secret")
    assert "client_secret_file" in str(exc)
    assert "inline" not in str(exc).replace("client_secret_file", "")


def test_provider_secret_from_environment(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_PROVIDER_EBAY_PRODUCTION_CLIENT_SECRET", "from-env")
    assert secret_of(load_text(tmp_path, provider_with(""))) == "from-env"
    assert secret_of(load_text(tmp_path, provider_with("client_secret = 'inline'"))) == "from-env"
    (tmp_path / "secret").write_text("from-file\n")
    cfg = load_text(tmp_path, provider_with("client_secret_file = 'secret'"))
    assert secret_of(cfg) == "from-env"


def test_empty_environment_variable_is_ignored(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_PROVIDER_EBAY_PRODUCTION_CLIENT_SECRET", "")
    assert secret_of(load_text(tmp_path, provider_with("client_secret = 'inline'"))) == "inline"


def test_provider_environment_name_is_per_provider(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_PROVIDER_EBAY_PRODUCTION_CLIENT_SECRET", "for-production")
    cfg = load_text(tmp_path, provider_with("client_secret = 'inline'") + PROVIDER)
    assert cfg.providers["p"].client_secret == "inline-client-secret"


def test_admin_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inline, from_file, from_env = "inline-admin-token-0001", "file-admin-token-0002", \
        "env-admin-token-000003"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "admin").write_text(from_file + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_text(tmp_path, f"[server]\nadmin_token = '{inline}'\n").server.admin_token \
        == inline
    cfg = load_text(tmp_path, "[server]\nadmin_token_file = 'admin'\n")
    assert cfg.server.admin_token == from_file
    monkeypatch.setenv("TOKEND_ADMIN_TOKEN", from_env)
    assert load_text(tmp_path, f"[server]\nadmin_token = '{inline}'\n").server.admin_token \
        == from_env
    assert load_text(tmp_path, "[server]\nadmin_token_file = 'admin'\n").server.admin_token \
        == from_env


def test_consumer_token_from_environment(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_CONSUMER_TOKEN", "consumer-token-from-env")
    assert load_text(tmp_path, "").server.consumer_token == "consumer-token-from-env"


# -- crypto keys --------------------------------------------------------------------------


def test_keys_inline(tmp_path: Path) -> None:
    lines = [crypto.generate_key_line("k2"), crypto.generate_key_line("k1")]
    cfg = load_text(tmp_path, f"[crypto]\nkeys = {lines!r}\n".replace("'", '"'))
    assert cfg.crypto.keys == tuple(lines)
    assert cfg.crypto.keyring().primary_kid == "k2"


def test_keys_file(tmp_path: Path) -> None:
    lines = [crypto.generate_key_line("new"), crypto.generate_key_line("old")]
    (tmp_path / "keys").write_text(f"\n  {lines[0]}  \n\n{lines[1]}\n")
    cfg = load_text(tmp_path, "[crypto]\nkeys_file = 'keys'\n")
    assert cfg.crypto.keys == tuple(lines)


def test_keys_inline_and_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text(crypto.generate_key_line("k1"))
    expect_error(tmp_path, "[crypto]\nkeys = []\nkeys_file = 'keys'\n", "crypto.keys")


def test_keys_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = crypto.generate_key_line("a"), crypto.generate_key_line("b")
    monkeypatch.setenv("TOKEND_ENCRYPTION_KEYS", f" {a} ,{b},")
    inline = crypto.generate_key_line("inline")
    cfg = load_text(tmp_path, f'[crypto]\nkeys = ["{inline}"]\n')
    assert cfg.crypto.keys == (a, b)
    assert cfg.crypto.keyring().primary_kid == "a"


def test_bad_key_in_environment_names_crypto_keys(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_ENCRYPTION_KEYS", "not-a-key-line")
    with pytest.raises(config.ConfigError) as info:
        load_text(tmp_path, "")
    assert str(info.value).startswith("crypto.keys")
    assert "TOKEND_ENCRYPTION_KEYS" in str(info.value)
    assert "\n" not in str(info.value)


MATERIAL = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpBQkNERUY"  # 32 bytes, urlsafe base64


@pytest.mark.parametrize("line", [
    "no-colon-here",
    f"bad kid!:{MATERIAL}",
    f":{MATERIAL}",
    f"{'k' * 33}:{MATERIAL}",
    "k1:not base64 at all!",
    "k1:QUJD",  # 3 bytes
    f"k1:{MATERIAL}QUJD",  # 35 bytes
    "k1:",
])
def test_malformed_key_lines(tmp_path: Path, line: str) -> None:
    exc = expect_error(tmp_path, f'[crypto]\nkeys = ["{line}"]\n', "crypto.keys")
    assert MATERIAL not in str(exc)


def test_duplicate_kid(tmp_path: Path) -> None:
    a, b = crypto.generate_key_line("same"), crypto.generate_key_line("same")
    exc = expect_error(tmp_path, f'[crypto]\nkeys = ["{a}", "{b}"]\n', "crypto.keys")
    assert "same" in str(exc)
    for line in (a, b):
        assert line.partition(":")[2] not in str(exc)


def test_keyring_without_keys_names_crypto_keys() -> None:
    with pytest.raises(config.ConfigError) as info:
        config.CryptoConfig().keyring()
    assert_names(info.value, "crypto.keys")


def test_keyring_round_trip(tmp_path: Path) -> None:
    line = crypto.generate_key_line("k1")
    keyring = load_text(tmp_path, f'[crypto]\nkeys = ["{line}"]\n').crypto.keyring()
    sealed = keyring.encrypt("v^1.1#token", account_id="a", column="refresh_token")
    assert keyring.decrypt(sealed, account_id="a", column="refresh_token") == "v^1.1#token"


# -- secrets stay out of repr -------------------------------------------------------------


def test_repr_carries_no_secret(tmp_path: Path) -> None:
    key_line = crypto.generate_key_line("k1")
    cfg = load_text(tmp_path, f"""
[crypto]
keys = ["{key_line}"]
[server]
admin_token = "ADMIN-CANARY-0123456789"
consumer_token = "CONSUMER-CANARY-012345"
[server.org_tokens]
acme = "ORG-CANARY-0123456789"
[server.consumer_org_tokens]
acme = "CONSORG-CANARY-0123456"
[providers.p]
client_id = "app-id"
client_secret = "CLIENT-SECRET-CANARY"
""")
    text = repr(cfg) + str(cfg) + repr(cfg.providers["p"])
    for secret in ("CLIENT-SECRET-CANARY", "ADMIN-CANARY", "CONSUMER-CANARY", "ORG-CANARY",
                   "CONSORG-CANARY", key_line.partition(":")[2]):
        assert secret not in text
    assert "app-id" in text  # the rest is still there to read


# -- the command line ---------------------------------------------------------------------


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TOKEND_") and k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run([sys.executable, "-m", "tokend", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("before", [True, False], ids=["option-first", "command-first"])
def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path, before: bool) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[database]\nurl = 'sqlite://{tmp_path}/x.db'\n[refresh]\nbogus = 1\n")
    # status reads the whole configuration (migrate reads only [database]).
    args = ["--config", str(bad), "status"] if before else ["status", "--config", str(bad)]
    result = run_cli(*args, tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refresh.bogus" in lines[0]
    assert not (tmp_path / "x.db").exists()


def test_cli_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "absent.toml"), "migrate", tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--config" in lines[0]
    assert "absent.toml" in lines[0]


# -- [ebay_notifications] -------------------------------------------------------------------

VERIFY = "v" * 32
NOTIFICATIONS = PROVIDER + """
[ebay_notifications]
endpoint = "https://tokend.example.com/ebay/notifications"
provider = "p"
"""


def test_ebay_notifications_are_off_without_the_table(tmp_path: Path) -> None:
    assert load_text(tmp_path, PROVIDER).ebay_notifications is None


def test_ebay_notifications_defaults_and_secret_sources(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_text(tmp_path, NOTIFICATIONS + f'verification_token = "{VERIFY}"\n')
    notes = cfg.ebay_notifications
    assert notes.verification_token == VERIFY and notes.provider == "p"
    assert notes.public_key_url == "https://api.ebay.com/commerce/notification/v1/public_key/"
    assert VERIFY not in repr(cfg)
    sandbox = NOTIFICATIONS.replace('client_id = "app-id"',
                                    'client_id = "app-id"\nenvironment = "sandbox"')
    (tmp_path / "verify").write_text("f" * 80 + "\n")
    cfg = load_text(tmp_path, sandbox + 'verification_token_file = "verify"\n')
    assert cfg.ebay_notifications.verification_token == "f" * 80
    assert cfg.ebay_notifications.public_key_url.startswith("https://api.sandbox.ebay.com/")
    monkeypatch.setenv("TOKEND_EBAY_VERIFICATION_TOKEN", "e-_" * 11)
    assert load_text(tmp_path, NOTIFICATIONS).ebay_notifications.verification_token == \
        "e-_" * 11


@pytest.mark.parametrize("text, key", [
    (NOTIFICATIONS, "ebay_notifications.verification_token"),
    (NOTIFICATIONS + f'verification_token = "{"v" * 31}"\n',
     "ebay_notifications.verification_token"),
    (NOTIFICATIONS + f'verification_token = "{"v" * 81}"\n',
     "ebay_notifications.verification_token"),
    (NOTIFICATIONS + f'verification_token = "{"v" * 31}!"\n',
     "ebay_notifications.verification_token"),
    (NOTIFICATIONS.replace("https://tokend", "tokend") + f'verification_token = "{VERIFY}"\n',
     "ebay_notifications.endpoint"),
    (NOTIFICATIONS.replace('provider = "p"', 'provider = "q"')
     + f'verification_token = "{VERIFY}"\n', "ebay_notifications.provider"),
    (NOTIFICATIONS.replace('client_id = "app-id"', 'client_id = "app-id"\ntype = "oauth2"\n'
                           'token_url = "https://a.example/t"')
     + f'verification_token = "{VERIFY}"\n', "ebay_notifications.provider"),
    (NOTIFICATIONS + f'verification_token = "{VERIFY}"\npublic_key_url = "ftp://x/"\n',
     "ebay_notifications.public_key_url"),
    (NOTIFICATIONS + f'verification_token = "{VERIFY}"\nextra = 1\n',
     "ebay_notifications.extra"),
])
def test_ebay_notifications_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    error = expect_error(tmp_path, text, key)
    assert "v" * 31 not in str(error)  # the message never repeats the token


# -- [[webhooks]] -------------------------------------------------------------------------

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_webhooks_parse_with_defaults_and_a_derived_name(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, f'[[webhooks]]\nurl = "https://u:p@hooks.example.com/t?k=1"\n'
                              f'secret = "{WHSEC}"\nevents = ["loop.stale"]\n')
    [hook] = cfg.webhooks
    assert hook.name == "hooks.example.com/t"  # no credentials, no query string
    assert hook.events == ("loop.stale",) and hook.wants("loop.stale")
    assert not hook.wants("budget.warning")
    assert hook.key == base64.b64decode(WHSEC.removeprefix("whsec_"))
    assert WHSEC not in repr(cfg)


def test_webhook_secret_from_file_and_environment(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hook-secret").write_text(WHSEC + "\n")
    cfg = load_text(tmp_path, '[[webhooks]]\nurl = "https://h.example/x"\nname = "ops"\n'
                              'secret_file = "hook-secret"\n')
    assert cfg.webhooks[0].secret == WHSEC
    other = "whsec_" + base64.b64encode(b"k" * 32).decode()
    monkeypatch.setenv("TOKEND_WEBHOOK_OPS_SECRET", other)
    cfg = load_text(tmp_path, '[[webhooks]]\nurl = "https://h.example/x"\nname = "ops"\n')
    assert cfg.webhooks[0].secret == other


@pytest.mark.parametrize(("text", "key"), [
    ('url = "ftp://x"\nsecret = "{s}"', "webhooks[0].url"),
    ('url = "https://x/y"', "webhooks[0].secret"),
    ('url = "https://x/y"\nsecret = "not-whsec"', "webhooks[0].secret"),
    ('url = "https://x/y"\nsecret = "whsec_***"', "webhooks[0].secret"),
    ('url = "https://x/y"\nsecret = "whsec_c2hvcnQ="', "webhooks[0].secret"),
    ('url = "https://x/y"\nsecret = "{s}"\nevents = ["account.exploded"]', "webhooks[0].events"),
    ('url = "https://x/y"\nsecret = "{s}"\ntimeout_seconds = 0', "webhooks[0].timeout_seconds"),
    ('url = "https://x/y"\nsecret = "{s}"\nmax_attempts = 0', "webhooks[0].max_attempts"),
    ('url = "https://x/y"\nsecret = "{s}"\ncolour = "red"', "webhooks[0].colour"),
])
def test_bad_webhooks_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        load_text(tmp_path, "[[webhooks]]\n" + text.replace("{s}", WHSEC) + "\n")
    assert caught.value.key == key


def test_two_webhooks_need_distinct_names(tmp_path: Path) -> None:
    hook = f'[[webhooks]]\nurl = "https://x/y"\nsecret = "{WHSEC}"\n'
    with pytest.raises(config.ConfigError) as caught:
        load_text(tmp_path, hook + hook)
    assert caught.value.key == "webhooks[1].name"
    assert len(load_text(tmp_path, hook + hook + 'name = "second"\n').webhooks) == 2
