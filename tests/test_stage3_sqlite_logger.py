"""Stage 3: the stage 1 logger, unchanged, on SQLitePersistence."""

from __future__ import annotations

import sqlite3

from bots import stage3_sqlite_logger as stage3
from bots.offline import ALICE, OfflineChat


async def test_the_logger_keeps_its_messages_across_restarts(tmp_path):
    db = tmp_path / "stage3.sqlite3"
    async with OfflineChat(stage3.build_application, lambda: stage3.make_persistence(db)) as chat:
        await chat.send("remember the milk")
        await chat.send("and the eggs")
        await chat.restart()
        [reply] = await chat.send("/show_data")
    assert reply.startswith("2 stored message(s):") and "and the eggs" in reply


async def test_the_rows_are_what_the_demo_shows(tmp_path, capsys):
    db = tmp_path / "stage3.sqlite3"
    async with OfflineChat(stage3.build_application, lambda: stage3.make_persistence(db)) as chat:
        await chat.send("remember the milk")
        await chat.save()
        stage3.show_rows(db)
    assert f"{ALICE.id} | 1 | remember the milk" in capsys.readouterr().out
    with sqlite3.connect(db) as conn:
        [(data,)] = conn.execute("SELECT data FROM chat_data WHERE chat_id = ?", (ALICE.id,)).fetchall()
    conn.close()
    assert data.startswith('{"messages":[{"message":"remember the milk","message_ts":')
