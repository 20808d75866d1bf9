"""Two attacks of the adversarial review (issue 10, item 5), tried against the public behaviour:

* another program holds a read open while a drop is saved, so the checkpoint that scrubs the WAL
  file fails: the committed save must still succeed, the connection must keep waiting for locks
  as configured, and the dropped data must leave every byte of the files at the first save after
  the reader lets go;
* a save and a refresh of ``SharedSQLitePersistence`` that merge another program's change to a
  very large row must decode and encode it outside the event loop's thread - also when a refresh
  lands while a save is under way - and the event loop keeps running other tasks meanwhile.
  Pickle mode: a Probe value in the row records the threads that pickle and unpickle it; JSON
  mode: the persistence's public ``encode``/``decode``, watched by a subclass, and a ticker task.
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
PAUSED_ENCODES: list[tuple[threading.Event, threading.Event]] = []  # (reached, go) for the next encode


class Probe:
    """A value that notes the thread in which it is pickled (``encode``) and unpickled
    (``decode``): inside a row, it shows which thread encoded and decoded the row. An encode can
    be held: it sets ``reached`` and waits for ``go`` (see :data:`PAUSED_ENCODES`)."""

    def __getstate__(self) -> dict[str, str]:
        EVENTS.append(("encode", threading.get_ident()))
        if PAUSED_ENCODES:
            reached, go = PAUSED_ENCODES.pop()
            reached.set()
            go.wait(timeout=60)
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


def on_the_event_loop() -> list[str]:
    """What happened to a Probe in this thread - the test's, the event loop's - since EVENTS was
    cleared (call it from the test)."""
    return [what for what, thread in EVENTS if thread == threading.get_ident()]


def pickle_bot(db: Path) -> OfflineChat:
    """The bot over a SharedSQLitePersistence in pickle mode (a Probe can be stored)."""
    return OfflineChat(build_application, lambda: SharedSQLitePersistence(db, serializer="pickle"))


async def save_chat(chat: OfflineChat, **changes: Any) -> None:
    """The chat's data gets ``changes`` (without a refresh: a job, say) and the bot saves."""
    assert chat.app is not None
    chat.app.chat_data[CHAT].update(changes)
    chat.app.mark_data_for_update_persistence(chat_ids=CHAT)
    await chat.save()


async def stored_chat(p: SQLitePersistence) -> dict[str, Any]:
    """The chat's data as ``p``, a fresh instance, loads it from the file."""
    try:
        return (await p.get_chat_data())[CHAT]
    finally:
        await p.flush()


async def test_the_merge_of_a_large_pickled_row_decodes_and_encodes_outside_the_event_loop(db):
    big = "x" * 30_000_000  # a 30 MB row: the case of the review (a stall of seconds at 100 MB)
    async with pickle_bot(db) as chat:
        await save_chat(chat, probe=Probe(), big=big, n=0)
        theirs = {"probe": Probe(), "big": big, "n": 0, "admin1": "from the panel"}
        await asyncio.to_thread(other_program_writes, db, theirs)

        EVENTS.clear()  # a save merges the other program's key into the row it writes
        await save_chat(chat, n=1)
        assert "decode" in [what for what, _ in EVENTS], "the save merged nothing"
        assert on_the_event_loop() == []

        theirs.update(n=1, admin2="from the panel again")
        await asyncio.to_thread(other_program_writes, db, theirs)
        EVENTS.clear()  # a refresh takes the other program's next change into the live data
        await chat.send("hello")
        assert "decode" in [what for what, _ in EVENTS], "the refresh merged nothing"
        assert on_the_event_loop() == []
        live = chat.app.chat_data[CHAT]
        assert (live["n"], live["admin1"], live["admin2"]) == (1, "from the panel", "from the panel again")
        assert live["big"] == big
    stored = await stored_chat(SharedSQLitePersistence(db, serializer="pickle"))
    assert (stored["n"], stored["admin1"], stored["admin2"]) == (1, "from the panel", "from the panel again")


async def test_a_refresh_landing_while_a_save_is_encoding_does_not_make_it_encode_on_the_event_loop(db):
    """PTB copies the data for a save before a refresh takes another program's key into the live
    data; the save then writes that key too (it must not undo the other program's change), so it
    encodes the row once more: outside the event loop's thread too."""
    big = "x" * 30_000_000
    async with pickle_bot(db) as chat:
        await save_chat(chat, probe=Probe(), big=big, n=0)
        await asyncio.to_thread(other_program_writes, db, {"probe": Probe(), "big": big, "n": 0,
                                                            "admin": "from the panel"})
        EVENTS.clear()
        reached, go = threading.Event(), threading.Event()
        PAUSED_ENCODES.append((reached, go))
        save = asyncio.create_task(save_chat(chat, n=1))  # PTB copies the data, the save encodes it...
        try:
            assert await asyncio.to_thread(reached.wait, 60)  # ... and is held in that encode
            await chat.send("hello")  # meanwhile a refresh takes the other program's key
            assert chat.app.chat_data[CHAT]["admin"] == "from the panel"
        finally:
            go.set()
            PAUSED_ENCODES.clear()
        await save
        assert on_the_event_loop() == []
        with closing(sqlite3.connect(db)) as conn:  # what that save wrote: with the taken key
            [(data,)] = conn.execute("SELECT data FROM chat_data WHERE chat_id = ?", (CHAT,))
        saved = pickle.loads(data)
        assert (saved["n"], saved["admin"]) == (1, "from the panel")


class Watched(SharedSQLitePersistence):
    """Notes every encode and decode of a large row (its public codec methods): the thread it ran
    in, and how many times the event loop ticked meanwhile (``ticks`` is counted by a task)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.ticks = 0
        self.calls: list[tuple[str, int, int]] = []  # (encode or decode, thread id, ticks meanwhile)

    def encode(self, value: Any, what: str) -> str | bytes:
        start = self.ticks
        stored = super().encode(value, what)
        if len(stored) > 10_000_000:
            self.calls.append(("encode", threading.get_ident(), self.ticks - start))
        return stored

    def decode(self, stored: str | bytes, what: str) -> Any:
        start = self.ticks
        value = super().decode(stored, what)
        if len(stored) > 10_000_000:
            self.calls.append(("decode", threading.get_ident(), self.ticks - start))
        return value


def other_program_sets(db: Path, name: str, value: str) -> None:
    """Another program sets one top-level key of the chat's JSON row, in SQL (run in a thread)."""
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE chat_data SET data = json_set(data, ?, ?) WHERE chat_id = ?",
                     (f"$.{name}", value, CHAT))


def ran_off_the_loop_while_it_ticked(calls: list[tuple[str, int, int]]) -> None:
    """Checks the codec calls of one merge: it decoded, in threads other than this one (the
    event loop's), and the event loop ran other tasks meanwhile."""
    assert "decode" in [kind for kind, _, _ in calls], "nothing was merged"
    assert [kind for kind, thread, _ in calls if thread == threading.get_ident()] == [], calls
    assert sum(ticks for _, _, ticks in calls) > 0, calls


@pytest.mark.slow
async def test_the_event_loop_keeps_running_while_a_100_mb_json_row_is_merged(db):
    notes = [{"text": "x" * 1000, "n": n} for n in range(100_000)]  # ~100 MB of JSON
    p = Watched(db)

    async def ticker() -> None:  # another task of the bot: a job, another chat's update
        while True:
            p.ticks += 1
            await asyncio.sleep(0.001)

    async with OfflineChat(build_application, lambda: p) as chat:
        ticking = asyncio.create_task(ticker())
        try:
            await save_chat(chat, notes=notes, by_id={1: "one"}, n=0)  # int keys: a tagged row
            await asyncio.to_thread(other_program_sets, db, "admin1", "from the panel")
            p.calls = []
            await save_chat(chat, n=1)  # merges the other program's key into the row it writes
            ran_off_the_loop_while_it_ticked(p.calls)

            await asyncio.to_thread(other_program_sets, db, "admin2", "from the panel again")
            p.calls = []
            await chat.send("hello")  # a refresh takes the other program's next change
            ran_off_the_loop_while_it_ticked(p.calls)
            live = chat.app.chat_data[CHAT]
            assert (live["n"], live["admin1"], live["admin2"]) == (1, "from the panel",
                                                                  "from the panel again")
        finally:
            ticking.cancel()
    stored = await stored_chat(SharedSQLitePersistence(db))
    assert (stored["n"], stored["admin1"], stored["admin2"]) == (1, "from the panel", "from the panel again")
    assert stored["notes"] == notes and stored["by_id"] == {1: "one"}
