"""The tests' PostgreSQL server: ``DATABASE_URL`` when it is set, else a private one
(``bots/local_postgres.py``) started once per test session in its own temporary directory and
stopped, and deleted, when the session ends. Each test gets its own schema (:func:`fresh_schema`),
so tests never see each other's tables.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

from bots.local_postgres import database_url as _database_url

_dsn: str | None = None
_counter = itertools.count(1)
_by_location: dict[str, str] = {}


def database_url() -> str:
    """The DSN of the test server, starting the private one on first use."""
    global _dsn
    if _dsn is None:
        _dsn = _database_url(Path(tempfile.mkdtemp(prefix="cookbook-pg-")), delete=True)
    return _dsn


def fresh_schema(hint: str = "t") -> str:
    """A schema name no test has used yet (the process id keeps runs apart on a shared server)."""
    return f"{hint}_{os.getpid()}_{next(_counter)}"


def make_postgres_persistence(location: Path, **kwargs):
    """The contract suite's factory for PostgresPersistence: one schema per storage location."""
    from persistence.postgres import PostgresPersistence

    schema = _by_location.setdefault(str(location), fresh_schema("contract"))
    return PostgresPersistence(database_url(), schema=schema, **kwargs)
