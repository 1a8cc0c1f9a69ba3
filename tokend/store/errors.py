"""What the store raises, in a module that imports nothing of tokend's: the connectors
translate their drivers' errors into these, and callers catch them without pulling in a
backend."""

from __future__ import annotations


class StoreError(Exception):
    """A storage problem worth one clear line to the operator."""


class SchemaError(StoreError):
    """The database schema is missing, behind, or ahead of this program."""


class DuplicateKey(StoreError):
    """A row with this unique key already exists (raised by the connectors)."""


class DuplicateAccount(DuplicateKey):
    """An account with this id, or this provider/org/name, already exists."""
