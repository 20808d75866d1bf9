"""A real PostgreSQL server for the tests: ``DATABASE_URL`` when it is set, else a private one.

The private server comes from the ``pgserver`` package (PostgreSQL's own binaries, on PyPI): it is
started once per test session, in its own temporary directory, on a Unix socket only, and stopped
when the session ends. Each test gets its own schema (:func:`fresh_schema`), so tests never see each
other's tables.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import warnings
from pathlib import Path

_server_dsn: str | None = None
_counter = itertools.count(1)


def database_url() -> str:
    """The DSN of the test server, starting the private one on first use."""
    global _server_dsn
    if _server_dsn is None:
        _server_dsn = os.environ.get("DATABASE_URL") or _start_private_server()
    return _server_dsn


def _start_private_server() -> str:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root)
        warnings.simplefilter("ignore")
        import pgserver

        directory = tempfile.mkdtemp(prefix="cookbook-pg-")
        server = pgserver.get_server(directory, cleanup_mode="stop")

    def stop() -> None:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)

    atexit.register(stop)
    return str(server.get_uri())


def fresh_schema(hint: str = "t") -> str:
    """A schema name no test has used yet in this session (the server may outlive a session when
    ``DATABASE_URL`` is set: the process id keeps runs apart)."""
    return f"{hint}_{os.getpid()}_{next(_counter)}"


def schema_for(location: Path) -> str:
    """The contract suite's storage location (a path in a test's temporary directory) as a schema:
    the same path always gives the same schema within a session."""
    name = _by_location.get(str(location))
    if name is None:
        name = _by_location[str(location)] = fresh_schema("contract")
    return name


_by_location: dict[str, str] = {}


def make_postgres_persistence(location: Path, **kwargs):
    """The contract suite's factory for PostgresPersistence: one schema per storage location."""
    from persistence.postgres import PostgresPersistence

    return PostgresPersistence(database_url(), schema=schema_for(location), **kwargs)
