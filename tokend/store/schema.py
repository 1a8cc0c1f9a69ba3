"""The schema: migrations applied whole or not at all, and the check that refuses to start
on a schema this program does not know (pgqueuer's `verify_structure`)."""

from __future__ import annotations

from tokend import clock
from tokend.store import ports, queries


class Schema:
    _db: ports.Connector
    backend: str

    async def migrate(self) -> list[str]:
        """Apply every pending migration in one transaction under the migration lock, so an
        upgrade is whole or not at all and concurrent runs take turns; returns their names."""
        async with self._db.transaction(schema_change=True) as tx:
            await tx.one("lock_migrations")
            await tx.one("create_migrations_table")
            applied = {row["name"] for row in await tx.all("applied_migrations")}
            todo = queries.pending(self.backend, applied)
            for name, script in todo:
                await tx.script(script)
                await tx.one("record_migration", name=name, now=clock.now())
        return [name for name, _ in todo]

    async def check_schema(self) -> None:
        """Raise SchemaError naming `tokend migrate` unless the schema is exactly current."""
        applied = None
        if (await self._db.one("migrations_table_exists"))["present"]:
            applied = {row["name"] for row in await self._db.all("applied_migrations")}
        queries.check_applied(self.backend, applied)
