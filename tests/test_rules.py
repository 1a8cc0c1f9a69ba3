"""Rules that must each have one home in tokend/, held by reading the source: the wall
clock, the provider type, the stale rule, the way an entry is recorded, the operator's
actions, and what one web module may take from another."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "tokend"


def _sources(*skip: str) -> dict[str, str]:
    """Every module of the daemon by its path under tokend/, but those under `skip`; the
    simulator and the test helpers in tokend/testing/ play the provider and are not it."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if not name.startswith(("testing/", *skip)):
            out[name] = path.read_text()
    return out


def _hits(pattern: str, *skip: str) -> list[str]:
    found = re.compile(pattern)
    return [f"{name}:{number}: {line.strip()}"
            for name, text in _sources(*skip).items()
            for number, line in enumerate(text.splitlines(), 1) if found.search(line)]


def test_the_rules_see_the_tree() -> None:
    # A pattern that matches nothing because the walk found nothing would pass anything.
    assert {"clock.py", "recorder.py", "actions.py", "web/console.py"} <= set(_sources())
    assert [hit.split(":")[0] for hit in _hits(r"datetime\.now\(")] == ["clock.py"]


def test_only_clock_reads_the_wall_clock() -> None:
    assert _hits(r"datetime\.(now|utcnow)\(|\btime\.time\(\)|date\.today\(",
                 "clock.py") == []


def test_no_module_asks_which_type_a_provider_is_but_the_ebay_package_and_config() -> None:
    assert _hits(r"""\.type\s*(==|!=|\bin\b)\s*\(?\s*["']|["'](ebay|oauth2)["']\s*(==|!=)""",
                 "ebay/", "config.py") == []


def test_the_stale_rule_is_one_constant() -> None:
    assert _hits(r"\b3\s*(\*|x)\s*\w*interval|interval\w*\s*\*\s*3\b") == []
    assert [hit.split(":")[0] for hit in _hits(r"^STALE_AFTER_INTERVALS\s*=")] == ["model.py"]


def test_entries_are_stored_and_published_by_the_recorder_only() -> None:
    assert _hits(r"\.add_entry\(", "store/", "recorder.py") == []
    assert _hits(r"\bhub\.publish\(|HUB\]\.publish\(", "recorder.py", "stream.py") == []


def test_each_operator_action_is_written_once() -> None:
    calls = r"\.(disable_account|enable_account|clear_backoff|clear_provider_pause)\("
    assert _hits(calls, "store/", "actions.py") == []


def test_web_modules_take_no_private_name_from_each_other() -> None:
    leaks = []
    for name, text in _sources().items():
        if not name.startswith("web/"):
            continue
        tree = ast.parse(text)
        siblings = {alias.asname or alias.name for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module == "tokend.web"
                    for alias in node.names}
        leaks += [f"{name}:{node.lineno}: {node.value.id}.{node.attr}"
                  for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in siblings and node.attr.startswith("_")]
    assert leaks == []


def test_the_cli_does_not_import_the_web_layer() -> None:
    assert _hits(r"from tokend\.web\b|import tokend\.web\b|from tokend import .*\bweb\b",
                 *(n for n in _sources() if n != "cli.py")) == []


def test_the_pages_share_one_login_dialog_and_one_session() -> None:
    static = ROOT / "web" / "static"
    dialogs = sorted(p.name for p in static.glob("*.html") if 'id="login"' in p.read_text())
    assert dialogs == ["login.html"]
    keepers = sorted(p.name for p in static.glob("*.js") if "sessionStorage" in p.read_text())
    assert keepers == ["session.js"]
