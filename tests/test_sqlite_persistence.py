"""What ``SQLitePersistence`` promises beyond PTB's contract: exact JSON, clear errors, refresh
that never loses unsaved data, a file readers can query, and owner-only permissions."""

from __future__ import annotations

import asyncio
import collections
import datetime
import enum
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from telegram import Message
from telegram.ext import CommandHandler, ContextTypes, MessageHandler, filters
from test_persistence_contract import same

from bots import stage1_pickle_logger as stage1
from bots.offline import ALICE, BOB, OfflineChat, application_builder, group_chat
from persistence.sqlite import SCHEMA_VERSION, DatabaseFileError, DataNotStorableError, SQLitePersistence


def rows(path: Path, sql: str, params=()) -> list[tuple]:
    """Read the file the way a reader would, with the stdlib sqlite3 module."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


async def stored_after_restart(path: Path, cls: type[SQLitePersistence] = SQLitePersistence, **kwargs):
    """The chat data a fresh ``cls`` over ``path`` loads."""
    p = cls(path, **kwargs)
    try:
        return await p.get_chat_data()
    finally:
        await p.flush()


# ---------------------------------------------------------------------------------------------
# JSON mode: exact round trips, readable rows, clear refusals
# ---------------------------------------------------------------------------------------------
EXACT = [
    {1: "int key", "1": "str key", None: "none key", 2.5: "float key"},
    {"$looks": "like a tag", "$tuple": [1, 2]},
    {"deep": {2: {3: {(4, "five"): [6, (7,)]}}}},
    {"ints": [2**53 + 1, -(2**63), 2**100], "floats": [0.1, -0.0, 1e308, float("inf")]},
    {"empty": [(), [], {}, ""], "none": None, "bools": [True, False]},
]


@pytest.mark.parametrize("data", EXACT, ids=range(len(EXACT)))
async def test_json_round_trips_exactly(db, data):
    p = SQLitePersistence(db)
    await p.update_chat_data(1, data)
    await p.flush()
    assert same((await stored_after_restart(db))[1], data)


async def test_nan_round_trips(db):
    p = SQLitePersistence(db)
    await p.update_chat_data(1, {"x": float("nan")})
    await p.flush()
    value = (await stored_after_restart(db))[1]["x"]
    assert type(value) is float and value != value


async def test_rows_are_readable_json_for_sqlite3(db):
    async with OfflineChat(stage1.build_application, lambda: SQLitePersistence(db)) as chat:
        await chat.send("remember the milk")
        await chat.save()
        assert rows(db, "SELECT json_extract(data, '$.messages[0].message') FROM chat_data"
                        " WHERE chat_id = ?", (ALICE.id,)) == [("remember the milk",)]
    assert rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(db, "SELECT value FROM settings WHERE name = 'serializer'") == [("json",)]


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(("bad", "where", "kind"), [
    ({"when": [datetime.date(2024, 1, 1)]}, "['when'][0]", "datetime.date"),
    ({"tags": {"a", "b"}}, "['tags']", "builtins.set"),
    ({frozenset({1}): 1}, "a key of the top level", "builtins.frozenset"),
    ({"colour": Colour.RED}, "['colour']", "Colour"),
    ({"counts": collections.defaultdict(int)}, "['counts']", "collections.defaultdict"),
], ids=["date", "set", "key", "int-subclass", "dict-subclass"])
async def test_unstorable_data_is_refused_with_kind_id_and_place(db, bad, where, kind):
    """Refused at save time; that chat keeps what it had, the rest of the round is written."""
    p = SQLitePersistence(db)
    await p.update_chat_data(7, {"kept": "old"})
    results = await asyncio.gather(
        p.update_chat_data(7, bad), p.update_chat_data(8, {"fine": 1}), return_exceptions=True)
    assert isinstance(results[0], DataNotStorableError) and results[1] is None
    message = str(results[0])
    assert "chat_data of chat 7" in message and where in message and kind in message
    assert "serializer='pickle'" in message
    await p.flush()
    assert await stored_after_restart(db) == {7: {"kept": "old"}, 8: {"fine": 1}}


async def test_a_cycle_is_refused_clearly(db):
    cyclic: dict = {}
    cyclic["self"] = cyclic
    p = SQLitePersistence(db)
    with pytest.raises(DataNotStorableError, match="user_data of user 5: it nests too deeply"):
        await p.update_user_data(5, cyclic)
    await p.flush()


async def test_unstorable_data_reaches_the_error_handler_with_the_id(db):
    """Through Application: the failed write goes to the error handlers; the bot keeps running."""
    errors = []

    async def remember_date(update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.chat_data["when"] = update.effective_message.date

    async def on_error(update, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)

    def build(persistence=None, request=None, token=None):
        app = application_builder(token, request, persistence).build()
        app.add_handler(MessageHandler(filters.TEXT, remember_date))
        app.add_error_handler(on_error)
        return app

    async with OfflineChat(build, lambda: SQLitePersistence(db)) as chat:
        await chat.send("hello")
        await chat.send("hello", user=BOB)
        await chat.save()
    assert len(errors) == 2 and all(isinstance(e, DataNotStorableError) for e in errors)
    assert {str(ALICE.id), str(BOB.id)} <= {word for e in errors for word in str(e).split(":")[0].split()}


async def test_ten_megabytes_in_one_chat(db):
    big = {"messages": [{"message": "x" * 1000 + str(i), "message_ts": float(i)} for i in range(10_000)]}
    p = SQLitePersistence(db)
    await p.update_chat_data(1, big)
    await p.flush()
    assert rows(db, "SELECT length(data) > 10000000 FROM chat_data") == [(1,)]
    assert (await stored_after_restart(db))[1] == big


NASTY = "'; DROP TABLE conversations; -- \" \\ %_ \x00 ünïcødé 💥 $tuple"


async def test_sql_metacharacters_and_unicode_in_names_and_keys(db):
    p = SQLitePersistence(db)
    await p.update_conversation(NASTY, (NASTY, -1, "inline ✓"), NASTY)
    await p.update_chat_data(1, {NASTY: [NASTY], "$map": {NASTY: (NASTY,)}})
    await p.flush()
    p = SQLitePersistence(db)
    assert await p.get_conversations(NASTY) == {(NASTY, -1, "inline ✓"): NASTY}
    assert same((await p.get_chat_data())[1], {NASTY: [NASTY], "$map": {NASTY: (NASTY,)}})
    await p.update_conversation(NASTY, (NASTY, -1, "inline ✓"), None)
    assert await p.get_conversations(NASTY) == {}
    await p.flush()
    assert rows(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'conversations'") == [(1,)]


# ---------------------------------------------------------------------------------------------
# pickle mode
# ---------------------------------------------------------------------------------------------
async def test_pickle_mode_stores_anything_picklable(db):
    data = {"when": datetime.datetime(2024, 1, 2, 3, 4), "tags": {"a"}, "colour": Colour.RED}
    p = SQLitePersistence(db, serializer="pickle")
    await p.update_user_data(1, data)
    await p.flush()
    p = SQLitePersistence(db, serializer="pickle")
    assert same(await p.get_user_data(), {1: data})
    await p.flush()


async def test_pickle_mode_gives_telegram_objects_the_current_bot(db):
    async def keep_message(update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.user_data["message"] = update.effective_message

    async def reply_to_kept(update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await context.user_data["message"].reply_text("replying to what you said before")

    def build(persistence=None, request=None, token=None):
        app = application_builder(token, request, persistence).build()
        app.add_handler(CommandHandler("again", reply_to_kept))
        app.add_handler(MessageHandler(filters.TEXT, keep_message))
        return app

    async with OfflineChat(build, lambda: SQLitePersistence(db, serializer="pickle")) as chat:
        await chat.send("keep me")
        await chat.restart()
        kept = chat.app.user_data[ALICE.id]["message"]
        assert isinstance(kept, Message) and kept.text == "keep me"
        assert kept.get_bot() is chat.app.bot
        assert await chat.send("/again") == ["replying to what you said before"]


async def test_unpicklable_data_is_refused_with_the_id(db):
    p = SQLitePersistence(db, serializer="pickle")
    with pytest.raises(DataNotStorableError, match="chat_data of chat 3 with pickle"):
        await p.update_chat_data(3, {"lock": asyncio.Lock(), "f": lambda: 1})
    await p.flush()


# ---------------------------------------------------------------------------------------------
# the file: created owner-only, refused clearly when it is not ours, never changed by a refusal
# ---------------------------------------------------------------------------------------------
async def test_the_file_is_created_owner_only(db):
    p = SQLitePersistence(db)
    await p.update_chat_data(1, {"a": 1})
    for path in db.parent.iterdir():  # the database and its -wal/-shm files
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    await p.flush()


def make_foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.99)")
    conn.close()


def make_newer(path: Path) -> None:
    asyncio.run(_make_newer(path))


async def _make_newer(path: Path) -> None:
    p = SQLitePersistence(path)
    await p.update_chat_data(1, {"a": 1})
    await p.flush()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


def make_truncated(path: Path) -> None:
    asyncio.run(_make_newer(path))
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.executemany("INSERT INTO chat_data (chat_id, data) VALUES (?, ?)",
                         [(i, json.dumps({"pad": "x" * 3000})) for i in range(2, 60)])
    conn.close()
    path.write_bytes(path.read_bytes()[: 4096 * 3])


@pytest.mark.parametrize(("prepare", "expected"), [
    (lambda p: p.write_bytes(b"just some text, not a database" * 10), "cannot be used"),
    (make_foreign, "another program"),
    (make_newer, "newer SQLitePersistence"),
    (make_truncated, "cannot be used"),
], ids=["not-sqlite", "foreign", "newer", "truncated"])
async def test_an_unusable_file_is_refused_by_name_and_left_unchanged(db, prepare, expected):
    await asyncio.to_thread(prepare, db)
    before = db.read_bytes()
    p = SQLitePersistence(db)
    with pytest.raises(DatabaseFileError, match=expected) as info:
        await p.get_user_data()
        await p.get_chat_data()
    assert str(db) in str(info.value)
    await p.flush()
    assert db.read_bytes() == before


async def test_a_file_made_with_the_other_serializer_is_refused(db):
    p = SQLitePersistence(db)
    await p.update_bot_data({"a": 1})
    await p.flush()
    with pytest.raises(DatabaseFileError, match="serializer='json'"):
        await SQLitePersistence(db, serializer="pickle").get_bot_data()


async def test_a_path_that_cannot_be_created_is_refused_clearly(tmp_path):
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("I am a file")
    with pytest.raises(DatabaseFileError, match=r"Cannot create the database file .*a-file/bot\.sqlite3"):
        await SQLitePersistence(not_a_directory / "bot.sqlite3").get_user_data()


# ---------------------------------------------------------------------------------------------
# refresh: never lose unsaved data, pick up other programs' changes
# ---------------------------------------------------------------------------------------------
async def test_messages_between_saves_are_never_lost(db):
    """The article's bug 7, the other way round: refresh must not replace unsaved data."""
    async with OfflineChat(stage1.build_application, lambda: SQLitePersistence(db)) as chat:
        await chat.send("one")
        await chat.send("two")
        await chat.save()
        await chat.send("three")
        await chat.save()
        await chat.restart()
        assert [m["message"] for m in chat.app.chat_data[ALICE.id]["messages"]] == ["one", "two", "three"]


async def test_other_chats_are_not_refreshed_by_one_chats_update(db):
    async with OfflineChat(stage1.build_application, lambda: SQLitePersistence(db)) as chat:
        await chat.send("group note", chat=group_chat())
        await chat.save()
        assert await chat.send("/show_data", chat=group_chat()) != []


async def test_forget_leaves_no_byte_of_the_user_in_the_files(db):
    """After a drop is saved, the user's data is in neither the database, its free pages nor the
    WAL file - even after it was rewritten several times."""
    marker = "ZEBRA-7c1f-personal-data"
    async with OfflineChat(stage1.build_application, lambda: SQLitePersistence(db)) as chat:
        for n in range(5):
            await chat.send(f"{marker} {n}")
            await chat.save()
        assert any(marker.encode() in path.read_bytes() for path in db.parent.iterdir())
        chat.app.drop_chat_data(ALICE.id)
        chat.app.drop_user_data(ALICE.id)
        await chat.save()
        leftovers = [path.name for path in db.parent.iterdir() if marker.encode() in path.read_bytes()]
        assert leftovers == []


# ---------------------------------------------------------------------------------------------
# rows and transactions
# ---------------------------------------------------------------------------------------------
async def test_an_ended_conversation_leaves_no_row(db):
    p = SQLitePersistence(db)
    await p.update_conversation("form", (1, 2), 1)
    assert rows(db, "SELECT name, key, state FROM conversations") == [("form", "[1, 2]", "1")]
    await p.update_conversation("form", (1, 2), None)
    assert rows(db, "SELECT count(*) FROM conversations") == [(0,)]
    await p.flush()


async def test_a_save_round_is_one_transaction(db):
    """Every write of a round lands in one commit: a reader sees all of them or none."""
    p = SQLitePersistence(db)
    await p.update_bot_data({})
    commits = []
    conn = await p._connection()  # the test looks inside: count the COMMITs on this connection
    await conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    await asyncio.gather(*(p.update_chat_data(i, {"n": i}) for i in range(100)), p.update_bot_data({"r": 1}))
    assert commits == ["COMMIT"]
    await p.flush()


async def test_async_with_app_twice_on_one_instance(db):
    persistence = SQLitePersistence(db)
    app = stage1.build_application(persistence=persistence, request=OfflineChat(stage1.build_application).api)
    async with app:
        app.chat_data[1]["x"] = 1
        app.mark_data_for_update_persistence(chat_ids=1)
    async with app:
        assert app.chat_data[1] == {"x": 1}


# ---------------------------------------------------------------------------------------------
# regressions found in review: each of these lost data or blocked saves once
# ---------------------------------------------------------------------------------------------
def raw_sql(path: Path, sql: str, params=()) -> None:
    """Another program writing with the stdlib sqlite3 module."""
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)
    conn.close()


@pytest.mark.parametrize("bad", [{"n": 10 ** 5000}, {"s": "lone \ud800 surrogate"}],
                         ids=["huge-int", "surrogate"])
async def test_odd_values_fail_alone_or_round_trip(db, bad):
    p = SQLitePersistence(db)
    results = await asyncio.gather(p.update_chat_data(1, bad), p.update_chat_data(2, {"ok": 1}),
                                   return_exceptions=True)
    assert results[1] is None
    if isinstance(results[0], Exception):
        assert isinstance(results[0], DataNotStorableError) and "chat_data of chat 1" in str(results[0])
    await p.flush()
    stored = await stored_after_restart(db)
    assert stored[2] == {"ok": 1}
    assert 1 not in stored or same(stored[1], bad)


async def test_pickled_telegram_objects_do_not_name_this_module(db):
    """Readers copy and rename this file: rows must not depend on its import path."""
    async with OfflineChat(stage1.build_application,
                           lambda: SQLitePersistence(db, serializer="pickle")) as chat:
        await chat.send("hello")
        chat.app.user_data[ALICE.id]["message"] = Message.de_json(
            {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}, "text": "hi"}, chat.app.bot)
        await chat.save()
    [(blob,)] = rows(db, "SELECT data FROM user_data")
    assert b"persistence" not in blob and b"_rebuild" not in blob


async def test_a_failed_start_leaves_no_connection_open(tmp_path):
    """initialize() failing must not keep the process alive: PTB never calls flush() then.
    (Run in a subprocess: a hang there is a timeout here.)"""
    db = tmp_path / "bot.sqlite3"
    script = (
        "import asyncio, sqlite3, sys\n"
        "from bots import stage3_sqlite_logger as s\n"
        "from bots.offline import OfflineChat\n"
        "from persistence.sqlite import SQLitePersistence, DatabaseFileError\n"
        "async def main():\n"
        "    p = SQLitePersistence(sys.argv[1]); await p.update_chat_data(1, {'a': 1}); await p.flush()\n"
        "    with sqlite3.connect(sys.argv[1]) as c: c.execute(\"UPDATE chat_data SET data = '{bad'\")\n"
        "    try:\n"
        "        await OfflineChat(s.build_application, lambda: SQLitePersistence(sys.argv[1])).start()\n"
        "    except DatabaseFileError: print('refused')\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script, str(db)],
                                     capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "refused", result.stderr


async def test_a_row_another_program_changed_is_overwritten_only_with_a_warning_naming_it(db):
    """One bot process owns the file: a change behind its back is not merged, but never silently
    overwritten either - the warning names the row and the class that merges."""
    p = SQLitePersistence(db)
    await p.update_user_data(1, {"name": "Ada"})
    await p.update_user_data(2, {"name": "Bob"})
    raw_sql(db, "UPDATE user_data SET data = json_set(data, '$.note', 'admin') WHERE user_id = 1")
    with pytest.warns(RuntimeWarning, match=r"user_data of user 1 .*SharedSQLitePersistence") as caught:
        await asyncio.gather(p.update_user_data(1, {"name": "Ada L"}), p.update_user_data(2, {"name": "B"}))
    assert len(caught) == 1
    await p.flush()
    stored = rows(db, "SELECT data FROM user_data ORDER BY user_id")
    assert stored == [('{"name":"Ada L"}',), ('{"name":"B"}',)]


async def test_a_path_in_a_missing_directory_names_the_directory(tmp_path):
    with pytest.raises(DatabaseFileError, match=r"the directory .*no-such-dir does not exist\. Create it"):
        await SQLitePersistence(tmp_path / "no-such-dir" / "bot.sqlite3").get_bot_data()
    assert not (tmp_path / "no-such-dir").exists()
