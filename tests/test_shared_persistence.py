"""What ``SharedSQLitePersistence`` adds to ``SQLitePersistence``: refresh and saves that merge
another program's changes into the bot's data, key by key, and never lose the bot's unsaved ones."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from test_persistence_contract import same
from test_sqlite_persistence import raw_sql, rows
from test_sqlite_persistence import stored_after_restart as stored_chat_data

from bots import stage1_pickle_logger as stage1
from bots.offline import ALICE, OfflineChat, application_builder
from persistence.shared import SharedSQLitePersistence
from persistence.sqlite import DatabaseFileError


async def stored_after_restart(path: Path):
    return await stored_chat_data(path, SharedSQLitePersistence)


async def test_refresh_picks_up_a_change_made_by_another_program(db):
    async with OfflineChat(stage1.build_application, lambda: SharedSQLitePersistence(db)) as chat:
        await chat.send("mine")
        await chat.save()
        admin = SharedSQLitePersistence(db)
        chats = await admin.get_chat_data()
        chats[ALICE.id]["messages"].append({"message": "added by admin", "message_ts": 0.0})
        await admin.update_chat_data(ALICE.id, chats[ALICE.id])
        await admin.flush()
        [reply] = await chat.send("/show_data")
        assert "mine" in reply and "added by admin" in reply


async def test_refresh_sees_raw_sql_updates_and_deletes(db):
    """A plain UPDATE by any program bumps the row's version (a trigger), so refresh notices."""
    async with OfflineChat(stage1.build_application, lambda: SharedSQLitePersistence(db)) as chat:
        await chat.send("mine")
        await chat.save()
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE chat_data SET data = json_set(data, '$.messages[0].message', 'edited')")
        conn.close()
        [reply] = await chat.send("/show_data")
        assert "edited" in reply and "mine" not in reply
        await chat.save()
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM chat_data")
        conn.close()
        assert await chat.send("/show_data") == ["Nothing stored for this chat yet."]


async def test_refresh_never_clobbers_unsaved_changes(db):
    async with OfflineChat(stage1.build_application, lambda: SharedSQLitePersistence(db)) as chat:
        await chat.send("saved")
        await chat.save()
        await chat.send("not saved yet")
        admin = SharedSQLitePersistence(db)
        await admin.update_chat_data(ALICE.id, {"messages": []})
        await admin.flush()
        [reply] = await chat.send("/show_data")
        assert "saved" in reply and "not saved yet" in reply


async def test_refresh_of_an_id_with_unsaved_changes_takes_only_the_other_programs_keys(db):
    async with OfflineChat(stage1.build_application, lambda: SharedSQLitePersistence(db)) as chat:
        await chat.send("saved")
        await chat.save()
        await chat.send("not saved yet")
        admin = SharedSQLitePersistence(db)
        chats = await admin.get_chat_data()
        chats[ALICE.id]["language"] = "de"
        chats[ALICE.id]["messages"] = []  # changed by both: the bot's unsaved list wins
        await admin.update_chat_data(ALICE.id, chats[ALICE.id])
        await admin.flush()
        [reply] = await chat.send("/show_data")  # refresh, no save in between
        assert chat.app.chat_data[ALICE.id]["language"] == "de"
        assert "saved" in reply and "not saved yet" in reply


async def test_a_save_keeps_another_programs_change_to_an_id_with_unsaved_changes(db):
    """Both sides change the same chat between two saves: the bot's save merges key by key, so
    neither write is lost, and the bot's live data gets the other program's key at the next update."""
    async with OfflineChat(stage1.build_application, lambda: SharedSQLitePersistence(db)) as chat:
        await chat.send("saved")
        await chat.save()
        await chat.send("not saved yet")  # the chat now has an unsaved change
        admin = SharedSQLitePersistence(db)
        chats = await admin.get_chat_data()
        chats[ALICE.id]["language"] = "de"
        await admin.update_chat_data(ALICE.id, chats[ALICE.id])
        await admin.flush()
        await chat.save()
        stored = await stored_after_restart(db)
        assert stored[ALICE.id]["language"] == "de"
        assert [m["message"] for m in stored[ALICE.id]["messages"]] == ["saved", "not saved yet"]
        await chat.send("/show_data")
        assert chat.app.chat_data[ALICE.id]["language"] == "de"
        await chat.save()
    stored = await stored_after_restart(db)
    assert stored[ALICE.id]["language"] == "de" and len(stored[ALICE.id]["messages"]) == 2


async def test_when_both_change_the_same_key_the_bots_save_wins(db):
    p = SharedSQLitePersistence(db)
    await p.update_user_data(1, {"name": "Ada", "city": "London"})
    other = SharedSQLitePersistence(db)
    await other.get_user_data()
    await other.update_user_data(1, {"name": "Grace", "city": "London", "note": "from admin"})
    await other.flush()
    await p.update_user_data(1, {"name": "Ada Lovelace", "city": "London"})
    await p.flush()
    p = SharedSQLitePersistence(db)
    assert await p.get_user_data() == {1: {"name": "Ada Lovelace", "city": "London", "note": "from admin"}}
    await p.flush()


async def test_two_changes_by_another_program_between_saves_are_both_kept(db):
    """bot_data is saved every round, with or without updates; the second admin change used to
    be reverted by the third save."""
    app = application_builder(request=OfflineChat(stage1.build_application).api,
                              persistence=SharedSQLitePersistence(db)).build()
    async with app:
        app.bot_data.update({"motd": "v0"})
        await app.update_persistence()
        for n in (1, 2):
            raw_sql(db, "UPDATE bot_data SET data = json_set(data, '$.motd', ?)", (f"admin-{n}",))
            await app.update_persistence()
        await app.update_persistence()
        assert rows(db, "SELECT json_extract(data, '$.motd') FROM bot_data") == [("admin-2",)]
        await app.persistence.refresh_bot_data(app.bot_data)
        assert app.bot_data["motd"] == "admin-2"


async def test_a_save_respects_another_programs_delete(db):
    async with OfflineChat(stage1.build_application, lambda: SharedSQLitePersistence(db)) as chat:
        await chat.send("my phone is 555-0100")
        await chat.save()
        raw_sql(db, "DELETE FROM chat_data WHERE chat_id = ?", (ALICE.id,))
        chat.app.mark_data_for_update_persistence(chat_ids=ALICE.id)
        await chat.save()  # no update in between: the save itself must see the delete
        assert "555-0100" not in str(rows(db, "SELECT data FROM chat_data"))


async def test_one_unreadable_row_of_another_program_fails_only_its_own_write(db):
    p = SharedSQLitePersistence(db)
    await p.update_user_data(1, {"a": 1})
    await p.update_bot_data({"b": 1})
    raw_sql(db, "UPDATE user_data SET data = '{not json' WHERE user_id = 1")
    results = await asyncio.gather(p.update_user_data(1, {"a": 2}), p.update_bot_data({"b": 2}),
                                   p.update_chat_data(5, {"c": 1}), return_exceptions=True)
    assert isinstance(results[0], DatabaseFileError) and "user_data of user 1" in str(results[0])
    assert results[1:] == [None, None]
    await p.flush()
    assert rows(db, "SELECT data FROM bot_data") == [('{"b":2}',)]


async def test_a_change_of_type_by_another_program_is_a_change(db):
    """1 == 1.0 == True in Python; the merge must still see 1 -> True as a change."""
    async with OfflineChat(stage1.build_application, lambda: SharedSQLitePersistence(db)) as chat:
        chat.app.chat_data[ALICE.id].update({"enabled": 1, "ratio": 1})
        chat.app.mark_data_for_update_persistence(chat_ids=ALICE.id)
        await chat.save()
        raw_sql(db, "UPDATE chat_data SET data = json_set(data, '$.enabled', json('true'), '$.ratio', 1.0)")
        await chat.send("/show_data")
        await chat.save()
    stored = await stored_after_restart(db)
    assert same({k: stored[ALICE.id][k] for k in ("enabled", "ratio")}, {"enabled": True, "ratio": 1.0})
