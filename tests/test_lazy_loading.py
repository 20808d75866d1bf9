"""``lazy=True``: nothing loaded at start-up, an id loaded at its first refresh, and data PTB hands
over for an id it never loaded merged with the stored row - never written over it. Through a real
Application; the contract suite runs in lazy mode too (test_persistence_contract.py)."""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from postgres_server import make_postgres_persistence
from telegram.ext import Application, ContextTypes
from test_persistence_contract import contract_bot, stored

from bots.offline import ALICE, BOB, OfflineChat, group_chat, migration_updates, supergroup_chat
from persistence import SharedSQLitePersistence, SQLitePersistence
from persistence.sqlite import DatabaseFileError, SaveFailedError

CLASSES = {"sqlite": SQLitePersistence, "shared": SharedSQLitePersistence}
MAKERS = {**CLASSES, "postgres": make_postgres_persistence}  # (one schema per db path)


@pytest.fixture(params=list(MAKERS))
def make(request: pytest.FixtureRequest, db: Path):
    return functools.partial(MAKERS[request.param], db, lazy=True)


async def stored_row(make, user_id: int) -> dict:
    """A user's stored data, read by a new persistence over the same storage."""
    p = make()
    try:
        return (await stored(p, "user_data"))[user_id]
    finally:
        await p.flush()


def sqlite_row(db: Path, user_id: int) -> dict:
    with sqlite3.connect(db) as conn:
        [(data,)] = conn.execute("SELECT data FROM user_data WHERE user_id = ?", (user_id,))
    conn.close()
    return json.loads(data)


async def run_job(app: Application, callback) -> None:
    """Run ``callback`` as a job of the application's JobQueue (no user or chat: PTB refreshes
    nothing for it) and wait until it has finished."""
    finished = asyncio.Event()

    async def job(context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            await callback(context)
        finally:
            finished.set()

    app.job_queue.run_once(job, 0)
    await asyncio.wait_for(finished.wait(), timeout=30)


async def give_alice_a_gift(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The trap: a job writes to the data of a user PTB has not loaded ({} in memory)."""
    context.application.user_data[ALICE.id]["gift"] = "a cake"
    context.application.mark_data_for_update_persistence(user_ids=ALICE.id)


async def test_start_up_loads_no_user_or_chat_data(make, db):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("hello")
        await chat.send("hi", user=BOB)
        await chat.restart()
        assert dict(chat.app.user_data) == {} and dict(chat.app.chat_data) == {}
        assert sorted(await chat.app.persistence.stored_ids("user_data")) == [ALICE.id, BOB.id]
        assert await chat.send("/show") == ["chat=['hello'] user=hello count=2"]  # loaded now
        assert list(chat.app.user_data) == [ALICE.id]


async def test_a_job_changing_a_never_loaded_user_keeps_every_stored_key(make, db):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("hello")
        await chat.restart()
        await run_job(chat.app, give_alice_a_gift)
        await chat.save()
        assert await stored_row(make, ALICE.id) == {"last": "hello", "gift": "a cake"}
        # the stored key reaches the live data at the first refresh, and stays in later saves
        assert await chat.send("/show") == ["chat=['hello'] user=hello count=1"]
        assert chat.app.user_data[ALICE.id] == {"last": "hello", "gift": "a cake"}
        await chat.send("again")
        await chat.restart()
        assert await stored_row(make, ALICE.id) == {"last": "again", "gift": "a cake"}


async def test_a_second_save_before_any_refresh_still_keeps_the_stored_keys(make, db):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("hello")
        await chat.restart()
        await run_job(chat.app, give_alice_a_gift)
        await chat.save()

        async def take_the_gift_back(context: ContextTypes.DEFAULT_TYPE) -> None:
            del context.application.user_data[ALICE.id]["gift"]
            context.application.mark_data_for_update_persistence(user_ids=ALICE.id)

        await run_job(chat.app, take_the_gift_back)
        await chat.save()
        assert await stored_row(make, ALICE.id) == {"last": "hello"}  # its own key went, the stored stayed


async def test_a_restart_in_the_middle_loses_nothing(make, db):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("hello")
        await chat.restart()
        await run_job(chat.app, give_alice_a_gift)
        await chat.restart()  # saved at shutdown; Alice has never been loaded
        await run_job(chat.app, give_alice_a_gift)
        await chat.restart()
        assert await chat.send("/show") == ["chat=['hello'] user=hello count=1"]
        assert chat.app.user_data[ALICE.id] == {"last": "hello", "gift": "a cake"}


async def test_a_broadcast_done_the_documented_way_reaches_every_stored_user(make, db):
    users = [ALICE, BOB]
    async with OfflineChat(contract_bot, make) as chat:
        for user in users:
            await chat.send(f"I am {user.first_name}", user=user)
        await chat.restart()

        async def broadcast(context: ContextTypes.DEFAULT_TYPE) -> None:
            persistence = context.application.persistence
            for user_id in await persistence.stored_ids("user_data"):
                data = context.application.user_data[user_id]
                await persistence.refresh_user_data(user_id, data)
                data["news"] = data.get("news", 0) + 1
                await context.bot.send_message(user_id, f"news for you, {data['last']}")
                context.application.mark_data_for_update_persistence(user_ids=user_id)

        await run_job(chat.app, broadcast)
        sent = [call.params for call in chat.api.calls if call.method == "sendMessage"]
        assert sorted((int(p["chat_id"]), p["text"]) for p in sent[-2:]) == [
            (ALICE.id, "news for you, I am Alice"), (BOB.id, "news for you, I am Bob")]
        await chat.restart()
        assert await stored_row(make, ALICE.id) == {"last": "I am Alice", "news": 1}
        assert await stored_row(make, BOB.id) == {"last": "I am Bob", "news": 1}


async def test_dropping_a_never_loaded_user_deletes_its_row(make, db):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("hello")
        await chat.send("hi", user=BOB)
        await chat.restart()
        chat.app.drop_user_data(BOB.id)
        await chat.restart()
        assert await chat.app.persistence.stored_ids("user_data") == [ALICE.id]


async def test_a_migration_after_a_restart_moves_the_group_data(make, db):
    group, supergroup = group_chat(), supergroup_chat()
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("in the group", chat=group)
        await chat.restart()  # the group is not loaded until its migration update arrives
        for update in migration_updates(chat.app, chat.api, group, supergroup):
            await chat.feed(update)
        await chat.restart()
        chats = await stored(chat.app.persistence, "chat_data")
        assert chats == {supergroup.id: {"notes": ["in the group"]}}


async def test_lazy_needs_dict_data_and_says_so(db):
    p = SQLitePersistence(db, lazy=True)
    await p.update_user_data(1, {"a": 1})
    await p.flush()
    p = SQLitePersistence(db, lazy=True)
    await p.get_user_data()
    with pytest.raises(TypeError, match="user_data of user 1 key by key, so it must be a dict"):
        await p.update_user_data(1, ["not", "a", "dict"])
    await p.flush()
    assert sqlite_row(db, 1) == {"a": 1}


async def test_a_migration_outside_a_handler_moves_the_data_once_the_old_chat_is_loaded(make, db):
    group, supergroup = group_chat(), supergroup_chat()
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("in the group", chat=group)
        await chat.restart()

        async def migrate_in_a_job(context: ContextTypes.DEFAULT_TYPE) -> None:
            app = context.application
            await app.persistence.refresh_chat_data(group.id, app.chat_data[group.id])  # the doc's step
            app.migrate_chat_data(old_chat_id=group.id, new_chat_id=supergroup.id)

        await run_job(chat.app, migrate_in_a_job)
        await chat.restart()
        assert await stored(chat.app.persistence, "chat_data") == {supergroup.id: {"notes": ["in the group"]}}


DATA = st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3) | st.text(max_size=3), max_size=5)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(list(MAKERS)), stored_data=DATA, handed=DATA, later=DATA)
def test_saves_of_an_id_never_loaded_keep_every_stored_key_they_lack(kind, stored_data, handed, later):
    """Two saves of an id no refresh has loaded (what a job does), then a restart and the id's
    first refresh: the stored keys neither save had are still there; every key a save had is
    the later save's."""
    cls = MAKERS[kind]

    async def scenario(db: Path) -> dict:
        p = cls(db)
        await p.update_user_data(1, dict(stored_data))
        await p.flush()
        p = cls(db, lazy=True)
        assert await p.get_user_data() == {}
        await p.update_user_data(1, dict(handed))
        await p.update_user_data(1, dict(later))
        await p.flush()
        p = cls(db, lazy=True)
        await p.get_user_data()
        live: dict = {}
        await p.refresh_user_data(1, live)
        await p.flush()
        return live

    with tempfile.TemporaryDirectory() as tmp:
        live = asyncio.run(scenario(Path(tmp, "bot.sqlite3")))
    expected = {**{k: v for k, v in stored_data.items() if k not in handed}, **later}
    assert live == expected


@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=list(CLASSES))
async def test_a_failed_save_of_an_id_never_loaded_is_retried_with_the_stored_keys(cls, db):
    p = cls(db)
    await p.update_user_data(1, {"stored": 1, "also": 2})
    await p.flush()
    p = cls(db, lazy=True, busy_timeout=0.05)
    await p.get_user_data()
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with pytest.raises(SaveFailedError):
            await p.update_user_data(1, {"from a job": 3})
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await p.flush()  # writes the kept round
    assert sqlite_row(db, 1) == {"stored": 1, "also": 2, "from a job": 3}
    live = {"from a job": 3}  # PTB's dict for the user, as the job left it
    await p.refresh_user_data(1, live)
    assert live == {"stored": 1, "also": 2, "from a job": 3}
    await p.flush()


async def test_postgres_an_isolated_job_loads_a_never_loaded_user_first(db):
    """PostgreSQL: ``isolated()`` (what IsolatingApplication runs every update in) reads the
    user's row into the live data before the block, so a job sees and keeps every stored key."""
    make = functools.partial(make_postgres_persistence, db, lazy=True)
    seen: list[dict] = []
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("hello")
        await chat.restart()
        assert dict(chat.app.user_data) == {}

        async def isolated_gift(context: ContextTypes.DEFAULT_TYPE) -> None:
            app = context.application
            async with app.persistence.isolated(app, user_id=ALICE.id):
                seen.append(dict(app.user_data[ALICE.id]))
                app.user_data[ALICE.id]["gift"] = "a cake"

        await run_job(chat.app, isolated_gift)
        assert seen == [{"last": "hello"}]
        assert await stored_row(make, ALICE.id) == {"last": "hello", "gift": "a cake"}  # written at once
        await chat.restart()
        assert await chat.send("/show") == ["chat=['hello'] user=hello count=1"]
        assert await stored_row(make, ALICE.id) == {"last": "hello", "gift": "a cake"}


async def test_postgres_lazy_needs_dict_data_and_says_so(db):
    make = functools.partial(make_postgres_persistence, db)
    p = make()
    await p.update_user_data(1, {"a": 1})
    await p.flush()
    p = make(lazy=True)
    await p.get_user_data()
    with pytest.raises(TypeError, match="user_data of user 1 key by key, so it must be a dict"):
        await p.update_user_data(1, ["not", "a", "dict"])
    await p.flush()
    assert await stored_row(make, 1) == {"a": 1}


@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=list(CLASSES))
async def test_an_unreadable_row_of_a_never_loaded_user_fails_its_write_alone(cls, db):
    """Merging a never-loaded user's stored keys needs the stored row: if it cannot be read, that
    write fails naming the row, and the rest of the round is written (it used to fail whole)."""
    p = cls(db, lazy=True)
    await p.get_user_data()
    await asyncio.gather(p.update_user_data(1, {"a": 1}), p.update_user_data(2, {"b": 2}))
    await p.flush()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE user_data SET data = '{not json' WHERE user_id = 1")
    conn.close()
    p = cls(db, lazy=True)
    await p.get_user_data()
    results = await asyncio.gather(p.update_user_data(1, {"x": 1}), p.update_user_data(2, {"c": 3}),
                                   return_exceptions=True)
    assert isinstance(results[0], DatabaseFileError) and "user_data of user 1" in str(results[0])
    assert results[1] is None
    await p.flush()  # nothing left unsaved
    assert sqlite_row(db, 2) == {"b": 2, "c": 3}
