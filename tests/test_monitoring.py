"""The alert rules and the dashboard in deploy/: promtool checks the rules and runs their
unit tests, and a real `tokend run` is scraped so that no rule or panel names a metric or a
label the daemon does not export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from kit import execute_sql, seed, wait_until
from proc import ADMIN_TOKEN, Daemon, daemon_config
from prometheus_client.parser import text_string_to_metric_families
from webhook_receiver import Receiver

from tokend import crypto
from tokend.testing import simulator

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).parent.parent
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "tokend-rules.yml"
RULE_TESTS = RULES_DIR / "tokend-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tokend.json"
CONSUMER_TOKEN = "consumer-token-for-tests-0123456789"
# Labels Prometheus adds to every scraped series, and the bucket bound of histograms.
TARGET_LABELS = {"instance", "job"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: ./scripts/test installs Debian's prometheus package"
    return subprocess.run([exe, *args], cwd=RULES_DIR, capture_output=True, text=True,
                          timeout=60, check=False)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    """(expr, legendFormat) of every panel's targets, rows' panels included."""
    panels = orjson.loads(DASHBOARD.read_bytes())["panels"]
    panels += [p for row in panels for p in row.get("panels", [])]
    return [(t["expr"], t.get("legendFormat", "")) for p in panels for t in p.get("targets", [])]


def test_the_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_waits_has_a_severity_says_what_to_do_and_is_tested() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    expected = {(case["alertname"], bool(case["exp_alerts"]))
                for test in tests for case in test.get("alert_rule_test", [])}
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert len(rule["annotations"]["summary"]) > 60, name
        assert (name, True) in expected, f"no unit test fires {name}"
        assert (name, False) in expected, f"no unit test holds {name} back"


def test_the_dashboard_is_one_grafana_document_on_a_chosen_data_source() -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    queries = dashboard_queries()
    assert len(queries) >= 20
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    for wanted in ("tokend_refreshes_total", "tokend_due_backlog", "tokend_budget_calls",
                   "tokend_daily_quota", "tokend_vends_total", "tokend_vend_duration_seconds",
                   "tokend_stream_subscribers", "tokend_webhook_deliveries_total",
                   "tokend_loop_last_cycle_timestamp_seconds"):
        assert any(wanted in expr for expr, _ in queries), wanted


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each tokend metric an expression names, with the labels its matchers name."""
    out = []
    for match in re.finditer(r"\b(tokend_[a-z_]+)\b(\{[^}]*\})?", expr):
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", match.group(2) or ""))
        out.append((match.group(1), labels))
    return out


def grouping_labels(expr: str, legend: str = "") -> set[str]:
    """Labels named by `by`/`without`/`on`/`ignoring`, a legend and an annotation."""
    out: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        out |= {label.strip() for label in clause.split(",") if label.strip()}
    out |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    out |= set(re.findall(r"\$labels\.(\w+)", legend))
    return out


def unknown_names(expr: str, legend: str, exported: dict[str, set[str]]) -> list[str]:
    problems = []
    named = selectors(expr)
    assert named, f"names no tokend metric: {expr}"
    for metric, labels in named:
        if metric not in exported:
            problems.append(f"{metric} is not exported (in {expr!r})")
        elif labels - exported[metric]:
            problems.append(f"{metric} has no label {sorted(labels - exported[metric])}")
    available = set().union(*(exported.get(metric, set()) for metric, _ in named))
    for label in grouping_labels(expr, legend) - available - TARGET_LABELS:
        problems.append(f"no metric of {expr!r} has a label {label!r}")
    return problems


async def scrape_a_busy_daemon(tmp_path: Path, db_url: str, keyring: crypto.Keyring,
                               key_line: str) -> str:
    """`tokend run` that has refreshed, failed, vended and delivered a webhook: every
    labelled series the rules and panels may name exists in what it answers."""
    tokens = await seed(db_url, keyring, 4)
    # A ciphertext sealed for another row: decrypt_failed, active and failing.
    misplaced = keyring.encrypt(tokens["acct_00002"], account_id="acct_00003",
                                column="refresh_token")
    await execute_sql(db_url, f"UPDATE accounts SET refresh_token = '{misplaced}' "
                              "WHERE id = 'acct_00002'")
    async with simulator.Simulator() as sim, Receiver() as receiver:
        sim.revoke(tokens["acct_00001"])  # invalid_grant -> reauth_required -> a webhook
        config_path = daemon_config(tmp_path, db_url=db_url, key_line=key_line,
                                    token_url=sim.token_url, interval_seconds=1.0)
        text = config_path.read_text().replace(
            "[server]\n", f'[server]\nconsumer_token = "{CONSUMER_TOKEN}"\n')
        config_path.write_text(text + f'\n[[webhooks]]\nname = "receiver"\n'
                                      f'url = "{receiver.url}"\nsecret = "{receiver.secret}"\n')
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            async with aiohttp.ClientSession() as http:
                async def accounts() -> dict[str, dict]:
                    async with http.get(f"{url}/api/accounts", headers={
                            "Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
                        return {a["id"]: a for a in (await response.json())["accounts"]}

                async def settled() -> bool:
                    shown = await accounts()
                    return (shown["acct_00001"]["state"] == "reauth_required"
                            and shown["acct_00000"]["last_refresh_at"] is not None)

                await wait_until(settled, 30, 0.2)
                async with http.get(f"{url}/api/accounts/acct_00000/access-token",
                                    headers={"Authorization": f"Bearer {CONSUMER_TOKEN}"},
                                    ) as response:
                    assert response.status == 200
                await wait_until(lambda: receiver.received, 30, 0.2)
                scraped = ""

                async def complete() -> bool:
                    nonlocal scraped
                    async with http.get(f"{url}/metrics") as response:
                        scraped = await response.text()
                    return all(f"{name}{{" in scraped for name in (
                        "tokend_webhook_deliveries_total", "tokend_failing_accounts",
                        "tokend_vends_total"))

                await wait_until(complete, 30, 0.2)
                return scraped
        finally:
            daemon.kill()


async def test_rules_and_panels_name_only_what_tokend_run_exports(
        tmp_path: Path, sqlite_url: str, keyring, key_lines) -> None:
    text = await scrape_a_busy_daemon(tmp_path, sqlite_url, keyring, key_lines[0])
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    # The gauges that need the daemon's own rules, whatever else it did.
    assert 'tokend_loop_stale 0.0' in text
    assert 'tokend_ready{check="database"} 1.0' in text
    problems = []
    for rule in alert_rules():
        problems += unknown_names(rule["expr"], rule["annotations"]["summary"], exported)
    for expr, legend in dashboard_queries():
        problems += unknown_names(expr, legend, exported)
    assert not problems, "\n".join(problems)


def test_the_name_check_catches_a_misspelt_metric_and_label() -> None:
    exported = {"tokend_refreshes_total": {"provider", "source", "outcome"}}
    assert unknown_names('sum by (provider) (rate(tokend_refreshes_total[5m]))', "",
                         exported) == []
    assert unknown_names('rate(tokend_refresh_total[5m])', "", exported)
    assert unknown_names('tokend_refreshes_total{status="ok"}', "", exported)
    assert unknown_names('sum by (endpoint) (tokend_refreshes_total)', "", exported)
    assert unknown_names('tokend_refreshes_total', "{{ provder }}", exported)
