"""The persistence contract: what PTB 22's Application needs from any ``BasePersistence``.

One suite, run against every persistence: PTB's ``PicklePersistence`` and the cookbook's
``SQLitePersistence`` by default. Point it at your own class (Redis, Postgres, ...) with::

    pytest tests/test_persistence_contract.py --persistence mypackage.module:make_persistence

``make_persistence`` is any callable that takes a storage location (a ``pathlib.Path`` in a fresh
temporary directory; use it as a file path, or derive a database name or key prefix from it) and
returns a *new* persistence over that storage. Calling it twice with the same path must give two
objects over the same data: that is how the suite restarts a bot. A class whose constructor takes
the path as first argument works as it is.

Where a persistence legitimately differs, the test says so with ``pytest.skip`` and the reason.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib
from pathlib import Path
from typing import Any

import pytest
from postgres_server import make_postgres_persistence
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import (
    BasePersistence,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    PersistenceInput,
    PicklePersistence,
    filters,
)

from bots.offline import (
    ALICE,
    BOB,
    OfflineChat,
    application_builder,
    group_chat,
    migration_updates,
    supergroup_chat,
)
from persistence import SharedSQLitePersistence, SQLitePersistence

BUILTIN = {
    "pickle": PicklePersistence,
    "sqlite": SQLitePersistence,
    "shared": SharedSQLitePersistence,
    "sqlite-lazy": functools.partial(SQLitePersistence, lazy=True),
    "shared-lazy": functools.partial(SharedSQLitePersistence, lazy=True),
    "postgres": make_postgres_persistence,
    "postgres-lazy": functools.partial(make_postgres_persistence, lazy=True),
}


def _load(spec: str):
    module, _, name = spec.partition(":")
    if not name:
        raise pytest.UsageError(f"--persistence wants 'module:callable', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "make" in metafunc.fixturenames:
        spec = metafunc.config.getoption("persistence")
        factories = {spec: _load(spec)} if spec else BUILTIN
        metafunc.parametrize("make_factory", list(factories.values()), ids=list(factories))


@pytest.fixture
def make(make_factory, tmp_path: Path):
    """``make()`` gives a new persistence over this test's storage, as a restart would."""
    location = tmp_path / "store"
    return lambda **kwargs: make_factory(location, **kwargs)


def same(a: Any, b: Any) -> bool:
    """Equal *and* of identical types, all the way down (``1 == 1.0`` and ``(1,) != [1]`` aside)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, b[k2]) for k2 in b if k2 == k) for k, v in a.items()
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


RICH = {
    "messages": [{"message": "hello", "message_ts": 1_700_000_000.25}],
    7: {"nested int key": True, 8: None},
    "tuple": (1, "two", (3.5, [4])),
    "big": 2**64 + 1,
    "negative": -(2**70),
    "bools": [True, False],
    "unicode": "привет 👋 ' \" ; DROP TABLE",
    "1": "a string key that looks like an int",
    1: "an int key",
    "": {},
}


async def stored(p: Any, table: str) -> dict[int, Any]:
    """Every stored user's (``"user_data"``) or chat's data: what ``get_*`` gives, and for a lazy
    persistence (which gives nothing at start-up) each stored id loaded the documented way."""
    loaded = await (p.get_user_data() if table == "user_data" else p.get_chat_data())
    if getattr(p, "lazy", False):
        # (nothing at start-up; an instance used again after flush() gives the ids its live data
        # held before, as an Application started again keeps those dicts)
        refresh = p.refresh_user_data if table == "user_data" else p.refresh_chat_data
        for key in await p.stored_ids(table):
            if key not in loaded:
                loaded[key] = {}
                await refresh(key, loaded[key])
    return loaded


async def reopen(persistence: BasePersistence, make) -> BasePersistence:
    await persistence.flush()
    return make()


# ----------------------------------------------------------------------------------------------
# direct calls, in the shapes Application uses
# ----------------------------------------------------------------------------------------------
async def test_a_new_store_is_empty_in_the_shapes_ptb_needs(make):
    p = make()
    assert await stored(p, "user_data") == {}
    assert await stored(p, "chat_data") == {}
    assert await p.get_bot_data() == {}
    assert await p.get_callback_data() is None
    assert await p.get_conversations("any") == {}
    await p.flush()


async def test_data_round_trips_exactly_across_a_restart(make):
    p = make()
    await p.update_user_data(ALICE.id, copy.deepcopy(RICH))
    await p.update_chat_data(-4001, {"settings": {"lang": "en"}})
    await p.update_bot_data({"counter": 3, 1001: ("a", 1)})
    p = await reopen(p, make)
    users, chats, bot = await stored(p, "user_data"), await stored(p, "chat_data"), await p.get_bot_data()
    assert same(users, {ALICE.id: RICH})
    assert same(chats, {-4001: {"settings": {"lang": "en"}}})
    assert same(bot, {"counter": 3, 1001: ("a", 1)})
    await p.flush()


async def test_get_returns_fresh_objects(make):
    p = make()
    await p.update_chat_data(1, {"list": [1]})
    await p.update_bot_data({"list": [1]})
    first = await stored(p, "chat_data")
    first[1]["list"].append(2)
    (await p.get_bot_data())["list"].append(2)
    p = await reopen(p, make)
    assert await stored(p, "chat_data") == {1: {"list": [1]}}
    assert await p.get_bot_data() == {"list": [1]}
    await p.flush()


async def test_conversations_keys_are_tuples_and_none_deletes(make):
    p = make()
    await p.update_conversation("form", (-4001, ALICE.id), 2)
    await p.update_conversation("form", (-4001, BOB.id), "ASK_CITY")
    await p.update_conversation("form", ("inline-message-id", ALICE.id), 1)
    await p.update_conversation("other", (7,), 5)
    p = await reopen(p, make)
    convs = await p.get_conversations("form")
    assert convs == {(-4001, ALICE.id): 2, (-4001, BOB.id): "ASK_CITY", ("inline-message-id", ALICE.id): 1}
    assert all(type(key) is tuple for key in convs)
    await p.update_conversation("form", (-4001, ALICE.id), None)
    p = await reopen(p, make)
    convs = await p.get_conversations("form")
    # None means "ended": PicklePersistence keeps a None entry, SQLitePersistence deletes the row;
    # both mean the same to ConversationHandler
    assert convs.get((-4001, ALICE.id)) is None
    assert {k: v for k, v in convs.items() if v is not None} == {
        (-4001, BOB.id): "ASK_CITY", ("inline-message-id", ALICE.id): 1}
    assert await p.get_conversations("other") == {(7,): 5}
    await p.flush()


async def test_callback_data_comes_back_as_the_tuple_ptb_needs(make):
    cache = ([("kb-uuid", 1_700_000_000.5, {"btn-uuid": ("apple", 3)})], {"query-1": "kb-uuid"})
    p = make()
    await p.update_callback_data(copy.deepcopy(cache))
    p = await reopen(p, make)
    loaded = await p.get_callback_data()
    assert same(loaded, cache)
    await p.flush()


async def test_drops_delete_for_good_even_the_last_row(make):
    p = make()
    await p.update_chat_data(1, {"a": 1})
    await p.update_user_data(2, {"b": 2})
    p = await reopen(p, make)
    # Application always loads before it drops (PicklePersistence ignores a drop before a load)
    assert await stored(p, "chat_data") == {1: {"a": 1}}
    assert await stored(p, "user_data") == {2: {"b": 2}}
    await p.drop_chat_data(1)
    await p.drop_user_data(2)
    p = await reopen(p, make)
    assert await stored(p, "chat_data") == {}
    assert await stored(p, "user_data") == {}
    await p.flush()


async def test_a_save_round_runs_its_writes_concurrently_without_losing_any(make):
    p = make()
    await asyncio.gather(
        *(p.update_chat_data(chat_id, {"n": chat_id}) for chat_id in range(200)),
        *(p.update_user_data(user_id, {"u": user_id}) for user_id in range(1000, 1100)),
        p.update_bot_data({"round": 1}),
    )
    p = await reopen(p, make)
    assert await stored(p, "chat_data") == {chat_id: {"n": chat_id} for chat_id in range(200)}
    assert len(await stored(p, "user_data")) == 100
    await p.flush()


async def test_the_same_instance_works_after_flush(make):
    p = make()
    await p.update_chat_data(1, {"a": 1})
    await p.flush()
    await p.update_chat_data(2, {"b": 2})
    assert await stored(p, "chat_data") == {1: {"a": 1}, 2: {"b": 2}}
    await p.flush()


# ----------------------------------------------------------------------------------------------
# through a real Application
# ----------------------------------------------------------------------------------------------
FORM_NAME, FORM_CITY = range(2)


async def note(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every text goes to chat_data, user_data and a bot_data counter."""
    text = update.effective_message.text
    context.chat_data.setdefault("notes", []).append(text)
    context.user_data["last"] = text
    context.bot_data["count"] = context.bot_data.get("count", 0) + 1


async def show(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(
        f"chat={context.chat_data.get('notes', [])} user={context.user_data.get('last')} "
        f"count={context.bot_data.get('count', 0)}"
    )


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    context.application.drop_user_data(update.effective_user.id)
    context.application.drop_chat_data(update.effective_chat.id)
    await update.effective_message.reply_text("forgotten")


async def migrate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Telegram sends two service messages; migrate on one of them only, or the second moves the
    (now empty) old entry over the moved data."""
    if update.effective_message.migrate_to_chat_id:
        context.application.migrate_chat_data(message=update.effective_message)


async def form_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    await update.effective_message.reply_text("name?")
    return FORM_NAME


async def form_name(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    context.user_data["name"] = update.effective_message.text
    await update.effective_message.reply_text("city?")
    return FORM_CITY


async def form_city(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    name, city = context.user_data["name"], update.effective_message.text
    await update.effective_message.reply_text(f"{name} from {city}")
    return ConversationHandler.END


async def menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    buttons = [[InlineKeyboardButton("apple x3", callback_data=("apple", 3))]]
    await update.effective_message.reply_text("pick", reply_markup=InlineKeyboardMarkup(buttons))


async def picked(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.callback_query.answer()
    await update.callback_query.edit_message_text(f"picked {update.callback_query.data!r}")


def contract_bot(persistence=None, request=None, token=None):
    """A bot that uses every kind of data PTB persists."""
    app = (application_builder(token, request, persistence)
           .arbitrary_callback_data(True).build())
    app.add_handler(ConversationHandler(
        entry_points=[CommandHandler("form", form_start)],
        states={FORM_NAME: [MessageHandler(filters.TEXT & ~filters.COMMAND, form_name)],
                FORM_CITY: [MessageHandler(filters.TEXT & ~filters.COMMAND, form_city)]},
        fallbacks=[], name="form", persistent=True,
    ))
    app.add_handler(CommandHandler("show", show))
    app.add_handler(CommandHandler("forget", forget))
    app.add_handler(CommandHandler("menu", menu))
    app.add_handler(CallbackQueryHandler(picked))
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, migrate))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, note))
    return app


async def test_everything_survives_a_restart(make):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("one")
        await chat.send("two", user=BOB, chat=group_chat())
        await chat.restart()
        assert await chat.send("/show") == ["chat=['one'] user=one count=2"]
        assert await chat.send("/show", user=BOB, chat=group_chat()) == ["chat=['two'] user=two count=2"]


async def test_a_conversation_resumes_after_a_restart(make):
    async with OfflineChat(contract_bot, make) as chat:
        assert await chat.send("/form") == ["name?"]
        await chat.restart()
        assert await chat.send("Ada") == ["city?"]
        await chat.restart()
        assert await chat.send("London") == ["Ada from London"]
        await chat.restart()
        assert await chat.send("not in the form") == []  # ended: the text goes to `note`


async def test_buttons_sent_before_a_restart_still_work(make):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("/menu")
        await chat.restart()
        assert await chat.click("apple x3") == ["picked ('apple', 3)"]


async def test_forget_is_still_forgotten_after_a_restart(make):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("secret")
        await chat.save()
        assert await chat.send("/forget") == ["forgotten"]
        await chat.restart()
        assert await chat.send("/show") == ["chat=[] user=None count=1"]


async def test_group_to_supergroup_migration_moves_chat_data(make):
    group, supergroup = group_chat(), supergroup_chat()
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("in the group", chat=group)
        await chat.save()
        for update in migration_updates(chat.app, chat.api, group, supergroup):
            await chat.feed(update)
        await chat.restart()
        chats = await stored(chat.app.persistence, "chat_data")
        assert chats[supergroup.id] == {"notes": ["in the group"]}
        assert group.id not in chats


async def test_store_data_switches_kinds_off(make, make_factory):
    def switched(**kwargs):
        return make(store_data=PersistenceInput(chat_data=False, bot_data=False), **kwargs)

    async with OfflineChat(contract_bot, switched) as chat:
        await chat.send("one")
        await chat.restart()
        assert await chat.send("/show") == ["chat=[] user=one count=0"]


async def test_an_unchanged_save_round_changes_nothing(make):
    async with OfflineChat(contract_bot, make) as chat:
        await chat.send("one")
        await chat.save()
        await chat.save()
        await chat.restart()
        assert await chat.send("/show") == ["chat=['one'] user=one count=1"]


async def test_flush_leaves_the_persistence_usable_for_a_second_run(make):
    persistence = make()
    async with OfflineChat(contract_bot, lambda: persistence) as chat:
        await chat.send("one")
        await chat.restart()  # shutdown() -> flush(), then initialize() again on the same object
        assert await chat.send("/show") == ["chat=['one'] user=one count=1"]
