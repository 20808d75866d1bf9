"""Every stage logs errors with the id involved and keeps running (the README's guarantee 6)."""

from __future__ import annotations

import logging

import pytest

from bots import (
    stage1_pickle_logger,
    stage3_sqlite_logger,
    stage4_conversation,
    stage5_inline_buttons,
    stage6_shared_database,
)
from bots.offline import ALICE, OfflineChat
from persistence import SQLitePersistence

# (stage module, a message the stage answers)
STAGES = [
    (stage1_pickle_logger, "/start"),
    (stage3_sqlite_logger, "/start"),
    (stage4_conversation, "/start"),
    (stage5_inline_buttons, "/menu"),
    (stage6_shared_database, "/start"),
]


@pytest.mark.parametrize(("stage", "probe"), STAGES, ids=[s.__name__.split(".")[-1] for s, _ in STAGES])
async def test_a_persistence_error_is_logged_with_its_id_and_the_bot_goes_on(stage, probe, tmp_path, caplog):
    db = tmp_path / "bot.sqlite3"
    async with OfflineChat(stage.build_application, lambda: SQLitePersistence(db)) as chat:
        assert await chat.send(probe)
        chat.app.chat_data[ALICE.id]["unstorable"] = {1, 2, 3}  # a set: not JSON
        chat.app.mark_data_for_update_persistence(chat_ids=ALICE.id)
        with caplog.at_level(logging.ERROR, logger="bots"):
            await chat.save()
        [record] = [r for r in caplog.records if r.name == "bots"]
        assert "while saving" in record.getMessage()
        assert f"chat_data of chat {ALICE.id}" in record.getMessage()
        assert await chat.send(probe)  # still answering
        del chat.app.chat_data[ALICE.id]["unstorable"]
