"""The offline Bot API itself: only the HTTP layer is fake, so it must behave like Telegram."""

from __future__ import annotations

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest
from telegram.ext import CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters

from bots.offline import (
    ALICE,
    OfflineBotAPI,
    OfflineChat,
    application_builder,
    group_chat,
    message_update,
    migration_updates,
    sticker_update,
    supergroup_chat,
)


def echo_app(persistence=None, request=None, arbitrary_callback_data=False):
    """A tiny bot with a keyboard whose buttons carry Python objects (or plain strings)."""
    app = application_builder(request=request).arbitrary_callback_data(arbitrary_callback_data).build()

    async def menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        payloads = [("apple", 3), ("pear", 1)] if arbitrary_callback_data else ["apple", "pear"]
        keyboard = [[InlineKeyboardButton(str(p), callback_data=p) for p in payloads]]
        await update.effective_message.reply_text("pick", reply_markup=InlineKeyboardMarkup(keyboard))

    async def picked(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.callback_query.answer()
        await update.callback_query.edit_message_text(f"picked {update.callback_query.data!r}")

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(update.effective_message.text)

    app.add_handler(CommandHandler("menu", menu))
    app.add_handler(CallbackQueryHandler(picked))
    app.add_handler(MessageHandler(filters.TEXT, echo))
    return app


async def test_unknown_api_method_is_a_clear_bad_request():
    async with OfflineChat(echo_app) as chat:
        with pytest.raises(BadRequest, match="does not implement method 'sendPhoto'"):
            await chat.app.bot.send_photo(ALICE.id, photo="AgAC-some-file-id")
        assert chat.api.calls[-1].method == "sendPhoto"


async def test_every_call_is_recorded_with_its_parameters():
    async with OfflineChat(echo_app) as chat:
        assert await chat.send("hello") == ["hello"]
        call = chat.api.calls[-1]
        assert call.method == "sendMessage"
        assert call.params["chat_id"] == ALICE.id and call.params["text"] == "hello"
        assert chat.api.calls[0].method == "getMe"


async def test_commands_carry_their_bot_command_entity():
    app = echo_app(request=OfflineBotAPI())
    api = app.bot.request
    update = message_update(app, api, "/menu now")
    [entity] = update.message.entities
    assert (entity.type, entity.offset, entity.length) == ("bot_command", 0, len("/menu"))
    assert message_update(app, api, "no command").message.entities == ()


async def test_sent_messages_are_realistic_and_include_reply_markup():
    async with OfflineChat(echo_app) as chat:
        assert await chat.send("/menu") == ["pick"]
        sent = chat.last_keyboard
        assert sent["from"]["is_bot"] and sent["chat"]["id"] == ALICE.id
        assert [b["text"] for b in sent["reply_markup"]["inline_keyboard"][0]] == ["apple", "pear"]


async def test_click_on_plain_callback_data_edits_the_message():
    async with OfflineChat(echo_app) as chat:
        await chat.send("/menu")
        assert await chat.click("pear") == ["picked 'pear'"]
        assert [c.method for c in chat.api.calls[-2:]] == ["answerCallbackQuery", "editMessageText"]


async def test_click_hands_back_arbitrary_python_objects():
    def build(persistence=None, request=None):
        return echo_app(persistence, request, arbitrary_callback_data=True)

    async with OfflineChat(build) as chat:
        await chat.send("/menu")
        assert await chat.click("('apple', 3)") == ["picked ('apple', 3)"]


async def test_click_on_a_missing_button_names_the_buttons():
    async with OfflineChat(echo_app) as chat:
        with pytest.raises(LookupError, match="not sent an inline keyboard"):
            await chat.click("apple")
        await chat.send("/menu")
        with pytest.raises(LookupError, match=r"\['apple', 'pear'\]"):
            await chat.click("banana")


async def test_non_text_and_group_updates():
    app = echo_app(request=OfflineBotAPI())
    api = app.bot.request
    sticker = sticker_update(app, api, chat=group_chat())
    assert sticker.message.text is None and sticker.message.sticker.emoji == "👍"
    assert sticker.effective_chat.type == "group"
    old, new = migration_updates(app, api, group_chat(-4001), supergroup_chat(-1009))
    assert (old.message.chat.id, old.message.migrate_to_chat_id) == (-4001, -1009)
    assert (new.message.chat.id, new.message.migrate_from_chat_id) == (-1009, -4001)


async def test_the_driver_tells_a_handled_update_from_one_no_handler_takes():
    async with OfflineChat(echo_app) as chat:
        assert await chat.send("hi") == ["hi"] and chat.last_update_handled
        assert await chat.send_sticker() == [] and not chat.last_update_handled
