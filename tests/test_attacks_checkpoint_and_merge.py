"""Two attacks of the adversarial review (issue 10, item 5), tried against the public behaviour:

* another program holds a read open while a drop is saved, so the checkpoint that scrubs the WAL
  file fails: the committed save must still succeed, the connection must keep waiting for locks
  as configured, and the dropped data must leave every byte of the files at the first save after
  the reader lets go;
* a save and a refresh of ``SharedSQLitePersistence`` that merge another program's change to a
  very large row must decode and encode it outside the event loop's thread.
"""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bots.offline import ALICE, OfflineBotAPI, OfflineChat, application_builder
from persistence import SharedSQLitePersistence, SQLitePersistence

CLASSES = [SQLitePersistence, SharedSQLitePersistence]


async def started_bot(persistence: SQLitePersistence) -> tuple[Application, list[BaseException]]:
    """A real Application over ``persistence`` (initialized: the data is loaded) and the list its
    error handler fills: PTB hands a failed save to the error handlers, it does not raise it."""
    app = application_builder(request=OfflineBotAPI(), persistence=persistence).build()
    errors: list[BaseException] = []

    async def record(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.error is not None
        errors.append(context.error)

    app.add_error_handler(record)
    await app.initialize()
    return app, errors


def files_holding(db: Path, marker: str) -> list[str]:
    """The names of the database's files (the file, its -wal and -shm) whose bytes hold ``marker``."""
    return sorted(path.name for path in db.parent.glob(db.name + "*")
                  if marker.encode() in path.read_bytes())


async def stored_users(db: Path, cls: type[SQLitePersistence]) -> dict:
    """What a fresh instance over ``db`` loads: the file as the next start of the bot sees it."""
    fresh = cls(db)
    try:
        return await fresh.get_user_data()
    finally:
        await fresh.flush()


# ---- a failed wal_checkpoint after a drop's COMMIT --------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
async def test_a_drop_saved_while_another_program_reads_is_scrubbed_once_it_lets_go(db, cls):
    marker = "OKAPI-5e3a-forget-me"
    app, errors = await started_bot(cls(db))
    reader = locker = None
    try:
        app.user_data[1]["diary"] = f"{marker} my secret"
        app.user_data[2]["diary"] = "another user, kept"
        app.mark_data_for_update_persistence(user_ids=[1, 2])
        await app.update_persistence()
        assert errors == []

        # another program (a backup, a web panel) reads the file and keeps its read open
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM user_data").fetchone() == (2,)

        app.drop_user_data(1)
        await app.update_persistence()
        assert errors == [], "the drop was committed: its save must not be reported as failed"
        assert 1 not in await stored_users(db, cls)
        # the reader pins the WAL file: the user cannot be scrubbed yet (this is what makes the
        # last assertion of this test mean something)
        assert files_holding(db, marker) != []

        # (a) the bot still waits busy_timeout for another writer, as before the failed checkpoint
        locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN IMMEDIATE")
        waited = []

        def let_go() -> None:
            waited.append(not save.done())  # the save is still waiting for the lock
            locker.execute("ROLLBACK")

        app.user_data[2]["diary"] = "written while another program held the write lock"
        app.mark_data_for_update_persistence(user_ids=2)
        save = asyncio.create_task(app.update_persistence())
        timer = threading.Timer(0.3, let_go)  # another program's write that lasts 0.3 s
        timer.start()
        await save
        timer.join()
        assert errors == [], "the save must wait for the lock (busy_timeout), not fail at once"
        assert waited == [True]
        assert (await stored_users(db, cls))[2]["diary"].startswith("written while")

        # (b) the reader lets go: the next save (of anything) scrubs the dropped user
        reader.execute("ROLLBACK")
        app.user_data[2]["visits"] = 1
        app.mark_data_for_update_persistence(user_ids=2)
        await app.update_persistence()
        assert errors == []
        assert files_holding(db, marker) == []  # checked before shutdown: closing scrubs anyway
    finally:
        for conn in (reader, locker):
            if conn is not None:
                conn.close()
        await app.shutdown()
    assert set(await stored_users(db, cls)) == {2}


# ---- the merge of a very large row runs outside the event loop's thread ------------------------------
CHAT = ALICE.id  # the private chat of the OfflineChat's user
EVENTS: list[tuple[str, int]] = []  # (what happened to a Probe, the id of the thread it happened in)


class Probe:
    """A value that notes the thread in which it is pickled (``encode``) and unpickled
    (``decode``): inside a row, it shows which thread encoded and decoded the row."""

    def __getstate__(self) -> dict[str, str]:
        EVENTS.append(("encode", threading.get_ident()))
        return {"label": "probe"}

    def __setstate__(self, state: dict[str, str]) -> None:
        EVENTS.append(("decode", threading.get_ident()))
        self.__dict__.update(state)

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        return self  # PTB's copy of the data for a save is not an encode


def build_application(token: str | None = None, persistence: Any = None, request: Any = None) -> Application:
    """A bot whose handler matches every text: PTB refreshes the chat's data before it runs."""
    app = application_builder(token, request, persistence).build()
    app.add_handler(MessageHandler(filters.TEXT, seen))
    return app


async def seen(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The handler: it needs nothing but the refresh PTB does before it."""


def other_program_writes(db: Path, value: Any) -> None:
    """Another program replaces the chat's row with its own pickled ``value`` (run in a thread)."""
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE chat_data SET data = ? WHERE chat_id = ?", (pickle.dumps(value), CHAT))


def threads(kind: str) -> list[int]:
    """The threads in which a Probe was encoded or decoded (``kind``) since EVENTS was cleared."""
    return [thread for what, thread in EVENTS if what == kind]


async def test_the_merge_of_a_large_pickled_row_decodes_and_encodes_outside_the_event_loop(db):
    big = "x" * 30_000_000  # a 30 MB row: the case of the review (a stall of seconds at 100 MB)
    loop_thread = threading.get_ident()
    make = lambda: SharedSQLitePersistence(db, serializer="pickle")  # noqa: E731
    async with OfflineChat(build_application, make) as chat:
        app = chat.app
        app.chat_data[CHAT].update(probe=Probe(), big=big, n=0)
        app.mark_data_for_update_persistence(chat_ids=CHAT)
        await chat.save()
        theirs = {"probe": Probe(), "big": big, "n": 0, "admin1": "from the panel"}
        await asyncio.to_thread(other_program_writes, db, theirs)

        # a save merges the other program's key into the row it writes
        EVENTS.clear()
        app.chat_data[CHAT]["n"] = 1  # changed without a refresh (a job, say)
        app.mark_data_for_update_persistence(chat_ids=CHAT)
        await chat.save()
        assert threads("decode"), "the save did not read the other program's row: no merge happened"
        assert loop_thread not in threads("decode") + threads("encode")

        # a refresh takes the other program's next change into the live data
        theirs.update(n=1, admin2="from the panel again")
        await asyncio.to_thread(other_program_writes, db, theirs)
        EVENTS.clear()
        await chat.send("hello")
        assert threads("decode"), "the refresh did not read the other program's row"
        assert loop_thread not in threads("decode") + threads("encode")
        live = app.chat_data[CHAT]
        assert (live["n"], live["admin1"], live["admin2"]) == (1, "from the panel", "from the panel again")
        assert live["big"] == big
    p = make()
    stored = (await p.get_chat_data())[CHAT]
    await p.flush()
    assert (stored["n"], stored["admin1"], stored["admin2"]) == (1, "from the panel", "from the panel again")
