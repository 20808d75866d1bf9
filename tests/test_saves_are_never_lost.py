"""A save is never lost, and one bad write fails alone - for both SQLite classes.

A round that cannot be written (another process holds the write lock past ``busy_timeout``, the
disk is full) keeps its writes and writes them again at the next round and at ``flush()``; a
``flush()`` that still cannot write says what is unsaved. Writes that can never be stored (an id
that is not a 64-bit int, a conversation key that is not int/str) are refused before the
transaction starts, and the rest of their round is committed.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from telegram.ext import ContextTypes

from bots.offline import OfflineBotAPI, application_builder
from persistence import SharedSQLitePersistence, SQLitePersistence
from persistence.sqlite import DataNotStorableError, SaveFailedError

CLASSES = pytest.mark.parametrize("cls", [SQLitePersistence, SharedSQLitePersistence],
                                  ids=["core", "shared"])

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@asynccontextmanager
async def write_lock_held_by_another_process(path: Path) -> AsyncIterator[None]:
    """Another process holds ``BEGIN IMMEDIATE`` on ``path`` until the block ends."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD_LOCK, str(path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert await holder.stdout.readline() == b"locked\n"
        yield
    finally:
        holder.stdin.write(b"release\n")
        await holder.stdin.drain()
        async with asyncio.timeout(30):
            assert await holder.wait() == 0


async def loaded(cls: type[SQLitePersistence], path: Path) -> tuple[dict, dict, dict]:
    p = cls(path)
    try:
        return await p.get_user_data(), await p.get_chat_data(), await p.get_bot_data()
    finally:
        await p.flush()


@CLASSES
async def test_a_round_blocked_past_busy_timeout_is_written_at_shutdown(db, cls):
    errors: list[BaseException] = []

    async def collect(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.error is not None
        errors.append(context.error)

    app = application_builder(request=OfflineBotAPI(), persistence=cls(db, busy_timeout=0.2)).build()
    app.add_error_handler(collect)
    async with app:
        app.chat_data[1]["n"] = 1
        app.user_data[2]["name"] = "Ada"
        app.bot_data["motd"] = "hello"
        app.mark_data_for_update_persistence(chat_ids=1, user_ids=2)
        await app.update_persistence()
        assert errors == []
        async with write_lock_held_by_another_process(db):
            app.chat_data[1]["n"] = 2
            app.chat_data[3]["new"] = True
            app.drop_user_data(2)
            app.bot_data["motd"] = "changed while locked"
            app.mark_data_for_update_persistence(chat_ids=[1, 3])
            await app.update_persistence()  # PTB clears its dirty sets now: only we keep the writes
            assert errors and all(isinstance(e, SaveFailedError) for e in errors)
            assert "locked for longer than busy_timeout" in str(errors[0])
            assert "Nothing is lost" in str(errors[0])
    # shutdown saved bot_data again and flush() wrote the rest, after the lock was released
    assert await loaded(cls, db) == ({}, {1: {"n": 2}, 3: {"new": True}}, {"motd": "changed while locked"})


@CLASSES
async def test_a_flush_that_still_cannot_write_names_what_is_unsaved(db, cls):
    p = cls(db, busy_timeout=0.2)
    await p.update_user_data(1, {"a": 1})
    async with write_lock_held_by_another_process(db):
        with pytest.raises(SaveFailedError):
            await p.update_user_data(1, {"a": 2})
        with pytest.raises(SaveFailedError, match=r"flush\(\).*Unsaved: user_data of user 1\."):
            await p.flush()
    await p.flush()  # the lock is gone: the kept write goes in now
    assert (await loaded(cls, db))[0] == {1: {"a": 2}}


@CLASSES
async def test_a_full_disk_is_reported_as_such_and_the_round_is_kept(db, cls):
    p = cls(db)
    await p.update_chat_data(1, {"small": 1})
    conn = await p._connection()  # the test looks inside: make this connection's file "full"
    pages = (await conn.execute_fetchall("PRAGMA page_count"))[0][0]
    await conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(SaveFailedError, match="the disk is full") as failed:
        await p.update_chat_data(2, {"big": "x" * 100_000})
    assert "no transaction is active" not in str(failed.value)
    await conn.execute("PRAGMA max_page_count = 1073741823")  # space again
    await p.update_chat_data(1, {"small": 2})  # the next round writes the kept write too
    await p.flush()
    assert (await loaded(cls, db))[1] == {1: {"small": 2}, 2: {"big": "x" * 100_000}}


BAD_IDS = [None, 2**63, -(2**63) - 1, True, "7", 1.0]


@CLASSES
async def test_bad_ids_and_conversation_keys_fail_alone(db, cls):
    p = cls(db)
    bad = [p.update_user_data(user_id, {"x": 1}) for user_id in BAD_IDS]
    bad += [p.update_chat_data(chat_id, {"x": 1}) for chat_id in BAD_IDS]
    bad += [p.update_conversation("form", (10**5000, 1), 1),
            p.update_conversation("form", ("lone \ud800",), 1),
            p.update_conversation("na\udc00me", (1,), 1),
            p.update_conversation("form", (1, 2.5), 1)]  # type: ignore[arg-type]
    good = [p.update_user_data(2**63 - 1, {"ok": 1}), p.update_chat_data(-(2**63), {"ok": 2}),
            p.update_conversation("form", (1, "inline-id"), 3)]
    results = await asyncio.gather(*bad, *good, return_exceptions=True)
    await p.flush()
    assert all(isinstance(r, DataNotStorableError) for r in results[:len(bad)]), results
    assert "user_data of user None" in str(results[0]) and "64-bit" in str(results[0])
    assert results[len(bad):] == [None, None, None]
    users, chats, _ = await loaded(cls, db)
    assert users == {2**63 - 1: {"ok": 1}} and chats == {-(2**63): {"ok": 2}}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name, key, state FROM conversations").fetchall() == [
            ("form", '[1, "inline-id"]', "3")]
    conn.close()


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr to make a file read-only for root")
async def test_a_read_only_file_is_reported_as_such_and_the_writes_are_kept(db):
    """(Issue 15 item 3.) Not "damaged, restore a backup": the file is fine, only not writable."""
    p = SQLitePersistence(db)
    await p.update_chat_data(1, {"a": 1})
    await p.flush()
    if (await asyncio.to_thread(subprocess.run, ["chattr", "+i", str(db)], capture_output=True)).returncode:
        pytest.skip("this file system cannot make a file immutable")
    try:
        p = SQLitePersistence(db)
        assert await p.get_chat_data() == {1: {"a": 1}}
        with pytest.raises(SaveFailedError, match="cannot be written"):
            await p.update_chat_data(1, {"a": 2})
        with pytest.raises(SaveFailedError, match=r"Unsaved: chat_data of chat 1\."):
            await p.flush()
    finally:
        await asyncio.to_thread(subprocess.run, ["chattr", "-i", str(db)], check=True)
    await p.flush()  # writable again: the kept write goes in
    assert (await loaded(SQLitePersistence, db))[1] == {1: {"a": 2}}
