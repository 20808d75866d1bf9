"""A PostgreSQL server for the stage 9 demo, the offline chat and the tests: ``DATABASE_URL`` when
it is set, else a private server started from the ``pgserver`` package (PostgreSQL's own binaries,
installed by ``pip``; about a second to start, also as root, listening on a Unix socket only).
"""

from __future__ import annotations

import atexit
import os
import shutil
import warnings
from pathlib import Path


def start_private_server(directory: Path, *, delete: bool = False) -> str:
    """Start (or reuse) the server whose data lives in ``directory``; returns its DSN. It is
    stopped when this process exits; with ``delete=True`` its data directory is removed then too
    (never remove it earlier: a server whose directory is gone cannot be stopped)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root)
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(directory, cleanup_mode="stop")

    def stop() -> None:
        server.cleanup()
        if delete:
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(stop)
    return str(server.get_uri())


def stop_private_server(directory: Path) -> None:
    """Stop the server over ``directory`` now (its data stays; start it again with
    :func:`start_private_server`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        pgserver.get_server(directory, cleanup_mode="stop").cleanup()


def database_url(directory: Path, *, delete: bool = False) -> str:
    """``DATABASE_URL`` if it is set, else a private server over ``directory``."""
    return os.environ.get("DATABASE_URL") or start_private_server(directory, delete=delete)
