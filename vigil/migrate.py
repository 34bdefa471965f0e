"""Numbered SQL migrations (`sql/NNNN_name.sql`), applied in order, each in one transaction.

`schema_migrations` records (version, name, checksum, applied_at). A session advisory lock
serialises concurrent runners (two Dagster processes starting together, say). An applied
file whose checksum changed is refused: history is fixed once applied, and a change belongs
in a new file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from vigil.settings import PROJECT_ROOT, READER_ROLE

MIGRATIONS_DIR = PROJECT_ROOT / "sql"
# Any fixed 64-bit number; it only has to be the same for every runner.
_LOCK_KEY = 0x76_69_67_69_6C_00_00_01
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files and the database disagree; the message says how to fix it."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version:04d} is also used by "
                                 f"{migrations[version].path.name}")
        migrations[version] = Migration(version, match.group(2), path, path.read_text())
    return [migrations[v] for v in sorted(migrations)]


def migrate(database_url: str, directory: Path = MIGRATIONS_DIR,
            report: Callable[[str], None] = lambda _: None,
            reader_password: str | None = None) -> list[Migration]:
    """Apply pending migrations; returns those applied by this call. With `reader_password`,
    the read-only role the dashboard uses gets it (every call: the password may change)."""
    wanted = load(directory)
    applied_now: list[Migration] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(_LEDGER)
            done = {row[0]: row[1] for row in
                    conn.execute("SELECT version, checksum FROM schema_migrations")}
            for migration in wanted:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{migration.path.name} was changed after it was applied "
                            f"(checksum {done[migration.version][:12]} in the database, "
                            f"{migration.checksum[:12]} on disk): restore the file and put "
                            "the change in a new migration")
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum))
                report(f"applied {migration.path.name}")
                applied_now.append(migration)
            if reader_password is not None:
                set_reader_password(conn, reader_password)
            unknown = sorted(set(done) - {m.version for m in wanted})
            if unknown:
                report("note: the database has migrations this checkout lacks: "
                       + ", ".join(f"{v:04d}" for v in unknown))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def set_reader_password(conn: psycopg.Connection[Any], password: str) -> None:
    # ALTER ROLE takes no bind parameters: the password goes in as a quoted literal.
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        sql.Identifier(READER_ROLE), sql.Literal(password)))
