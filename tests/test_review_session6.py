"""Adversarial review of the review-5 fixes (review 6).

Attacked: sqlite.py's cheap check of a file on every connection opened after start-up
(``_still_ours``, else the full ``_check_schema``); lazy=True's ids PTB's live data holds, reloaded
when the same Application starts again (``_live_ids``); postgres.py's drops carried out inside an
update (``_dropped``, no longer cleared when the row is written again). Real Applications over real
SQLite files and a real PostgreSQL server; only the HTTP layer is offline. A test marked
``xfail(strict=True)`` shows a bug named in its reason; the others are attacks that held.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from postgres_server import fresh_schema
from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)
from test_review_session4_pg import (
    HANG,
    TIMEOUT,
    on_command,
    started,
    stored,
    until,
    waiting_for_an_advisory_lock,
)
from test_review_session4_shared import Bot, other_program, setter, stored_user
from test_review_session5 import KINDS, on, remove_database, seeded, started_again_sees_premium, stop

from bots.offline import ALICE, BOB, OFFLINE_TOKEN, OfflineBotAPI, group_chat, message_update
from persistence import SharedSQLitePersistence
from persistence.postgres import IsolatingApplication, PostgresPersistence
from persistence.sqlite import DatabaseFileError

KINDS = {**KINDS, "shared eager": lambda db: SharedSQLitePersistence(db)}


# ---- 1. sqlite.py _still_ours: the file replaced after start-up --------------------------------------
def another_programs_database(path: Path) -> None:
    """A SQLite file of some other program, with a ``settings`` table of its own."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO settings VALUES ('serializer', 'json')")
        conn.commit()


def nothing_in_a_wal(db: Path) -> bool:
    wal = Path(f"{db}-wal")
    return not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_file_replaced_by_another_programs_database_is_left_untouched(db, tmp_path, kind):
    """Held: after start-up the file is replaced by another program's SQLite database (one that even
    has a ``settings`` table with a serializer row). It is left byte for byte as it was: a connection
    opened before keeps writing the bot's own (renamed) file; one opened after refuses it with the
    message naming the file, and keeps the write: once the bot's file is back, a save stores it."""
    await seeded(db, plan="free")
    bot = await Bot(KINDS[kind](db)).start()
    saved = tmp_path / "saved.sqlite3"
    other = tmp_path / "other.sqlite3"
    another_programs_database(other)
    try:
        await bot.message(setter("user_data", plan="premium"))
        opened = bot.app.persistence._db is not None  # (lazy, shared: a refresh opened it)
        os.replace(db, saved)  # (an open connection keeps writing the bot's file, renamed)
        os.replace(other, db)
        before = db.read_bytes()
        await bot.save()  # (its failure goes to the error handler)
        assert db.read_bytes() == before
        assert nothing_in_a_wal(db)
        if not opened:  # the save opened the replacement: refused by the full check
            with pytest.raises(DatabaseFileError, match="another program"):
                await bot.app.persistence._connection()
        remove_database(db)
        os.replace(saved, db)
        await bot.app.update_persistence()
        assert stored_user(db, ALICE.id) == {"plan": "premium"}
    finally:
        await bot.app.shutdown()


@pytest.mark.parametrize("kind", ["eager", "lazy", "shared lazy"])
async def test_a_file_emptied_after_start_up_gets_the_schema_and_the_save(db, kind):
    """Held: the file truncated to 0 bytes after start-up (a bad backup script) is an empty SQLite
    database: the save gives it the schema and writes the round, as for a deleted file."""
    bot = await Bot(KINDS[kind](db)).start()
    try:
        remove_database(db)
        db.write_bytes(b"")
        await bot.message(setter("user_data", plan="free"))
        await bot.save()
        assert bot.errors == []
        assert stored_user(db, ALICE.id) == {"plan": "free"}
    finally:
        await bot.app.shutdown()


# ---- 2. sqlite.py _live_ids: a drop and a re-creation in one interval, then a restart -------------
LIVE_IDS_BUG = pytest.mark.xfail(strict=True, reason=(
    "sqlite.py _write (line 792-793): a drop discards the id from _live_ids, but PTB's save sends "
    "only the drop when the id was re-created in the same interval (update_ids -= delete_ids), "
    "so PTB's live data still holds a dict for it; when the same Application starts again "
    "_load_table does not reload it, and its stale live dict wins over the row another program "
    "wrote meanwhile (eager reloads it)"))


@pytest.mark.parametrize("kind", [
    "eager", pytest.param("lazy", marks=LIVE_IDS_BUG), pytest.param("shared lazy", marks=LIVE_IDS_BUG)])
async def test_a_user_dropped_and_recreated_before_a_save_is_reloaded_when_the_bot_starts_again(db, kind):
    await seeded(db, plan="free")
    bot = await Bot(KINDS[kind](db)).start()
    await bot.message()  # Alice loaded
    bot.app.drop_user_data(ALICE.id)  # an admin's /forget of Alice...
    await bot.message(setter("user_data", plan="trial"))  # ...and her next message, before the save
    await bot.save()  # PTB sends the drop only
    assert stored_user(db, ALICE.id) is None
    await bot.app.shutdown()
    other_program(db, "INSERT INTO user_data (user_id, data) VALUES (?, ?)",  # the panel, meanwhile
                  ALICE.id, json.dumps({"plan": "premium"}))
    await started_again_sees_premium(bot, db)


@pytest.mark.parametrize("kind", ["lazy", "shared lazy"])
async def test_a_user_dropped_and_saved_stays_gone_when_the_bot_starts_again(db, kind):
    """Held: a drop saved, then a restart of the same Application: the dropped user is not reloaded
    (nothing stored), a user who stayed is, and no save brings the dropped one back."""
    await seeded(db, plan="free")
    bot = await Bot(KINDS[kind](db)).start()
    await bot.message()
    await bot.message(setter("user_data", plan="bob"), user=BOB)
    bot.app.drop_user_data(ALICE.id)
    await bot.save()
    await bot.app.shutdown()
    other_program(db, "UPDATE user_data SET data = json_set(data, '$.plan', 'bob2') WHERE user_id = ?",
                  BOB.id)
    await bot.app.initialize()
    try:
        assert ALICE.id not in bot.app.user_data
        assert bot.app.user_data[BOB.id] == {"plan": "bob2"}
        await bot.save()
        assert stored_user(db, ALICE.id) is None
    finally:
        await bot.app.shutdown()


# ---- 3. postgres.py _dropped: a drop carried out in an update stays "carried out" ----------------
async def test_a_later_drop_is_carried_out_after_a_save_came_in_the_middle_of_a_forget():
    make = on(fresh_schema("review6"))
    app, api, errors = await started(make)
    dropped, release = asyncio.Event(), asyncio.Event()

    async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.application.drop_user_data(update.effective_user.id)
        dropped.set()
        await release.wait()

    on_command(app, "forget", forget)
    task = save = None
    try:
        await app.process_update(message_update(app, api, "hello", ALICE))
        task = asyncio.create_task(app.process_update(message_update(app, api, "/forget", ALICE)))
        await asyncio.wait_for(dropped.wait(), TIMEOUT)
        # the periodic save fires while /forget runs: it queues PTB's drop of Alice at once, then
        # waits for her lock (the merged rows' locks), which /forget holds until it commits
        save = asyncio.create_task(app.update_persistence())
        await until(waiting_for_an_advisory_lock, "the save waits for Alice's lock")
        release.set()
        await asyncio.wait_for(task, TIMEOUT)
        await asyncio.wait_for(save, TIMEOUT)
        assert ALICE.id not in await stored(make, "user_data")
        await app.process_update(message_update(app, api, "I am back", ALICE))  # (stored at its end)
        assert (await stored(make, "user_data")).get(ALICE.id) == {"messages": 1}
        app.drop_user_data(ALICE.id)  # later, before the next save: a job forgets her
        await app.update_persistence()
        assert errors == []
        assert ALICE.id not in await stored(make, "user_data")
    finally:
        release.set()
        await stop(app, task, save)


# ---- 4. postgres.py _Section.task: a helper run as a task the update waits for -------------------
async def test_a_helper_isolating_the_updates_own_user_run_through_gather_does_not_hang():
    make = on(fresh_schema("review6"))
    app, api, errors = await started(make)

    async def add_point(application: Any, user_id: int) -> None:  # (also called from a job)
        async with application.isolated(user_id=user_id):
            data = application.user_data[user_id]
            data["points"] = data.get("points", 0) + 1

    async def point(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await asyncio.gather(add_point(context.application, update.effective_user.id))

    on_command(app, "point", point)
    task = asyncio.create_task(app.process_update(message_update(app, api, "/point", ALICE)))
    try:
        async with asyncio.timeout(HANG):
            await asyncio.shield(task)
        assert errors == []
        assert (await stored(make, "user_data")).get(ALICE.id) == {"points": 1}  # (/point: no count)
    finally:
        await stop(app, task)


# ---- 5. postgres.py conversations: states compared by value, a form whose step keeps its state ---
ITEMS = "items"


async def list_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> str:
    context.user_data["items"] = []
    await update.message.reply_text("Send items, then /done.")
    return ITEMS


async def list_item(update: Update, context: ContextTypes.DEFAULT_TYPE) -> str:
    context.user_data.setdefault("items", []).append(update.message.text)
    return ITEMS  # (the form stays in the same state: one more item)


async def list_done(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    await update.message.reply_text("Your list: " + ", ".join(context.user_data.get("items", [])))
    return ConversationHandler.END


def shopping_list(persistence: PostgresPersistence, api: OfflineBotAPI) -> Application:
    """A form whose steps keep its state (ITEMS), with ``conversation_timeout`` (an hour)."""
    app = (ApplicationBuilder().token(OFFLINE_TOKEN).application_class(IsolatingApplication)
           .persistence(persistence).request(api).get_updates_request(api).build())
    app.add_handler(ConversationHandler(
        entry_points=[CommandHandler("list", list_start)],
        states={ITEMS: [MessageHandler(filters.TEXT & ~filters.COMMAND, list_item),
                        CommandHandler("done", list_done)]},
        fallbacks=[], name="shopping", persistent=True, conversation_timeout=3600))
    return app


@pytest.mark.xfail(strict=True, reason=(
    "postgres.py: a conversation's state is compared by value (_statement's 'WHERE state = $4' / "
    "'AND state = $3', _enter's same(state, known)): when the form went on on another process "
    "with a step that keeps the same state, PTB's timeout job of the earlier step on this process "
    "ends it anyway (its save's conditional DELETE matches the value): the form the other "
    "process is in is gone, and /done there is not answered"))
async def test_a_forms_timeout_of_an_earlier_step_does_not_end_it_after_a_later_step_kept_its_state():
    make = on(fresh_schema("review6"))
    (api_one, api_two) = (OfflineBotAPI(), OfflineBotAPI())
    one, two = shopping_list(make(), api_one), shopping_list(make(), api_two)
    for app in (one, two):
        await app.initialize()
        await app.job_queue.start()  # (PTB schedules a conversation's timeout on a running queue)
    chat = group_chat(-4600)
    try:
        await one.process_update(message_update(one, api_one, "/list", ALICE, chat))
        await two.process_update(message_update(two, api_two, "milk", ALICE, chat))  # within the hour
        [timeout_of_step_1] = one.job_queue.jobs()
        await timeout_of_step_1.run(one)  # an hour after step 1 (not yet an hour after step 2)
        await one.update_persistence()
        await two.process_update(message_update(two, api_two, "eggs", ALICE, chat))
        await two.process_update(message_update(two, api_two, "/done", ALICE, chat))
        replies = [call.params.get("text") for call in api_two.calls]
        assert replies[-1] == "Your list: milk, eggs"
    finally:
        for app in (one, two):
            await app.job_queue.stop(wait=False)
            await app.shutdown()
