"""Ordered, idempotent DDL migrations from schemas/clickhouse/ (`ccpipe migrate`, worker start).

Each file NNN_name.sql is applied once, in order, and recorded in `ccpipe_schema_migrations`;
its statements are themselves idempotent (IF NOT EXISTS), so a half-applied file can run again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.store.backends import Backend

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"
LEDGER = "ccpipe_schema_migrations"
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(ttl_days: int, directory: Path = SCHEMA_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            continue
        text = path.read_text().replace("{ttl_days}", str(ttl_days))
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        statements = tuple(s.strip() for s in code.split(";") if s.strip())
        migrations.append(Migration(int(match.group(1)), match.group(2), statements))
    return migrations


def migrate(backend: Backend, ttl_days: int) -> list[str]:
    """Apply the migrations not yet applied; returns their names (empty when up to date)."""
    backend.execute(
        f"CREATE TABLE IF NOT EXISTS {LEDGER} (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {int(row[0]) for row in backend.select(f"SELECT version FROM {LEDGER}", readonly=False).rows}
    applied = []
    for migration in load_migrations(ttl_days):
        if migration.version in done:
            continue
        for statement in migration.statements:
            backend.execute(statement)
        backend.execute(
            f"INSERT INTO {LEDGER} (version, name) VALUES ({migration.version}, '{migration.name}')"
        )
        applied.append(f"{migration.version:03d}_{migration.name}")
    return applied
