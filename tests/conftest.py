"""Fixtures shared by every test (defined here once): a temporary data file per test, and stage
bots over it. Helpers that are not fixtures live in ``tests/helpers.py``.

The session also gives every process it starts - notebook kernels, stages run as subprocesses -
a temporary directory of its own (``TMPDIR``), removed at the end: a run leaves nothing behind in
the system's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import REPO  # noqa: F401 - 'from conftest import REPO' in older test modules
from telegram.ext import PicklePersistence

from bots import stage1_pickle_logger as stage1
from bots.offline import OfflineChat


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--persistence", default=None, metavar="MODULE:CALLABLE",
        help="run tests/test_persistence_contract.py against your own persistence: a callable "
        "that takes a storage location (pathlib.Path) and returns a new persistence over it",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    tempfile.gettempdir()  # this process (and pytest's tmp_path) keeps the system's directory
    session.config.stash[_CHILDREN_TMP] = Path(tempfile.mkdtemp(prefix="cookbook-tests-"))
    session.config.stash[_OLD_TMPDIR] = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(session.config.stash[_CHILDREN_TMP])


def pytest_sessionfinish(session: pytest.Session) -> None:
    directory = session.config.stash.get(_CHILDREN_TMP, None)
    if directory is None:
        return
    old = session.config.stash[_OLD_TMPDIR]
    if old is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = old
    shutil.rmtree(directory)


_CHILDREN_TMP = pytest.StashKey[Path]()
_OLD_TMPDIR = pytest.StashKey["str | None"]()


@pytest.fixture
def pickle_path(tmp_path: Path) -> Path:
    """A data file that does not exist yet, in this test's own directory."""
    return tmp_path / "bot.pickle"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite database file that does not exist yet, in this test's own directory."""
    return tmp_path / "bot.sqlite3"


@pytest.fixture
async def stage1_chat(pickle_path: Path):
    """The stage 1 logger, running offline over ``pickle_path``."""
    async with OfflineChat(stage1.build_application, lambda: PicklePersistence(pickle_path)) as chat:
        yield chat
