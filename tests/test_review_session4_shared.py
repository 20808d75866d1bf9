"""Adversarial review of ``SharedSQLitePersistence`` and ``lazy=True`` (review 4).

The promises attacked (persistence/shared.py's module docstring, ``SQLitePersistence``'s ``lazy``
argument): another program's change reaches the bot at a refresh or is merged by a save, a key
both changed keeps the bot's value, an id is loaded at its first refresh, and data handed over for
an id never loaded is merged with its stored row, never written over it.

Every test drives a real Application (only the HTTP layer is offline) over a real SQLite file;
"another program" is a second sqlite3 connection that commits. The tests that found a bug
were marked ``xfail(strict=True)`` until it was fixed; all of them are regression tests now.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import warnings
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bots.offline import ALICE, BOB, OfflineBotAPI, application_builder
from bots.offline.updates import message_update
from persistence import SharedSQLitePersistence, SQLitePersistence

Action = Callable[[ContextTypes.DEFAULT_TYPE], None]


class Bot:
    """A real Application over ``persistence`` whose one handler matches every text message (so
    PTB refreshes bot, chat and user data before it) and runs the test's ``action``, if any."""

    def __init__(self, persistence: SQLitePersistence, context_types: ContextTypes | None = None) -> None:
        self.api = OfflineBotAPI()
        builder = application_builder(request=self.api, persistence=persistence)
        if context_types is not None:
            builder = builder.context_types(context_types)
        self.app: Application = builder.build()
        self.app.add_handler(MessageHandler(filters.TEXT, self._handle))
        self.app.add_error_handler(self._record)
        self.action: Action | None = None
        self.errors: list[BaseException] = []

    async def _handle(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if self.action is not None:
            self.action(context)

    async def _record(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.error is not None
        self.errors.append(context.error)

    async def start(self) -> Bot:
        await self.app.initialize()
        return self

    async def message(self, action: Action | None = None, user: Any = ALICE) -> None:
        """A message from ``user``: PTB refreshes that user's data, then the handler runs ``action``."""
        self.action = action
        try:
            await self.app.process_update(message_update(self.app, self.api, "hi", user=user))
        finally:
            self.action = None

    async def save(self) -> list[str]:
        """PTB's periodic save, now; the RuntimeWarnings it gave."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await self.app.update_persistence()
        return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def other_program(db: Path, sql: str, *params: Any) -> None:
    """Another program (an admin panel) runs ``sql`` on the bot's file with its own connection."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute(sql, params)


def other_program_sets_user(db: Path, user_id: int, name: str, value: Any) -> None:
    other_program(db, "UPDATE user_data SET data = json_set(data, ?, json(?)) WHERE user_id = ?",
                  f"$.{name}", json.dumps(value), user_id)


def stored_user(db: Path, user_id: int) -> dict[str, Any] | None:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT data FROM user_data WHERE user_id = ?", (user_id,)).fetchall()
    return json.loads(rows[0][0]) if rows else None


def stored_bot_data(db: Path) -> dict[str, Any]:
    with closing(sqlite3.connect(db)) as conn:
        [(data,)] = conn.execute("SELECT data FROM bot_data").fetchall()
    return json.loads(data)


def setter(kind: str, **values: Any) -> Action:
    """A handler action: ``context.<kind>.update(values)``."""
    return lambda context: getattr(context, kind).update(values)


# ---- 1. bot_data: the bot's own change is skipped as "unchanged since the last save" --------------
async def test_the_bot_setting_bot_data_back_after_a_refresh_took_another_programs_value_is_saved(db):
    bot = await Bot(SharedSQLitePersistence(db)).start()
    try:
        await bot.message(setter("bot_data", maintenance=False))
        await bot.save()
        other_program(db, "UPDATE bot_data SET data = json_set(data, '$.maintenance', json('true'))")
        await bot.message()  # the refresh takes the panel's maintenance=True
        assert bot.app.bot_data["maintenance"] is True
        await bot.message(setter("bot_data", maintenance=False))  # the bot's /resume command
        await bot.save()
        assert bot.errors == []
        assert stored_bot_data(db) == {"maintenance": False}
    finally:
        await bot.app.shutdown()
    restarted = await Bot(SharedSQLitePersistence(db)).start()
    try:
        assert restarted.app.bot_data == {"maintenance": False}
    finally:
        await restarted.app.shutdown()


# ---- 2. lazy=True + a restart of the same Application ---------------------------------------------
@pytest.mark.parametrize("edit", ["changed", "deleted"])
async def test_lazy_restart_of_the_same_application_takes_a_change_made_while_the_bot_was_down(db, edit):
    bot = Bot(SharedSQLitePersistence(db, lazy=True))
    await bot.start()
    await bot.message(setter("user_data", plan="free", visits=1))
    await bot.app.shutdown()  # saves, flush()es; the same Application starts again below
    if edit == "changed":  # the panel, while the bot is down
        other_program_sets_user(db, ALICE.id, "plan", "premium")
    else:
        other_program(db, "UPDATE user_data SET data = json_remove(data, '$.plan')")
    expected = {"plan": "premium", "visits": 2} if edit == "changed" else {"visits": 2}
    await bot.app.initialize()
    try:
        await bot.message(setter("user_data", visits=2))  # first refresh of Alice in this run
        await bot.save()
        assert bot.errors == []
        assert bot.app.user_data[ALICE.id] == expected
        assert stored_user(db, ALICE.id) == expected
    finally:
        await bot.app.shutdown()


async def test_eager_restart_of_the_same_application_takes_a_change_made_while_the_bot_was_down(db):
    """The same without lazy: start-up replaces the live dicts with the stored rows."""
    bot = Bot(SharedSQLitePersistence(db))
    await bot.start()
    await bot.message(setter("user_data", plan="free", visits=1))
    await bot.app.shutdown()
    other_program_sets_user(db, ALICE.id, "plan", "premium")
    await bot.app.initialize()
    try:
        await bot.message(setter("user_data", visits=2))
        await bot.save()
        assert stored_user(db, ALICE.id) == {"plan": "premium", "visits": 2}
    finally:
        await bot.app.shutdown()


# ---- 3. data that is not a dict (pickle mode, bot_data of the bot's own class) ---------------------
class Settings:
    """bot_data of a bot's own class (context_types), not a dict: the merge cannot look inside."""

    def __init__(self) -> None:
        self.greeting = "hello"
        self.counter = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and vars(self) == vars(other)


SETTINGS_TYPES = ContextTypes(bot_data=Settings)


async def test_a_non_dict_bot_data_changed_by_another_program_is_not_overwritten_silently(db):
    bot = await Bot(SharedSQLitePersistence(db, serializer="pickle", context_types=SETTINGS_TYPES),
                    SETTINGS_TYPES).start()
    try:
        await bot.save()
        theirs = Settings()
        theirs.greeting = "set by the panel"
        other_program(db, "UPDATE bot_data SET data = ?", pickle.dumps(theirs))
        await bot.message()  # refresh

        def count(context: ContextTypes.DEFAULT_TYPE) -> None:
            context.bot_data.counter += 1

        await bot.message(count)
        caught = await bot.save()
        assert bot.errors == []
        with closing(sqlite3.connect(db)) as conn:
            [(data,)] = conn.execute("SELECT data FROM bot_data").fetchall()
        kept = pickle.loads(data).greeting == "set by the panel" or bot.app.bot_data.greeting == (
            "set by the panel")
        assert kept or any("bot_data" in message for message in caught)
    finally:
        await bot.app.shutdown()


# ---- 4. a save round that fails after it merged another program's change ---------------------------
@pytest.mark.parametrize("refresh", [False, True], ids=["retry", "refresh-then-retry"])
async def test_a_failed_round_after_a_merge_does_not_turn_the_other_programs_value_into_the_bots(db, refresh):
    bot = await Bot(SharedSQLitePersistence(db)).start()
    try:
        await bot.message(setter("user_data", note="none", visits=1), user=ALICE)
        await bot.message(setter("user_data", visits=1), user=BOB)
        await bot.save()
        other_program_sets_user(db, ALICE.id, "note", "first")
        # the panel also makes every write of Bob's row fail (a check of its own): the round fails
        # after its merge of Alice's row took note="first" into the write
        other_program(db, f"CREATE TRIGGER refuse_bob BEFORE UPDATE ON user_data WHEN NEW.user_id ="
                          f" {BOB.id} BEGIN SELECT RAISE(ABORT, 'refused by the panel'); END")
        bot.app.mark_data_for_update_persistence(user_ids=[ALICE.id, BOB.id])  # (a job, no refresh)
        await bot.save()
        assert bot.errors, "the round was meant to fail"
        assert stored_user(db, ALICE.id) == {"note": "first", "visits": 1}
        other_program(db, "DROP TRIGGER refuse_bob")
        other_program_sets_user(db, ALICE.id, "note", "second")  # the panel corrects its note
        if refresh:
            await bot.message()
            assert bot.app.user_data[ALICE.id]["note"] == "second"
    finally:
        await bot.app.shutdown()  # the last save and flush(): the kept writes are written
    assert stored_user(db, ALICE.id) == {"note": "second", "visits": 1}


async def test_a_round_that_merged_and_succeeded_lets_the_other_programs_next_change_through(db):
    """The same without the failure: held."""
    bot = await Bot(SharedSQLitePersistence(db)).start()
    try:
        await bot.message(setter("user_data", note="none", visits=1), user=ALICE)
        await bot.save()
        other_program_sets_user(db, ALICE.id, "note", "first")
        bot.app.mark_data_for_update_persistence(user_ids=ALICE.id)
        await bot.save()
        assert stored_user(db, ALICE.id) == {"note": "first", "visits": 1}
        other_program_sets_user(db, ALICE.id, "note", "second")
        bot.app.mark_data_for_update_persistence(user_ids=ALICE.id)
        await bot.save()
        assert stored_user(db, ALICE.id) == {"note": "second", "visits": 1}
        await bot.message()
        assert bot.app.user_data[ALICE.id] == {"note": "second", "visits": 1}
    finally:
        await bot.app.shutdown()


# ---- 5. lazy=True: a drop of an id never loaded, then a message of that id before the save ----------
def drop(user_id: int) -> Action:
    """A handler action: an admin command forgets another user (``Application.drop_user_data``)."""
    return lambda context: context.application.drop_user_data(user_id)


@pytest.mark.parametrize("cls", [SQLitePersistence, SharedSQLitePersistence], ids=lambda c: c.__name__)
async def test_lazy_data_dropped_before_it_was_loaded_does_not_come_back(db, cls):
    first = await Bot(cls(db, lazy=True)).start()
    await first.message(setter("user_data", secret="alice's address"))
    await first.app.shutdown()
    bot = await Bot(cls(db, lazy=True)).start()
    try:
        await bot.message(drop(ALICE.id), user=BOB)  # Alice was not loaded in this run
        await bot.message(setter("user_data", visits=1))  # Alice writes before the next save
        await bot.save()  # (PTB saves only the drop: update_ids -= delete_ids)
        await bot.message(setter("user_data", visits=2))
        await bot.save()
        assert bot.errors == []
        assert "secret" not in bot.app.user_data[ALICE.id]
        assert stored_user(db, ALICE.id) == {"visits": 2}
    finally:
        await bot.app.shutdown()


@pytest.mark.parametrize("cls", [SQLitePersistence, SharedSQLitePersistence], ids=lambda c: c.__name__)
async def test_lazy_data_dropped_after_it_was_loaded_does_not_come_back(db, cls):
    """The same for an id loaded before the drop: held."""
    first = await Bot(cls(db, lazy=True)).start()
    await first.message(setter("user_data", secret="alice's address"))
    await first.app.shutdown()
    bot = await Bot(cls(db, lazy=True)).start()
    try:
        await bot.message()  # Alice is loaded
        await bot.message(drop(ALICE.id), user=BOB)
        await bot.message(setter("user_data", visits=1))
        await bot.save()
        await bot.message(setter("user_data", visits=2))
        await bot.save()
        assert bot.errors == []
        assert stored_user(db, ALICE.id) == {"visits": 2}
    finally:
        await bot.app.shutdown()


# ---- 6. pickle mode: user_data of the bot's own dict class ----------------------------------------
class Profile(dict):  # type: ignore[type-arg]
    """user_data of the bot's own class (context_types), a dict with a method."""

    def greeting(self) -> str:
        return f"hello {self.get('name', 'stranger')}"


PROFILE_TYPES = ContextTypes(user_data=Profile)


def shared_pickle(db: Path) -> SharedSQLitePersistence:
    return SharedSQLitePersistence(db, serializer="pickle", context_types=PROFILE_TYPES)


async def test_pickle_user_data_of_the_bots_own_dict_class_keeps_its_class_through_a_merge(db):
    bot = await Bot(shared_pickle(db), PROFILE_TYPES).start()
    try:
        await bot.message(setter("user_data", name="Alice"))
        await bot.save()
        admin = shared_pickle(db)  # an admin script over the same file
        users = await admin.get_user_data()
        users[ALICE.id]["tier"] = "gold"
        await admin.update_user_data(ALICE.id, users[ALICE.id])
        await admin.flush()
        await bot.message(setter("user_data", visits=1))  # the refresh takes tier="gold"
        await bot.save()
        assert bot.errors == []
    finally:
        await bot.app.shutdown()
    restarted = await Bot(shared_pickle(db), PROFILE_TYPES).start()
    try:
        alice = restarted.app.user_data[ALICE.id]
        assert dict(alice) == {"name": "Alice", "tier": "gold", "visits": 1}
        assert type(alice) is Profile
    finally:
        await restarted.app.shutdown()


# ---- 7. a round that fails on the lock, another program's change meanwhile, a refresh, the retry -----
async def test_a_round_failed_on_the_lock_then_a_refresh_and_the_retry_keep_both_sides(db):
    bot = await Bot(SharedSQLitePersistence(db, busy_timeout=0.05)).start()
    try:
        await bot.message(setter("user_data", note="none", visits=1))
        await bot.save()
        with closing(sqlite3.connect(db, isolation_level=None)) as panel:
            panel.execute("BEGIN IMMEDIATE")  # the panel holds the write lock...
            await bot.message(setter("user_data", visits=2))
            await bot.save()
            assert bot.errors, "the round was meant to fail on the lock"
            panel.execute("UPDATE user_data SET data = json_set(data, '$.note', 'from the panel')"
                          " WHERE user_id = ?", (ALICE.id,))
            panel.execute("COMMIT")  # ...and writes its change as it lets go
        bot.errors.clear()
        await bot.message(setter("user_data", visits=3))  # refresh: takes the note
        assert bot.app.user_data[ALICE.id] == {"note": "from the panel", "visits": 3}
        await bot.save()
        assert bot.errors == []
        assert stored_user(db, ALICE.id) == {"note": "from the panel", "visits": 3}
    finally:
        await bot.app.shutdown()
    assert stored_user(db, ALICE.id) == {"note": "from the panel", "visits": 3}


# ---- 8. flush() failed (the file locked at shutdown), the same Application initialized again --------
def count_visit(context: ContextTypes.DEFAULT_TYPE) -> None:
    context.user_data["visits"] = context.user_data.get("visits", 0) + 1


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
@pytest.mark.parametrize("cls", [SQLitePersistence, SharedSQLitePersistence], ids=lambda c: c.__name__)
async def test_a_restart_after_a_failed_flush_keeps_the_unsaved_change(db, cls, lazy):
    """Held: the second shutdown() writes what the failed flush() kept."""
    from persistence.sqlite import SaveFailedError

    bot = await Bot(cls(db, busy_timeout=0.05, lazy=lazy)).start()
    await bot.message(count_visit)
    await bot.save()
    await bot.message(count_visit)  # visits=2, not saved yet
    with closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # a backup tool holds the file while the bot stops
        with pytest.raises(SaveFailedError, match="user_data of user"):
            await bot.app.shutdown()
        other.execute("ROLLBACK")
    # (PTB's shutdown() stopped at flush(): the Application is still initialized) shut down again
    await bot.app.shutdown()
    assert stored_user(db, ALICE.id) == {"visits": 2}
    await bot.app.initialize()  # the notebook runs its cell again
    try:
        await bot.message(count_visit)
        await bot.save()
        assert bot.app.user_data[ALICE.id]["visits"] == 3
    finally:
        await bot.app.shutdown()
    assert stored_user(db, ALICE.id) == {"visits": 3}


# ---- 9. a key deleted vs a key set to None (null) by another program ----------------------------------
async def test_a_key_set_to_none_and_a_key_deleted_by_another_program_stay_different(db):
    bot = await Bot(SharedSQLitePersistence(db)).start()
    try:
        await bot.message(setter("user_data", a=1, b=2, c=3))
        await bot.save()
        other_program(db, "UPDATE user_data SET data = json_remove(json_set(data, '$.a', json('null')),"
                          " '$.b') WHERE user_id = ?", ALICE.id)
        await bot.message(setter("user_data", c=4))
        assert bot.app.user_data[ALICE.id] == {"a": None, "c": 4}
        await bot.save()
        assert stored_user(db, ALICE.id) == {"a": None, "c": 4}
    finally:
        await bot.app.shutdown()


# ---- 10. lazy + shared: a job writes a never-loaded user, another program edits, then a refresh ------
async def test_lazy_shared_job_write_then_another_programs_edit_then_the_first_refresh(db):
    first = await Bot(SharedSQLitePersistence(db, lazy=True)).start()
    await first.message(setter("user_data", plan="free", tags=["a"], visits=1))
    await first.app.shutdown()
    bot = await Bot(SharedSQLitePersistence(db, lazy=True)).start()
    try:
        await bot.message(lambda c: c.application.user_data[ALICE.id].update(gift="cake"), user=BOB)
        bot.app.mark_data_for_update_persistence(user_ids=ALICE.id)
        await bot.save()
        assert stored_user(db, ALICE.id) == {"plan": "free", "tags": ["a"], "visits": 1, "gift": "cake"}
        other_program(db, "UPDATE user_data SET data = json_remove(json_set(data, '$.plan', 'gold'),"
                          " '$.tags') WHERE user_id = ?", ALICE.id)
        await bot.message(count_visit)  # Alice's first refresh in this run
        assert bot.app.user_data[ALICE.id] == {"plan": "gold", "visits": 2, "gift": "cake"}
        await bot.save()
        assert stored_user(db, ALICE.id) == {"plan": "gold", "visits": 2, "gift": "cake"}
    finally:
        await bot.app.shutdown()


# ---- 11. lazy + shared, no bot_data stored: a table rebuilt between the first refresh and save -------
@pytest.mark.parametrize("bot_data", [
    True,
    False,
], ids=["bot_data-stored", "bot_data-off"])
async def test_lazy_shared_notices_a_table_rebuilt_between_a_refresh_and_the_first_save(db, bot_data):
    from telegram.ext import PersistenceInput
    from test_review_session3 import another_program_rebuilds_user_data_and_sets

    first = await Bot(SharedSQLitePersistence(db)).start()
    await first.message(setter("user_data", visits=1))
    await first.app.shutdown()
    store = PersistenceInput(bot_data=bot_data, callback_data=False)
    bot = await Bot(SharedSQLitePersistence(db, lazy=True, store_data=store)).start()
    try:
        await bot.message()  # Alice's first refresh: her row and its version are read
        another_program_rebuilds_user_data_and_sets(db, ALICE.id, {"visits": 1, "note": "from the panel"})
        await bot.message(count_visit)
        await bot.save()
        assert bot.errors == []
        assert stored_user(db, ALICE.id) == {"visits": 2, "note": "from the panel"}
    finally:
        await bot.app.shutdown()


# ---- 12. lazy + shared under load: an admin process, updates, and job writes to unloaded users -------
@pytest.mark.slow
async def test_lazy_shared_bot_an_admin_process_and_jobs_writing_unloaded_users_lose_nothing(tmp_path):
    """tests/admin_writer.py (another process) adds ``admin_note_<i>`` to a third of the users
    30 times while a lazy bot (saves every 0.05 s, concurrent updates) counts messages and a "job"
    writes ``job_<n>`` keys into users' data without a refresh - often of users not loaded yet.
    Every key of every side must be stored at the end, every counter exact."""
    import asyncio
    import random
    import sys
    from collections import Counter

    from admin_writer import noted_users
    from helpers import stage_environment
    from test_reliability import counting_bot, differences, people, stored_after_restart

    path, rounds, rng = tmp_path / "bot.sqlite3", 30, random.Random(4)
    users = people(30, 50_000)
    seed = SharedSQLitePersistence(path)
    await asyncio.gather(*(seed.update_user_data(user.id, {"messages": 0}) for user in users))
    await seed.flush()
    api, errors = OfflineBotAPI(), []
    app = counting_bot(SharedSQLitePersistence(path, update_interval=0.05, lazy=True), api, errors)
    sent: Counter[int] = Counter()
    jobs: dict[int, dict[str, int]] = {user.id: {} for user in users}
    await app.initialize()
    await app.start()
    try:
        admin = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).parent / "admin_writer.py"), str(path),
            "--rounds", str(rounds), "--users", ",".join(str(user.id) for user in users),
            env=stage_environment(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        admin_done = asyncio.create_task(admin.communicate())
        n = 0
        async with asyncio.timeout(120):
            while not admin_done.done() or n == 0:
                for _ in range(40):
                    user = rng.choice(users)
                    sent[user.id] += 1
                    await app.update_queue.put(message_update(app, api, "hi", user=user))
                for _ in range(5):  # a job: no refresh, the user may not be loaded
                    n += 1
                    user = rng.choice(users)
                    app.user_data[user.id][f"job_{n}"] = n
                    jobs[user.id][f"job_{n}"] = n
                    app.mark_data_for_update_persistence(user_ids=user.id)
                await app.update_queue.join()
            _, admin_err = await admin_done
    finally:
        await app.stop()
        await app.shutdown()
    assert admin.returncode == 0 and admin_err == b"", admin_err.decode()
    assert errors == []
    user_data, _, _ = await stored_after_restart(path)
    expected = {user.id: {"messages": sent[user.id], **jobs[user.id]} for user in users}
    for number in range(rounds):
        for user_id in noted_users([user.id for user in users], number):
            expected[user_id][f"admin_note_{number}"] = number
    lost = differences(user_data, expected)
    assert lost == [], f"{len(lost)} of {len(users)} users differ:\n" + "\n".join(lost[:5])


# ---- 13. one file, switched between the classes (same format), lazy and not ---------------------------
ALL_KEYS = {"plan": "free", "visits": 3, "tier": "gold", "gift": "cake"}


@pytest.mark.parametrize("serializer", ["json", "pickle"])
async def test_a_file_switched_between_the_classes_keeps_every_sides_keys(db, serializer):
    def with_(cls: type[SQLitePersistence], **kwargs: Any) -> Bot:
        return Bot(cls(db, serializer=serializer, **kwargs))  # type: ignore[arg-type]

    def job_gift(context: ContextTypes.DEFAULT_TYPE) -> None:
        context.application.user_data[ALICE.id]["gift"] = "cake"  # Alice not loaded (lazy)
        context.application.mark_data_for_update_persistence(user_ids=ALICE.id)

    bot = await with_(SharedSQLitePersistence).start()
    await bot.message(setter("user_data", plan="free", visits=1))
    await bot.save()
    admin = SharedSQLitePersistence(db, serializer=serializer)
    users = await admin.get_user_data()
    await admin.update_user_data(ALICE.id, {**users[ALICE.id], "tier": "gold"})
    await admin.flush()
    await bot.message(count_visit)  # merged: tier
    await bot.app.shutdown()
    bot = await with_(SQLitePersistence, lazy=True).start()  # the same file, the other class, lazy
    await bot.message(job_gift, user=BOB)
    await bot.save()
    await bot.app.shutdown()
    bot = await with_(SharedSQLitePersistence, lazy=True).start()
    try:
        await bot.message(job_gift, user=BOB)
        await bot.message(count_visit)
        assert bot.app.user_data[ALICE.id] == ALL_KEYS
    finally:
        await bot.app.shutdown()
    bot = await with_(SQLitePersistence).start()
    try:
        assert bot.app.user_data[ALICE.id] == ALL_KEYS
    finally:
        await bot.app.shutdown()


# ---- 14. a refresh while another program holds the write lock (a long admin transaction) -------------
@pytest.mark.parametrize(("cls", "lazy"), [
    (SQLitePersistence, False),
    *[(cls, lazy) for cls, lazy in
      [(SQLitePersistence, True), (SharedSQLitePersistence, False), (SharedSQLitePersistence, True)]],
], ids=["sqlite", "sqlite-lazy", "shared", "shared-lazy"])
async def test_a_message_is_handled_while_another_program_holds_the_write_lock(db, cls, lazy):
    first = await Bot(cls(db)).start()
    await first.message(setter("user_data", visits=1))
    await first.app.shutdown()
    bot = await Bot(cls(db, busy_timeout=0.1, lazy=lazy)).start()
    seen: list[dict[str, Any]] = []
    try:
        with closing(sqlite3.connect(db, isolation_level=None)) as admin:
            admin.execute("BEGIN IMMEDIATE")  # e.g. a long import, held for the whole message
            await bot.message(lambda context: seen.append(dict(context.user_data)))
            admin.execute("ROLLBACK")
        assert bot.errors == []
        assert seen == [{"visits": 1}]
    finally:
        await bot.app.shutdown()


class Stats(dict):  # type: ignore[type-arg]
    """bot_data of the bot's own dict class (context_types)."""


STATS_TYPES = ContextTypes(bot_data=Stats)


async def test_pickle_bot_data_of_the_bots_own_dict_class_still_starts_after_a_merge(db):
    def make() -> SharedSQLitePersistence:
        return SharedSQLitePersistence(db, serializer="pickle", context_types=STATS_TYPES)

    bot = await Bot(make(), STATS_TYPES).start()
    try:
        await bot.message(setter("bot_data", messages=1))
        await bot.save()
        admin = make()
        stats = await admin.get_bot_data()
        stats["announcement"] = "maintenance at 5"
        await admin.update_bot_data(stats)
        await admin.flush()
        await bot.message(setter("bot_data", messages=2))  # the refresh takes the announcement
        await bot.save()
        assert bot.errors == []
        # the bot crashes here; it starts again from the file (PTB: ValueError if bot_data is a dict)
        restarted = await Bot(make(), STATS_TYPES).start()
        try:
            assert restarted.app.bot_data == {"messages": 2, "announcement": "maintenance at 5"}
        finally:
            await restarted.app.shutdown()
    finally:
        await bot.app.shutdown()


# ---- 15. a drop by the bot while another program edits the row, and the reverse ---------------------
@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
async def test_the_bots_drop_wins_over_another_programs_edit_and_nothing_comes_back(db, lazy):
    bot = await Bot(SharedSQLitePersistence(db, lazy=lazy)).start()
    try:
        await bot.message(setter("user_data", secret="address", visits=1))
        await bot.save()
        await bot.message(lambda context: context.application.drop_user_data(ALICE.id))  # /forget
        other_program_sets_user(db, ALICE.id, "note", "edited by the panel meanwhile")
        await bot.save()
        assert stored_user(db, ALICE.id) is None
        await bot.message(setter("user_data", visits=1))  # Alice comes back: a new user
        await bot.save()
        assert bot.app.user_data[ALICE.id] == {"visits": 1}
        assert stored_user(db, ALICE.id) == {"visits": 1}
    finally:
        await bot.app.shutdown()


@pytest.mark.parametrize("refresh", [False, True], ids=["save-first", "refresh-first"])
async def test_another_programs_delete_of_the_row_keeps_only_the_keys_the_bot_changed(db, refresh):
    """The merge rule applied to a deleted row: every key the bot did not change goes, a key it
    changed since the base keeps its value (the bot's change wins)."""
    bot = await Bot(SharedSQLitePersistence(db)).start()
    try:
        await bot.message(setter("user_data", secret="address", visits=1))
        await bot.save()
        await bot.message(count_visit)  # unsaved: visits=2
        other_program(db, "DELETE FROM user_data WHERE user_id = ?", ALICE.id)  # "forget me" on the web
        if refresh:
            await bot.message(lambda context: None)
            assert bot.app.user_data[ALICE.id] == {"visits": 2}
        await bot.save()
        assert stored_user(db, ALICE.id) == {"visits": 2}
        await bot.message(lambda context: None)
        assert bot.app.user_data[ALICE.id] == {"visits": 2}
    finally:
        await bot.app.shutdown()


async def test_a_non_dict_row_written_by_another_program_is_not_overwritten_silently(db):
    bot = await Bot(SharedSQLitePersistence(db)).start()
    try:
        await bot.message(setter("user_data", visits=1))
        await bot.save()
        other_program(db, "UPDATE user_data SET data = '[\"imported\", \"by mistake\"]' WHERE user_id = ?",
                      ALICE.id)
        await bot.message(count_visit)
        caught = await bot.save()
        said = [str(error) for error in bot.errors] + caught
        assert any(f"user_data of user {ALICE.id}" in message for message in said), (
            stored_user(db, ALICE.id), said)
    finally:
        await bot.app.shutdown()
