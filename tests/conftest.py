"""Fixtures shared by every test: a temporary data file per test, and stage bots over it."""

from __future__ import annotations

from pathlib import Path

import pytest
from telegram.ext import PicklePersistence

from bots import stage1_pickle_logger as stage1
from bots.offline import OfflineChat

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--persistence", default=None, metavar="MODULE:CALLABLE",
        help="run tests/test_persistence_contract.py against your own persistence: a callable "
        "that takes a storage location (pathlib.Path) and returns a new persistence over it",
    )


@pytest.fixture
def pickle_path(tmp_path: Path) -> Path:
    """A data file that does not exist yet, in this test's own directory."""
    return tmp_path / "bot.pickle"


@pytest.fixture
async def stage1_chat(pickle_path: Path):
    """The stage 1 logger, running offline over ``pickle_path``."""
    async with OfflineChat(stage1.build_application, lambda: PicklePersistence(pickle_path)) as chat:
        yield chat
