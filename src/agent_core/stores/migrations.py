"""Versioned schema migrations, kept as numbered ``.sql`` files per dialect.

``stores/sql/<dialect>/NNNN_name.sql`` is migration NNNN. A store applies, in order, every
migration above the version recorded in its ``agent_core_schema`` table, each in its own
transaction together with the new version row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "load_migrations"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """Every migration of ``dialect`` ("sqlite" or "postgres"), in version order."""
    folder = resources.files("agent_core.stores") / "sql" / dialect
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found
