"""What an adversarial review of the SQLite classes found, one test each (each failed before its fix),
and the parity with ``PicklePersistence`` found by running other projects' persistence tests."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import struct
from pathlib import Path

import pytest
from telegram import Bot, Message
from telegram.ext import ContextTypes
from test_sqlite_persistence import raw_sql, rows

from bots.offline import OfflineBotAPI, application_builder
from persistence import SharedSQLitePersistence, SQLitePersistence
from persistence.sqlite import DatabaseFileError, decode_json


async def load_chats(path: Path, cls: type[SQLitePersistence] = SQLitePersistence, **kwargs) -> dict:
    p = cls(path, **kwargs)
    try:
        return await p.get_chat_data()
    finally:
        await p.flush()


async def bot_over(persistence: SQLitePersistence):
    """A started Application (no handlers needed) over ``persistence``, for direct data edits."""
    app = application_builder(request=OfflineBotAPI(), persistence=persistence).build()
    await app.initialize()
    return app


async def save_chat(app, **changes) -> None:
    """Chat 1's data gets ``changes`` and is saved, as after a handler."""
    app.chat_data[1].update(changes)
    app.mark_data_for_update_persistence(chat_ids=1)
    await app.update_persistence()


class Note:
    """A value without value equality (``==`` is identity), as many classes in pickle mode are."""

    def __init__(self, text: str) -> None:
        self.text = text


# ---- the merge: another program's change must never be reverted ------------------------------------
async def test_another_programs_change_to_a_value_holding_a_nan_is_kept(db):
    app = await bot_over(SharedSQLitePersistence(db))
    try:
        await save_chat(app, k=[float("nan"), 1], mine=1)
        raw_sql(db, """UPDATE chat_data SET data = '{"k":[{"$float":"nan"},2],"mine":1}'""")
        await save_chat(app, mine=2)
    finally:
        await app.shutdown()
    stored = (await load_chats(db))[1]
    assert stored["k"][1] == 2 and stored["mine"] == 2


async def test_in_pickle_mode_another_programs_change_to_an_object_without_equality_is_kept(db):
    app = await bot_over(SharedSQLitePersistence(db, serializer="pickle"))
    try:
        await save_chat(app, note=Note("bot"), mine=1)
        admin = SharedSQLitePersistence(db, serializer="pickle")
        chats = await admin.get_chat_data()
        chats[1]["note"] = Note("admin")
        await admin.update_chat_data(1, chats[1])
        await admin.flush()
        await save_chat(app, mine=2)
    finally:
        await app.shutdown()
    stored = (await load_chats(db, serializer="pickle"))[1]
    assert stored["note"].text == "admin" and stored["mine"] == 2


async def test_a_row_replaced_with_its_old_version_is_still_noticed(db):
    """``INSERT OR REPLACE`` of a row read earlier keeps the version; the insert trigger bumps it."""
    app = await bot_over(SharedSQLitePersistence(db))
    try:
        await save_chat(app, mine=1)
        [(version,)] = rows(db, "SELECT version FROM chat_data")
        raw_sql(db, "INSERT OR REPLACE INTO chat_data VALUES (1, ?, ?)", ('{"mine":1,"lang":"de"}', version))
        await save_chat(app, mine=2)
    finally:
        await app.shutdown()
    assert (await load_chats(db))[1] == {"mine": 2, "lang": "de"}


async def test_the_core_warns_about_a_replaced_row_it_overwrites(db):
    p = SQLitePersistence(db)
    await p.update_chat_data(1, {"mine": 1})
    [(version,)] = rows(db, "SELECT version FROM chat_data")
    raw_sql(db, "INSERT OR REPLACE INTO chat_data VALUES (1, '{\"lang\":\"de\"}', ?)", (version,))
    with pytest.warns(RuntimeWarning, match="chat_data of chat 1"):
        await p.update_chat_data(1, {"mine": 2})
    await p.flush()


REBUILD = """
CREATE TABLE chat_data_new (chat_id INTEGER PRIMARY KEY, data NOT NULL, version INTEGER NOT NULL);
INSERT INTO chat_data_new SELECT chat_id, data, version FROM chat_data;
DROP TABLE chat_data;
ALTER TABLE chat_data_new RENAME TO chat_data;
UPDATE chat_data SET data = json_set(data, '$.lang', 'de');
"""


async def test_an_edit_in_a_table_rebuilt_without_its_triggers_is_kept_and_the_triggers_come_back(db):
    app = await bot_over(SharedSQLitePersistence(db))
    try:
        await save_chat(app, mine=1)
        with sqlite3.connect(db) as conn:
            conn.executescript(REBUILD)  # the edit keeps the version: no trigger any more
        conn.close()
        await save_chat(app, mine=2)
    finally:
        await app.shutdown()
    assert (await load_chats(db))[1] == {"mine": 2, "lang": "de"}
    triggers = {name for (name,) in rows(db, "SELECT name FROM sqlite_schema WHERE type = 'trigger'")}
    assert {"chat_data_version", "chat_data_insert"} <= triggers


async def test_an_instance_reused_after_flush_forgets_what_it_knew(db):
    """A row deleted by another program while the bot was stopped: a fresh value equal to the old
    one must be saved, not merged away against the stale row."""
    persistence = SharedSQLitePersistence(db)
    app = await bot_over(persistence)
    app.chat_data[1]["lang"] = "de"
    app.mark_data_for_update_persistence(chat_ids=1)
    await app.shutdown()
    raw_sql(db, "DELETE FROM chat_data")
    await app.initialize()  # the same instance, again
    try:
        app.chat_data[1]["lang"] = "de"
        app.mark_data_for_update_persistence(chat_ids=1)
        await app.update_persistence()
    finally:
        await app.shutdown()
    assert (await load_chats(db))[1] == {"lang": "de"}


# ---- the codec and the file --------------------------------------------------------------------------
async def test_a_tag_with_extra_keys_is_refused_not_reinterpreted(db):
    """A program adding a key to a ``$map`` row (json_set) must not make the int keys vanish."""
    p = SQLitePersistence(db)
    await p.update_chat_data(1, {1: "one", 2: "two"})
    await p.flush()
    raw_sql(db, "UPDATE chat_data SET data = json_set(data, '$.note', 'x')")
    with pytest.raises(DatabaseFileError, match=r"chat_data of chat 1 .*not a tag"):
        await load_chats(db)


def test_a_tag_whose_dollar_another_program_escaped_is_still_a_tag():
    """JSON may spell ``$`` as ``\\u0024``: such a key is a tag too (read as one, or refused)."""
    assert decode_json('{"\\u0024tuple": [1, 2]}', "row") == (1, 2)
    with pytest.raises(DatabaseFileError, match="not a tag"):
        decode_json('{"\\u0024map": [[1, 2]], "note": "x"}', "row")
    assert decode_json('{"a": "C:\\\\u0024"}', "row") == {"a": "C:\\u0024"}  # a value: plain text


async def test_two_code_points_that_look_like_a_surrogate_pair_stay_two(db):
    p = SQLitePersistence(db)
    await p.update_chat_data(1, {"s": "\ud83d\ude00", "\udc00key": ["\ud800"]})
    await p.flush()
    stored = (await load_chats(db))[1]
    assert stored == {"s": "\ud83d\ude00", "\udc00key": ["\ud800"]} and len(stored["s"]) == 2


@pytest.mark.parametrize("damage", [b"\x80\x05\x8e" + struct.pack("<Q", 2**40) + b".",
                                    b"\x80\x05\x8e\xff\xff\xff\xff\xff\xff\xff\x7f",
                                    b"\x80\x05J\x01\x00\x00\x00\x94h\x00K\x01\x85R."],
                         ids=["MemoryError", "OverflowError", "TypeError"])
async def test_a_damaged_pickle_row_is_a_database_file_error_naming_it(db, damage):
    p = SQLitePersistence(db, serializer="pickle")
    await p.update_chat_data(7, {"ok": 1})
    await p.flush()
    raw_sql(db, "UPDATE chat_data SET data = ?", (damage,))
    with pytest.raises(DatabaseFileError, match="chat_data of chat 7"):
        await load_chats(db, serializer="pickle")


async def test_a_dangling_symlink_gets_an_owner_only_file(tmp_path):
    target = tmp_path / "real" / "bot.sqlite3"
    target.parent.mkdir()
    link = tmp_path / "bot.sqlite3"
    link.symlink_to(target)
    p = SQLitePersistence(link)
    await p.update_chat_data(1, {"a": 1})
    await p.flush()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert (await load_chats(link))[1] == {"a": 1}


@pytest.mark.parametrize("path", [":memory:", "", "file:bot?mode=memory"])
def test_an_in_memory_database_is_refused_clearly(path):
    with pytest.raises(ValueError, match="needs the path of a file"):
        SQLitePersistence(path)


# ---- parity with PicklePersistence -------------------------------------------------------------------
class BotData(dict):
    """An application's own bot_data class."""


async def test_context_types_with_a_bot_data_class_start_on_a_new_file(db):
    context_types = ContextTypes(bot_data=BotData)
    persistence = SQLitePersistence(db, serializer="pickle", context_types=context_types)
    app = (application_builder(request=OfflineBotAPI(), persistence=persistence)
           .context_types(context_types).build())
    async with app:
        assert type(app.bot_data) is BotData
        app.bot_data["n"] = 1
    async with app:
        assert type(app.bot_data) is BotData and app.bot_data == {"n": 1}


@pytest.mark.parametrize("key", ['{"a": 1}', "[1.5]", "[[1]]", "not json", "7"])
async def test_a_conversation_key_that_is_not_a_list_of_int_and_str_is_refused(db, key):
    p = SQLitePersistence(db)
    await p.update_conversation("form", (1, 2), 1)
    await p.flush()
    raw_sql(db, "UPDATE conversations SET key = ?", (key,))
    p = SQLitePersistence(db)
    with pytest.raises(DatabaseFileError, match="conversation 'form' key"):
        await p.get_conversations("form")
    await p.flush()


async def test_a_telegram_object_of_another_bot_is_stored_without_it_with_a_warning(db):
    persistence = SQLitePersistence(db, serializer="pickle")
    app = await bot_over(persistence)
    try:
        other = Bot("123:other")
        app.chat_data[1]["message"] = Message.de_json(
            {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}, "text": "hi"}, other)
        with pytest.warns(RuntimeWarning, match="bot other than the application's"):
            await persistence.update_chat_data(1, app.chat_data[1])
    finally:
        await app.shutdown()
    message = (await load_chats(db, serializer="pickle"))[1]["message"]
    assert message.text == "hi"
    with pytest.raises(RuntimeError):
        message.get_bot()


async def test_unchanged_bot_and_callback_data_are_not_written_again(db):
    p = SQLitePersistence(db)
    await asyncio.gather(p.update_bot_data({"a": 1}), p.update_callback_data(([], {})))
    before = rows(db, "SELECT version FROM bot_data UNION ALL SELECT version FROM callback_data")
    conn = await p._connection()  # the test looks inside: count the transactions
    commits: list[str] = []
    await conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    for _ in range(3):
        await asyncio.gather(p.update_bot_data({"a": 1}), p.update_callback_data(([], {})))
    assert commits == []
    assert rows(db, "SELECT version FROM bot_data UNION ALL SELECT version FROM callback_data") == before
    await p.update_bot_data({"a": 2})
    assert commits == ["COMMIT"]
    await p.flush()


# ---- drops: when "no byte is left" holds ------------------------------------------------------------
@pytest.mark.parametrize("their_secure_delete", ["OFF", "ON"])
async def test_a_drop_erases_what_another_program_wrote_only_if_it_wrote_with_secure_delete(
        db, their_secure_delete):
    """The documented limit of the drop's promise: the bot zeroes what it deletes, but an older
    version of the row that another program replaced with secure_delete off stays in free pages."""
    marker = "WALRUS-5d2e-admin-wrote-this"
    app = await bot_over(SQLitePersistence(db))
    try:
        for chat_id in (2, 3, 4):  # other chats share the page (an empty page is zeroed whole)
            app.chat_data[chat_id]["note"] = f"chat {chat_id}"
            app.mark_data_for_update_persistence(chat_ids=chat_id)
        await save_chat(app, note="the bot's own")
        with sqlite3.connect(db) as other:  # another program edits the row twice, its own way
            other.execute(f"PRAGMA secure_delete = {their_secure_delete}")
            other.execute("UPDATE chat_data SET data = json_set(data, '$.admin', ?) WHERE chat_id = 1",
                          (marker * 400,))  # (over a page: its old version goes to free pages)
            other.commit()
            other.execute("UPDATE chat_data SET data = json_set(data, '$.admin', 'shorter')"
                          " WHERE chat_id = 1")
            other.commit()
        app.drop_chat_data(1)
        await app.update_persistence()
    finally:
        await app.shutdown()
    assert sorted(await load_chats(db)) == [2, 3, 4]
    left = [path.name for path in db.parent.iterdir() if marker.encode() in path.read_bytes()]
    assert (left != []) == (their_secure_delete == "OFF")
