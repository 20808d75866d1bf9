"""Stage 5: buttons carrying Python objects (arbitrary callback data) work after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from telegram.ext import Application, ContextTypes

from bots import stage5_inline_buttons as stage5
from bots.offline import ALICE, BOB, OfflineChat, User, callback_query_update, group_chat
from persistence.sqlite import SQLitePersistence

FRESH_MENU = f"{stage5.EXPIRED}\n{stage5.MENU_TEXT}"


@pytest.fixture
def errors() -> list[BaseException]:
    return []


@pytest.fixture
def make_chat(db: Path, errors: list[BaseException]):
    """``make_chat(**build_kwargs)``: the shop bot offline over ``db``. Errors raised in
    handlers (which PTB would only log) are collected and fail the test."""

    def make(**build_kwargs: Any) -> OfflineChat:
        def build(**kwargs: Any) -> Application:
            app = stage5.build_application(**kwargs, **build_kwargs)

            async def record(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
                errors.append(context.error)

            app.add_error_handler(record)
            return app

        return OfflineChat(build, lambda: stage5.make_persistence(db))

    yield make
    assert errors == []


@pytest.fixture
async def chat(make_chat):
    async with make_chat() as chat:
        yield chat


async def press(chat: OfflineChat, message: dict, label: str, user: User = ALICE) -> list[str]:
    """Press the button ``label`` of ``message`` (a message the bot sent, maybe long ago)."""
    buttons = {b["text"]: b for row in message["reply_markup"]["inline_keyboard"] for b in row}
    update = callback_query_update(chat.app, chat.api, message, buttons[label]["callback_data"], user)
    return await chat.feed(update)


def last_answer(chat: OfflineChat) -> dict[str, Any]:
    """The parameters of the bot's last ``answerCallbackQuery`` (the toast or alert the user sees)."""
    return next(c.params for c in reversed(chat.api.calls) if c.method == "answerCallbackQuery")


def cached_keyboards(chat: OfflineChat) -> list[tuple]:
    keyboards, _queries = chat.app.bot.callback_data_cache.persistence_data
    return keyboards


async def test_buttons_carry_tuples_and_telegram_only_sees_ids(chat):
    assert await chat.send("/menu") == [stage5.MENU_TEXT]
    sent = [b["callback_data"] for row in chat.last_keyboard["reply_markup"]["inline_keyboard"]
            for b in row]
    assert all(isinstance(data, str) and len(data) == 64 for data in sent)
    [(_uuid, _time, buttons)] = cached_keyboards(chat)
    assert sorted(buttons.values(), key=str) == sorted(
        [(p, q) for p in stage5.PRODUCTS for q in stage5.QUANTITIES] + [stage5.EMPTY_CART], key=str)


async def test_a_button_sent_before_a_restart_gets_its_object(chat):
    await chat.send("/menu")
    await chat.restart()
    assert await chat.click("pear +6") == [f"Your cart: 6 x pear\n{stage5.MENU_TEXT}"]
    assert last_answer(chat)["text"] == "Added 6 x pear"
    assert chat.app.user_data[ALICE.id]["cart"] == {"pear": 6}


async def test_the_stored_button_objects_are_tuples_again_when_loaded(chat, db):
    await chat.send("/menu")
    await chat.save()
    fresh = SQLitePersistence(db)
    try:
        stored = await fresh.get_callback_data()
    finally:
        await fresh.flush()
    assert isinstance(stored, tuple), "PTB refuses callback data that is not a tuple"
    [(_uuid, _time, buttons)] = stored[0]
    assert ("pear", 6) in buttons.values() and stage5.EMPTY_CART in buttons.values()


async def test_each_press_edits_the_menu_and_drops_the_old_keyboard(chat):
    await chat.send("/menu")
    menu_id = chat.last_keyboard["message_id"]
    await chat.click("apple +6")
    assert await chat.click("apple +1") == [f"Your cart: 7 x apple\n{stage5.MENU_TEXT}"]
    edits = [c.params for c in chat.api.calls if c.method == "editMessageText"]
    assert [e["message_id"] for e in edits] == [menu_id, menu_id]
    assert len(cached_keyboards(chat)) == 1, "only the keyboard on screen should be cached"


async def test_a_button_of_a_dropped_keyboard_gets_a_friendly_answer(chat):
    await chat.send("/menu")
    old_menu = chat.last_keyboard
    await chat.click("apple +1")  # edits the message; the old keyboard is dropped from the cache
    await chat.restart()
    assert await press(chat, old_menu, "cheese +6") == [FRESH_MENU]
    answer = last_answer(chat)
    assert (answer["text"], answer["show_alert"]) == (stage5.EXPIRED, True)
    assert chat.app.user_data[ALICE.id]["cart"] == {"apple": 1}
    # the fresh menu works
    assert await chat.click("cheese +6") == [f"Your cart: 1 x apple, 6 x cheese\n{stage5.MENU_TEXT}"]


async def test_callback_data_not_from_this_bot_gets_a_friendly_answer(chat):
    await chat.send("/menu")
    update = callback_query_update(chat.app, chat.api, chat.last_keyboard, "made-up-by-a-modified-client")
    assert await chat.feed(update) == [FRESH_MENU]
    assert last_answer(chat)["text"] == stage5.EXPIRED
    assert "cart" not in chat.app.user_data.get(ALICE.id, {})


async def test_the_callback_cache_is_bounded(make_chat, db):
    async with make_chat(arbitrary_callback_data=3) as chat:
        assert chat.app.bot.callback_data_cache.maxsize == 3
        menus = []
        for _ in range(5):
            await chat.send("/menu")
            menus.append(chat.last_keyboard)
        assert len(cached_keyboards(chat)) == 3
        await chat.restart()
        assert len(cached_keyboards(chat)) == 3, "the three newest keyboards are loaded back"
        assert await press(chat, menus[4], "apple +1") == [f"Your cart: 1 x apple\n{stage5.MENU_TEXT}"]
        assert await press(chat, menus[3], "apple +1") == [f"Your cart: 2 x apple\n{stage5.MENU_TEXT}"]
        for old in menus[:2]:  # the least recently used keyboards were dropped
            assert await press(chat, old, "apple +1") == [FRESH_MENU]
        assert chat.app.user_data[ALICE.id]["cart"] == {"apple": 2}
        assert len(cached_keyboards(chat)) == 3, "each edit added a keyboard, the cap still holds"


async def test_empty_the_cart_and_the_cart_command(chat):
    assert await chat.send("/cart") == ["Your cart is empty."]
    await chat.send("/menu")
    await chat.click("pear +1")
    await chat.click("cheese +6")
    assert await chat.send("/cart") == ["Your cart: 1 x pear, 6 x cheese"]
    assert await chat.click("empty the cart") == [f"Your cart is empty.\n{stage5.MENU_TEXT}"]
    await chat.restart()
    assert await chat.send("/cart") == ["Your cart is empty."]


async def test_in_a_group_each_presser_fills_their_own_cart(chat):
    group = group_chat()
    await chat.send("/menu", user=ALICE, chat=group)
    await chat.click("apple +6", user=ALICE)
    await chat.click("pear +1", user=BOB)
    await chat.restart()
    assert await chat.send("/cart", user=ALICE, chat=group) == ["Your cart: 6 x apple"]
    assert await chat.send("/cart", user=BOB, chat=group) == ["Your cart: 1 x pear"]


def test_only_product_tuples_are_cart_items():
    assert stage5.is_cart_item(("pear", 6))
    for other in (["pear", 6], ("pear", "6"), ("plum", 1), ("pear",), stage5.EMPTY_CART, None):
        assert not stage5.is_cart_item(other), other
