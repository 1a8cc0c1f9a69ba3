"""The SQL files: named statements in `sql/queries.sql`, each dialect's overrides in
`sql/<dialect>/queries.sql`, and ordered migrations under `sql/<dialect>/migrations/`.

Statements use named parameters (`:name`); `compile` turns them into the placeholder
style of a driver once, so no argument order is ever kept by hand.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from tokend.store import errors

# A wheel carries the files as tokend/sql (hatch force-include); a checkout has them at the root.
_PACKAGE = Path(__file__).resolve().parents[1]
SQL_DIR = _PACKAGE / "sql" if (_PACKAGE / "sql").is_dir() else _PACKAGE.parent / "sql"

_HEADER = re.compile(r"^-- (name|fragment): ([a-z0-9_]+)[ \t]*$", re.MULTILINE)
_SPLICE = re.compile(r"\{\{([a-z0-9_]+)\}\}")
_PARAM = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def parse(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Split a file at its `-- name: x` / `-- fragment: x` headers into (statements,
    fragments); text before the first header is a preface, comment lines are dropped."""
    parts = _HEADER.split(text)
    found: tuple[dict[str, str], dict[str, str]] = ({}, {})
    for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        named = found[kind == "fragment"]
        if name in named:
            raise ValueError(f"{kind} {name!r} is defined twice")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        named[name] = "\n".join(lines).strip()
    return found


@functools.cache
def load(dialect: str) -> dict[str, str]:
    """Every statement for `dialect`: the shared ones, overridden by the dialect's own,
    with fragments spliced in."""
    statements, fragments = parse((SQL_DIR / "queries.sql").read_text())
    own_statements, own_fragments = parse((SQL_DIR / dialect / "queries.sql").read_text())
    statements |= own_statements
    fragments |= own_fragments

    def splice(text: str) -> str:
        return _SPLICE.sub(lambda m: splice(fragments[m.group(1)]), text)

    return {name: splice(text) for name, text in statements.items()}


def params(sql: str) -> tuple[str, ...]:
    """The named parameters of a statement, in order of first use."""
    return tuple(dict.fromkeys(_PARAM.findall(sql)))


def to_numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """`:name` -> `$n` (asyncpg); returns the text and the names in `$n` order."""
    names = params(sql)
    index = {name: i for i, name in enumerate(names, 1)}
    return _PARAM.sub(lambda m: f"${index[m.group(1)]}", sql), names


@functools.cache
def migrations(dialect: str) -> tuple[tuple[str, str], ...]:
    """(name, script) pairs in the order they apply; the name is the file name without `.sql`."""
    files = sorted((SQL_DIR / dialect / "migrations").glob("*.sql"))
    return tuple((path.stem, path.read_text()) for path in files)


def pending(dialect: str, applied: set[str]) -> list[tuple[str, str]]:
    """Migrations still to apply; SchemaError when a newer tokend already moved the schema on."""
    unknown = sorted(applied - {name for name, _ in migrations(dialect)})
    if unknown:
        raise errors.SchemaError(
            f"the database schema is ahead of this tokend (unknown migrations: "
            f"{', '.join(unknown)}); upgrade tokend, `tokend migrate` cannot go back")
    return [(name, script) for name, script in migrations(dialect) if name not in applied]


def check_applied(dialect: str, applied: set[str] | None) -> None:
    """Raise SchemaError naming `tokend migrate` unless exactly our migrations are applied."""
    if not applied:
        raise errors.SchemaError("the database has no tokend schema; run `tokend migrate`")
    todo = pending(dialect, applied)
    if todo:
        names = ", ".join(name for name, _ in todo)
        raise errors.SchemaError(
            f"the database schema is behind (pending: {names}); run `tokend migrate`")
