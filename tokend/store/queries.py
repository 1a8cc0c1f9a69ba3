"""The SQL files: named queries and ordered migrations under `sql/<backend>/`, read once."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from tokend import store

# A wheel carries the files as tokend/sql (hatch force-include); a checkout has them at the root.
_PACKAGE = Path(__file__).resolve().parents[1]
SQL_DIR = _PACKAGE / "sql" if (_PACKAGE / "sql").is_dir() else _PACKAGE.parent / "sql"

_HEADER = re.compile(r"^-- name: ([a-z0-9_]+)[ \t]*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a file at its `-- name: x` headers; text before the first is a preface."""
    parts = _HEADER.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ValueError(f"query {name!r} is defined twice")
        named[name] = body.strip()
    return named


@functools.cache
def load(backend: str) -> dict[str, str]:
    return parse((SQL_DIR / backend / "queries.sql").read_text())


@functools.cache
def migrations(backend: str) -> tuple[tuple[str, str], ...]:
    """(name, script) pairs in the order they apply; the name is the file name without `.sql`."""
    files = sorted((SQL_DIR / backend / "migrations").glob("*.sql"))
    return tuple((path.stem, path.read_text()) for path in files)


def pending(backend: str, applied: set[str]) -> list[tuple[str, str]]:
    """Migrations still to apply; SchemaError when a newer tokend already moved the schema on."""
    unknown = sorted(applied - {name for name, _ in migrations(backend)})
    if unknown:
        raise store.SchemaError(
            f"the database schema is ahead of this tokend (unknown migrations: "
            f"{', '.join(unknown)}); upgrade tokend, `tokend migrate` cannot go back")
    return [(name, script) for name, script in migrations(backend) if name not in applied]


def check_applied(backend: str, applied: set[str] | None) -> None:
    """Raise SchemaError naming `tokend migrate` unless exactly our migrations are applied."""
    if not applied:
        raise store.SchemaError("the database has no tokend schema; run `tokend migrate`")
    todo = pending(backend, applied)
    if todo:
        names = ", ".join(name for name, _ in todo)
        raise store.SchemaError(
            f"the database schema is behind (pending: {names}); run `tokend migrate`")
