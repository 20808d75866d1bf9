"""Stage 2: every bug of the tutorial's SQLite persistence, happening under a real Application.

One test per numbered bug (the list in ``notebooks/02_article_sqlite.ipynb``). Each test plays one
scenario against two persistences, with an expectation for each:

* ``article`` - ``persistence/article.py``, the tutorial's class rebuilt with its mistakes: the
  test asserts the broken behaviour exactly (the exception and its message, the lost message,
  the duplicated rows);
* ``sqlite`` - ``persistence/sqlite.py``'s ``SQLitePersistence``, the fix: the same scenario must
  behave correctly. These expectations use only the public persistence API and the Application,
  never its tables.

The bot is stage 2's (stage 1's logger on ``filters.ALL`` plus ``/forget``), driven through
``OfflineChat``. Saves happen only where a test calls ``save()``: the article's class saves every
second, so the timer is stopped after each start (``Application.stop()`` saves nothing) and no test
depends on timing - except bug 5's, which waits for the timer on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from telegram import Update
from telegram.ext import (
    BasePersistence,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    PersistenceInput,
    filters,
)

from bots import stage2_article_sqlite as stage2
from bots.offline import ALICE, BOB, OfflineChat, User, group_chat, supergroup_chat
from persistence.article import ArticleSqlitePersistence, create_article_table

CAROL = stage2.CAROL
T0 = 1_700_000_000  # message dates are fixed: several bugs depend on which second a message is in

AWAIT_NONE = "object NoneType can't be used in 'await' expression"  # awaiting a plain def's None
GATHER_NONE = "An asyncio.Future, a coroutine or an awaitable is required"  # a None in gather()


# --------------------------------------------------------------------------------------------
# The two persistences, over one file per test
# --------------------------------------------------------------------------------------------
@dataclass
class Backend:
    """One persistence class over this test's database file."""

    name: str
    path: Path

    def make(self, article: type[ArticleSqlitePersistence] | None = None) -> BasePersistence:
        """A new persistence over the file (what a restart creates). ``article`` picks a variant
        of the tutorial's class for the ``article`` side; the ``sqlite`` side is always the fix."""
        if self.name == "article":
            create_article_table(self.path)  # the step the tutorial's reader did by hand
            return (article or ArticleSqlitePersistence)(self.path)
        from persistence.sqlite import SQLitePersistence  # imported late: written in parallel

        return SQLitePersistence(self.path)

    async def close(self, persistence: BasePersistence) -> None:
        if isinstance(persistence, ArticleSqlitePersistence):
            persistence.conn.close()
        else:
            await persistence.flush()

    async def stored(self) -> dict[int, list]:
        """``{chat_id: [message texts]}`` as a new process would load it (a fresh instance's
        ``get_chat_data``; for the article, a new connection sees committed rows only)."""
        persistence = self.make()
        try:
            chat_data = await persistence.get_chat_data()
        finally:
            await self.close(persistence)
        return {chat_id: [m["message"] for m in data["messages"]]
                for chat_id, data in chat_data.items() if data.get("messages")}

    async def stored_messages(self, chat_id: int) -> list:
        return (await self.stored()).get(chat_id, [])


@pytest.fixture
def backend(request, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path / "bot.db")


def per_backend(article: Any, sqlite: Any) -> list:
    """Parametrize ``(backend, expected)``: the tutorial's class and what it does, the fix and what
    it does. Use with ``indirect=["backend"]``."""
    return [pytest.param("article", article, id="article"), pytest.param("sqlite", sqlite, id="sqlite")]


def describe(errors: list[BaseException]) -> list[str]:
    return [f"{type(error).__name__}: {error}" for error in errors]


def texts(chat_data: dict | None) -> list:
    return [m["message"] for m in (chat_data or {}).get("messages", [])]


# --------------------------------------------------------------------------------------------
# The bot, as the tests drive it
# --------------------------------------------------------------------------------------------
class Bot:
    """The stage 2 bot (or a variant) over a persistence factory, driven through ``OfflineChat``.

    Errors that reach PTB's error handlers are collected in ``errors``. With ``manual_saves``
    (the default) the periodic save task is stopped right after every start."""

    def __init__(
        self,
        make: Callable[[], BasePersistence],
        build: Callable[..., Any] = stage2.build_application,
        *,
        manual_saves: bool = True,
    ) -> None:
        self.chat = OfflineChat(build, make)
        self.manual_saves = manual_saves
        self.errors: list[BaseException] = []

    @property
    def app(self):
        return self.chat.app

    @property
    def persistence(self):
        return self.chat.persistence

    async def _collect(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.errors.append(context.error)

    async def start(self) -> None:
        await self.chat.start()
        if self.manual_saves:
            await self.chat.app.stop()
        self.chat.app.add_error_handler(self._collect)

    async def shutdown(self) -> None:
        """A clean exit. A persistence whose ``flush`` is a plain ``def`` (the tutorial's) makes
        ``shutdown()`` raise bug 4's TypeError *after* the last save; it is asserted every time,
        so that the other tests can restart the bot and go on."""
        if self.chat.app is None:
            return
        if inspect.iscoroutinefunction(self.chat.persistence.flush):
            await self.chat.shutdown()
        else:
            with pytest.raises(TypeError, match=f"^{AWAIT_NONE}$"):
                await self.chat.shutdown()

    async def restart(self) -> None:
        await self.shutdown()
        await self.start()

    async def send(self, text: str, **kwargs: Any) -> list[str]:
        return await self.chat.send(text, **kwargs)

    async def send_sticker(self, **kwargs: Any) -> list[str]:
        return await self.chat.send_sticker(**kwargs)

    async def save(self) -> None:
        await self.chat.save()

    async def __aenter__(self) -> Bot:
        await self.start()
        return self

    async def __aexit__(self, exc_type, *rest: object) -> None:
        if exc_type is None:
            await self.shutdown()
        elif self.chat.app is not None:  # the test failed: just clean up
            with contextlib.suppress(TypeError):
                await self.chat.shutdown()


@pytest.fixture
async def bot(backend: Backend):
    """Stage 2's bot over ``backend``, started, saving only when told to."""
    async with Bot(backend.make) as running:
        yield running


def with_handlers(*handlers) -> Callable[..., Any]:
    """Stage 2's ``build_application`` with extra handlers (group -1: before the logger's)."""

    def build(token=None, persistence=None, request=None):
        app = stage2.build_application(token, persistence, request)
        for handler in handlers:
            app.add_handler(handler, group=-1)
        return app

    return build


@pytest.fixture
def sql_log(monkeypatch) -> list[tuple[int, str]]:
    """Every SQL statement run by connections opened during the test, with the id of the thread
    that ran it. A spy on ``sqlite3.connect`` (aiosqlite calls it too): the real connection,
    plus ``set_trace_callback``."""
    log: list[tuple[int, str]] = []
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = real_connect(*args, **kwargs)
        connection.set_trace_callback(lambda statement: log.append((threading.get_ident(), statement)))
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    return log


# --------------------------------------------------------------------------------------------
# The tutorial's class with some of its bugs fixed - what a reader would try next
# --------------------------------------------------------------------------------------------
class DeleteWithoutStar(ArticleSqlitePersistence):
    """Bug 1 fixed (``DELETE FROM``), still without ``commit()``."""

    async def drop_chat_data(self, chat_id):
        self.cursor.execute("DELETE FROM chat_data WHERE chat_id = ?", (chat_id,))


class UserDataOn(ArticleSqlitePersistence):
    """The tutorial's class with ``user_data`` switched on - nothing else changed."""

    def __init__(self, name):
        super().__init__(name)
        self.store_data = PersistenceInput(bot_data=False, callback_data=False)


class BotDataOn(ArticleSqlitePersistence):
    """The tutorial's class with ``bot_data`` switched on - nothing else changed."""

    def __init__(self, name):
        super().__init__(name)
        self.store_data = PersistenceInput(user_data=False, callback_data=False)


class UserDataOnGetterFixed(UserDataOn):
    """``user_data`` on, and the first TypeError fixed: ``get_user_data`` returns a dict."""

    async def get_user_data(self):
        return {}


class UserDataOnReadsFixed(UserDataOnGetterFixed):
    """``user_data`` on, ``get_user_data`` and ``refresh_user_data`` fixed; ``update_user_data``
    is still the tutorial's plain ``def`` (it only also notes that PTB called it)."""

    def __init__(self, name):
        super().__init__(name)
        self.save_called = asyncio.Event()

    async def refresh_user_data(self, user_id, user_data):
        pass

    def update_user_data(self, user_id, data):
        self.save_called.set()
        return super().update_user_data(user_id, data)


class NaiveAiosqlitePort(ArticleSqlitePersistence):
    """Bug 13, first trap: the tutorial's ``update_chat_data`` ported to ``aiosqlite`` the obvious
    way - one shared connection, ``commit()`` at the end of each call. Only what the test needs
    is ported: ``get_chat_data`` opens the connection (loading nothing), ``flush`` closes it."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name
        self.aio: aiosqlite.Connection | None = None

    async def get_chat_data(self):
        self.aio = await aiosqlite.connect(self.name)
        return {}

    async def update_chat_data(self, chat_id, data):
        for message in data["messages"]:
            params = (chat_id, message["message_ts"], message["message"])
            async with self.aio.execute(
                "SELECT id FROM chat_data WHERE chat_id = ? AND message_ts = ? AND message = ?", params
            ) as cursor:
                found = await cursor.fetchone()
            if found is None:
                await self.aio.execute(
                    "INSERT INTO chat_data (chat_id, message_ts, message) VALUES (?, ?, ?)", params)
        await self.aio.commit()

    async def flush(self):
        await self.aio.close()
        self.conn.close()


class ToThreadPort(ArticleSqlitePersistence):
    """Bug 13, second trap: the tutorial's stdlib connection, its calls moved to a worker thread
    with ``asyncio.to_thread`` so they stop blocking the event loop."""

    async def get_chat_data(self):
        rows = await asyncio.to_thread(lambda: self.cursor.execute("SELECT * FROM chat_data").fetchall())
        return {row[1]: {"messages": []} for row in rows}


# --------------------------------------------------------------------------------------------
# The bugs
# --------------------------------------------------------------------------------------------
async def starts_and_stores_hello_or_fails(chat: OfflineChat, backend, expected) -> None:
    """The start-up scenario of bugs 3 and 13: with ``expected`` None the bot starts and stores
    "hello"; else ``chat.start()`` raises ``expected`` (type, message) and nothing stays open."""
    if expected is None:
        async with chat:
            await chat.send("hello", date=T0)
        assert await backend.stored_messages(ALICE.id) == ["hello"]
        return
    error, message = expected
    with pytest.raises(error, match=message):
        await chat.start()
    chat.persistence.conn.close()
    chat.discard()


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"errors": ['OperationalError: near "*": syntax error'], "after": ["remember the milk"]},
    sqlite={"errors": [], "after": []},
), indirect=["backend"])
async def test_bug01_forget_runs_delete_star_which_is_not_sql(bot, backend, expected):
    """Bug 1 - ``DELETE * FROM`` is not SQL. ``/forget`` drops the chat from memory at once; the
    next save calls ``drop_chat_data``, whose OperationalError goes to the error handlers. PTB took
    the id off its pending set before the call, so it never retries: the rows stay, and come back
    after a restart."""
    await bot.send("remember the milk", date=T0)
    await bot.save()
    assert await bot.send("/forget") == ["Done: I have forgotten this chat."]
    assert ALICE.id not in bot.app.chat_data
    await bot.save()
    await bot.save()  # no retry: the failed drop is not pending any more
    assert describe(bot.errors) == expected["errors"]
    assert await backend.stored_messages(ALICE.id) == expected["after"]
    await bot.restart()
    assert texts(bot.app.chat_data.get(ALICE.id)) == expected["after"]


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"lock": "database is locked", "after_save": ["remember the milk"],
             "after_shutdown": ["remember the milk"]},
    sqlite={"lock": None, "after_save": [], "after_shutdown": []},
), indirect=["backend"])
async def test_bug02_delete_without_commit_locks_then_rolls_back(backend, expected):
    """Bug 2 - even a correct ``DELETE FROM`` is never committed. After the save the delete holds
    the database's write lock (another program cannot write), other connections still see the
    rows, and ``flush`` closes the connection without committing: the delete is rolled back."""

    def try_to_write() -> str | None:
        with contextlib.closing(sqlite3.connect(backend.path, timeout=0)) as other:
            try:
                other.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                return str(exc)
            other.rollback()
            return None

    async with Bot(lambda: backend.make(article=DeleteWithoutStar)) as bot:
        await bot.send("remember the milk", date=T0)
        await bot.save()
        await bot.send("/forget")
        await bot.save()
        assert bot.errors == []
        assert try_to_write() == expected["lock"]
        assert await backend.stored_messages(ALICE.id) == expected["after_save"]
    assert await backend.stored_messages(ALICE.id) == expected["after_shutdown"]
    assert try_to_write() is None


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article=(sqlite3.OperationalError, "^no such table: chat_data$"),
    sqlite=None,
), indirect=["backend"])
async def test_bug03_no_schema_so_a_fresh_file_cannot_start(backend, expected):
    """Bug 3 - the class never creates its table (the tutorial's reader typed the CREATE TABLE in a
    REPL). On a fresh file ``initialize()`` awaits ``get_chat_data``, whose SELECT fails."""
    if backend.name == "article":
        make = lambda: ArticleSqlitePersistence(backend.path)  # noqa: E731 - no create_article_table
    else:
        make = backend.make
    chat = OfflineChat(stage2.build_application, make)
    await starts_and_stores_hello_or_fails(chat, backend, expected)


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"shutdown": AWAIT_NONE, "again": AWAIT_NONE,
             "reuse": (sqlite3.ProgrammingError, "^Cannot operate on a closed database.$")},
    sqlite={"shutdown": None, "again": None, "reuse": None},
), indirect=["backend"])
async def test_bug04_flush_is_a_plain_def_so_shutdown_crashes(backend, expected):
    """Bug 4 - ``flush`` is a plain ``def``: ``shutdown()`` saves, calls it (the connection is
    closed) and awaits its ``None`` -> TypeError. Shutdown stops half-way, the Application stays
    marked initialized (a second ``shutdown()`` runs again and crashes again), and the closed
    connection makes the persistence object unusable for another start."""
    chat = OfflineChat(stage2.build_application, backend.make)
    await chat.start()
    await chat.send("remember the milk", date=T0)
    app, persistence = chat.app, chat.persistence
    await chat.app.stop()
    for step in ("shutdown", "again"):
        if expected[step] is None:
            await app.shutdown()
        else:
            with pytest.raises(TypeError, match=f"^{expected[step]}$"):
                await app.shutdown()
    assert await backend.stored_messages(ALICE.id) == ["remember the milk"]  # saved before the crash

    again = OfflineChat(stage2.build_application, lambda: persistence)
    if expected["reuse"] is None:
        async with again:
            assert texts(again.app.chat_data[ALICE.id]) == ["remember the milk"]
    else:
        error, message = expected["reuse"]
        with pytest.raises(error, match=message):
            await again.start()
        again.discard()


@pytest.mark.parametrize("backend", ["article", "sqlite"], indirect=True)
@pytest.mark.parametrize(("variant", "article_failure"), [
    pytest.param(UserDataOn, (TypeError, "^'NoneType' object is not iterable$"), id="user_data"),
    pytest.param(BotDataOn, (ValueError, "^bot_data must be of type dict$"), id="bot_data"),
])
async def test_bug05_stub_getters_fail_start_up_once_switched_on(backend, variant, article_failure):
    """Bug 5 (start-up) - the stubs only survive because ``store_data`` switches their kinds off.
    Switch user data on: ``initialize()`` does ``user_data.update(await get_user_data())`` and the
    winning (second, async) ``get_user_data`` returns None. Switch bot data on: ``get_bot_data``
    returns None and PTB insists on a dict. The fix stores every kind from the start."""
    chat = OfflineChat(stage2.build_application, lambda: backend.make(article=variant))
    if backend.name == "sqlite":
        async with chat:
            assert chat.app.user_data == {} and chat.app.bot_data == {}
        return
    error, message = article_failure
    with pytest.raises(error, match=message):
        await chat.start()
    chat.persistence.conn.close()
    chat.discard()


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"reply": [], "errors": [f"TypeError: {AWAIT_NONE}"] * 2, "stored": []},
    sqlite={"reply": ["Nothing stored for this chat yet."], "errors": [], "stored": ["hello"]},
), indirect=["backend"])
async def test_bug05_sync_refresh_user_data_stops_every_handler(backend, expected):
    """Bug 5 (refresh) - with user data on and ``get_user_data`` fixed, the plain-``def``
    ``refresh_user_data`` is awaited before the first handler of every update -> TypeError, handed
    to the error handlers, and no handler of that group runs: no reply, nothing logged, nothing
    marked for saving."""
    async with Bot(lambda: backend.make(article=UserDataOnGetterFixed)) as bot:
        assert await bot.send("/show_data") == expected["reply"]
        await bot.send("hello", date=T0)
        await bot.save()
        assert describe(bot.errors) == expected["errors"]
    assert await backend.stored_messages(ALICE.id) == expected["stored"]


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article=(TypeError, f"^{GATHER_NONE}$"), sqlite=None,
), indirect=["backend"])
async def test_bug05_sync_update_user_data_kills_the_periodic_save(backend, expected):
    """Bug 5 (save) - with user data on and both reads fixed, the plain-``def``
    ``update_user_data`` puts ``None`` among the coroutines of ``asyncio.gather`` in
    ``update_persistence``: gather raises TypeError (not handed to the error handlers), the periodic
    save task dies with it, and ``stop()`` re-raises it. (The other writes of that round may or may
    not have been scheduled - which is why PTB's "coroutine was never awaited" warnings appear.)
    Here the real timer runs: the test waits until PTB has called ``update_user_data``."""
    if backend.name == "article":
        make = lambda: backend.make(article=UserDataOnReadsFixed)  # noqa: E731
    else:
        from persistence.sqlite import SQLitePersistence

        class NotingSQLitePersistence(SQLitePersistence):
            def __init__(self, path):
                super().__init__(path, update_interval=0.05)
                self.save_called = asyncio.Event()

            async def update_user_data(self, user_id, data):
                self.save_called.set()
                await super().update_user_data(user_id, data)

        make = lambda: NotingSQLitePersistence(backend.path)  # noqa: E731
    async with Bot(make, manual_saves=False) as bot:
        await bot.send("hello", date=T0)
        async with asyncio.timeout(10):
            await bot.persistence.save_called.wait()
        if expected is None:
            await bot.app.stop()
        else:
            error, message = expected
            with pytest.raises(error, match=message):
                await bot.app.stop()
        assert bot.errors == []
    gc.collect()  # the round's unawaited coroutines warn now, under this test's filter


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article=(TypeError, f"^{AWAIT_NONE}$"), sqlite=None,
), indirect=["backend"])
async def test_bug06_any_persistent_conversation_fails_start_up(backend, expected):
    """Bug 6 - conversations have no ``store_data`` switch: a ``ConversationHandler(persistent=True,
    name=...)`` makes ``initialize()`` await ``get_conversations(name)``, a plain ``def`` returning
    None -> TypeError. The fix keeps the conversation's state across a restart."""

    async def ask(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        await update.effective_message.reply_text("What is your name?")
        return 1

    async def thank(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        await update.effective_message.reply_text(f"Thanks, {update.effective_message.text}.")
        return ConversationHandler.END

    form = ConversationHandler(
        entry_points=[CommandHandler("form", ask)],
        states={1: [MessageHandler(filters.TEXT & ~filters.COMMAND, thank)]},
        fallbacks=[], persistent=True, name="form",
    )
    bot = Bot(backend.make, with_handlers(form))
    if expected is not None:
        error, message = expected
        with pytest.raises(error, match=message):
            await bot.start()
        bot.persistence.conn.close()
        bot.chat.discard()
        return
    async with bot:
        assert await bot.send("/form") == ["What is your name?"]
        await bot.restart()
        assert await bot.send("Dana") == ["Thanks, Dana."]


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"memory": ["and the eggs"], "stored": ["and the eggs"]},
    sqlite={"memory": ["remember the milk", "and the eggs"], "stored": ["remember the milk", "and the eggs"]},
), indirect=["backend"])
async def test_bug07_refresh_replaces_messages_not_saved_yet(bot, backend, expected):
    """Bug 7 - ``refresh_chat_data`` runs before every handler and *replaces* ``messages`` with
    the stored rows; saves come only every ``update_interval``. Two messages before one save: the
    second refresh throws the first away, so only the second is ever stored."""
    await bot.send("remember the milk", date=T0)
    await bot.send("and the eggs", date=T0 + 1)
    assert texts(bot.app.chat_data[ALICE.id]) == expected["memory"]
    await bot.save()
    assert await backend.stored_messages(ALICE.id) == expected["stored"]


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article=[["hello"], ["hello", "world"], ["hello", "hello", "world"],
             ["hello", "hello", "hello", "world"]],
    sqlite=[["hello"], ["hello", "world"], ["hello", "world"], ["hello", "world"]],
), indirect=["backend"])
async def test_bug08_same_second_update_rewrites_and_multiplies_rows(bot, backend, expected):
    """Bug 8 - ``UPDATE ... SET message=? WHERE chat_id=? AND message_ts=?`` matches every row of
    that second. "hello" and "world" sent in the same second: each later save finds "hello",
    rewrites the "world" row to "hello", no longer finds "world" and inserts it again - and any
    handler (here ``/show_data``) marks the chat for the next save."""
    stored = []
    await bot.send("hello", user=BOB, date=T0)
    await bot.save()
    stored.append(await backend.stored_messages(BOB.id))
    await bot.send("world", user=BOB, date=T0)
    await bot.save()
    stored.append(await backend.stored_messages(BOB.id))
    for _ in range(2):
        await bot.send("/show_data", user=BOB)
        await bot.save()
        stored.append(await backend.stored_messages(BOB.id))
    assert stored == expected
    assert bot.errors == []


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article=[1, 2, 4, 8], sqlite=[1, 1, 1, 1],
), indirect=["backend"])
async def test_bug09_a_sticker_doubles_at_every_save(bot, backend, expected):
    """Bug 9 - a sticker has no text: its row has ``message = NULL``, and ``message = ?`` never
    matches NULL. Every save inserts every copy again, and the next refresh loads all the copies
    back: 1 -> 2 -> 4 -> 8 rows for one sticker."""
    counts = []
    await bot.send_sticker(user=CAROL)
    await bot.save()
    counts.append(len(await backend.stored_messages(CAROL.id)))
    for _ in range(3):
        await bot.send("/show_data", user=CAROL)
        await bot.save()
        counts.append(len(await backend.stored_messages(CAROL.id)))
    assert counts == expected
    assert set(await backend.stored_messages(CAROL.id)) == {None}


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"selects": [6, 21], "on_loop_thread": True},
    sqlite={"selects": "independent of history", "on_loop_thread": False},
), indirect=["backend"])
async def test_bug10_each_save_costs_a_select_per_stored_message(sql_log, bot, backend, expected):
    """Bug 10 - cost: ``update_chat_data`` runs one SELECT per message of the chat's whole history
    at every save, on a blocking ``sqlite3`` connection, in the event loop's own thread (while it
    runs, the bot answers nobody). Counted with ``set_trace_callback``: the statements of one save
    after a history of 5 and of 20 messages. (``sql_log`` comes first: it must spy on
    ``sqlite3.connect`` before ``bot`` opens the database.)"""
    loop_thread = threading.get_ident()
    selects, totals, threads = [], [], set()
    for history, user in ((5, User(2005, "Five")), (20, User(2020, "Twenty"))):
        for i in range(history):
            await bot.send(f"message {i}", user=user, date=T0 + i)
            await bot.save()
        await bot.send("one more", user=user, date=T0 + history)
        sql_log.clear()
        await bot.save()
        statements = [statement for _, statement in sql_log]
        selects.append(sum(s.lstrip().upper().startswith("SELECT") for s in statements))
        totals.append(len(statements))
        threads |= {thread for thread, _ in sql_log}
        assert len(await backend.stored_messages(user.id)) == history + 1
    if expected["selects"] == "independent of history":
        assert selects[0] == selects[1] and totals[0] == totals[1]
    else:
        assert selects == expected["selects"]
    assert (loop_thread in threads) is expected["on_loop_thread"]


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"language": None, "errors": ["KeyError: 'messages'"], "cleared": ["hello"]},
    sqlite={"language": "de", "errors": [], "cleared": []},
), indirect=["backend"])
async def test_bug11_only_messages_are_stored_and_never_deleted(backend, expected):
    """Bug 11 - ``update_chat_data`` stores only ``data["messages"]``, merging: any other key (a
    language setting) is lost at the restart; a chat marked for saving that has no messages raises
    ``KeyError: 'messages'``; and messages removed from memory are never deleted."""

    async def set_language(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.chat_data["language"] = context.args[0]

    async def clear(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.chat_data["messages"].clear()

    build = with_handlers(CommandHandler("language", set_language), CommandHandler("clear", clear))
    async with Bot(backend.make, build) as bot:
        await bot.send("/language de")
        bot.app.mark_data_for_update_persistence(chat_ids=BOB.id)  # e.g. a job for Bob's chat
        await bot.save()
        assert describe(bot.errors) == expected["errors"]

        await bot.send("hello", user=CAROL, date=T0)
        await bot.save()
        await bot.send("/clear", user=CAROL)
        assert texts(bot.app.chat_data[CAROL.id]) == []
        await bot.save()

        await bot.restart()
        assert bot.app.chat_data[ALICE.id].get("language") == expected["language"]
    assert await backend.stored_messages(CAROL.id) == expected["cleared"]


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"errors": ['OperationalError: near "*": syntax error'],
             "stored": {-4001: ["one", "two"], -1001234567890: ["one", "two"]}},
    sqlite={"errors": [], "stored": {-1001234567890: ["one", "two"]}},
), indirect=["backend"])
async def test_bug12_migration_duplicates_the_history(bot, backend, expected):
    """Bug 12 (migration) - when a group becomes a supergroup, ``migrate_chat_data`` moves the
    data in memory; the next save writes it under the new id (``update_chat_data``) and drops the
    old id (``drop_chat_data``: bug 1). The old rows stay: the history is stored twice."""
    group, supergroup = group_chat(), supergroup_chat()
    await bot.send("one", chat=group, date=T0)
    await bot.save()
    await bot.send("two", chat=group, date=T0 + 1)
    await bot.save()
    bot.app.migrate_chat_data(old_chat_id=group.id, new_chat_id=supergroup.id)
    await bot.save()
    assert describe(bot.errors) == expected["errors"]
    assert await backend.stored() == expected["stored"]


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article="no SQL at all", sqlite="a DELETE",
), indirect=["backend"])
async def test_bug12_drop_user_data_is_an_empty_stub(backend, expected, sql_log):
    """Bug 12 ("forget me") - ``drop_user_data`` is an ``async`` stub: awaiting it works and does
    nothing, so a bot that asks PTB to forget a user (``Application.drop_user_data``) forgets
    nothing. The statements each persistence runs for the call, from ``set_trace_callback``."""
    persistence = backend.make()
    sql_log.clear()
    assert await persistence.drop_user_data(ALICE.id) is None
    statements = [statement for _, statement in sql_log]
    await backend.close(persistence)
    if expected == "no SQL at all":
        assert statements == []
    else:
        assert any(s.lstrip().upper().startswith("DELETE") for s in statements), statements


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article={"error": "ProgrammingError: Error binding parameter 3: type 'set' is not supported",
             "half_written": True},
    sqlite={"error": None, "half_written": False},
), indirect=["backend"])
async def test_bug13_one_shared_async_connection_commits_half_written_rows(backend, expected):
    """Bug 13 (shared connection) - an ``aiosqlite`` port with one shared connection and a
    ``commit()`` per call: ``update_persistence`` runs the chats' ``update_chat_data`` concurrently,
    so Bob's commit also commits the rows Alice's call has inserted so far; when Alice's call then
    fails, its first rows are already stored. The fix commits a save round as one transaction in
    which each chat's row is written whole or not at all."""
    good = [{"message": f"a{i}", "message_ts": T0 + i} for i in range(4)]
    unstorable = {"message": {"a set"}, "message_ts": T0 + 10}
    async with Bot(lambda: backend.make(article=NaiveAiosqlitePort)) as bot:
        bot.app.chat_data[ALICE.id]["messages"] = [*good, unstorable]
        bot.app.chat_data[BOB.id]["messages"] = [{"message": "b0", "message_ts": T0 + 20}]
        bot.app.mark_data_for_update_persistence(chat_ids=[ALICE.id, BOB.id])
        await bot.save()  # Application.update_persistence: one asyncio.gather over both chats
        assert len(bot.errors) == 1
        if expected["error"] is not None:
            assert describe(bot.errors) == [expected["error"]]
    stored = await backend.stored()
    assert stored[BOB.id] == ["b0"]
    alice = stored.get(ALICE.id, [])
    if expected["half_written"]:
        assert 0 < len(alice) < len(good) and alice == [m["message"] for m in good][: len(alice)]
    else:
        assert alice == []


@pytest.mark.parametrize(("backend", "expected"), per_backend(
    article=(sqlite3.ProgrammingError, "^SQLite objects created in a thread can only be used in that same"),
    sqlite=None,
), indirect=["backend"])
async def test_bug13_stdlib_connection_in_to_thread_fails_its_thread_check(backend, expected):
    """Bug 13 (threads) - moving the tutorial's stdlib calls into ``asyncio.to_thread`` runs them on
    a worker thread, but the connection was created on the event loop's thread and
    ``check_same_thread`` refuses: start-up fails in ``get_chat_data``. The fix uses ``aiosqlite``,
    whose connection lives on its own thread."""
    chat = OfflineChat(stage2.build_application, lambda: backend.make(article=ToThreadPort))
    await starts_and_stores_hello_or_fails(chat, backend, expected)
