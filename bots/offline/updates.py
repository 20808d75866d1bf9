"""Update factories: the JSON Telegram sends, turned into ``Update`` objects bound to a bot.

Each takes the ``Application`` (its bot is bound to the update, so ``reply_text`` works) and the
:class:`~bots.offline.api.OfflineBotAPI` (one id counter for messages and updates, and the chats it
has seen, so replies carry the chat's real type and title).
"""

from __future__ import annotations

import time
from typing import Any

from telegram import Update
from telegram.ext import Application

from bots.offline.api import ALICE, Chat, OfflineBotAPI, User, private_chat


def _message(api: OfflineBotAPI, user: User, chat: Chat, date: float | None, **content: Any) -> dict:
    api.remember_chat(chat)
    return {
        "message_id": api.next_id(),
        "date": int(time.time() if date is None else date),
        "chat": chat.to_dict(),
        "from": user.to_dict(),
        **content,
    }


def _update(app: Application, api: OfflineBotAPI, **payload: Any) -> Update:
    return Update.de_json({"update_id": api.next_id(), **payload}, app.bot)


def message_update(
    app: Application,
    api: OfflineBotAPI,
    text: str,
    user: User = ALICE,
    chat: Chat | None = None,
    date: float | None = None,
) -> Update:
    """A text message. Text starting with ``/`` gets the ``bot_command`` entity Telegram adds,
    without which ``CommandHandler`` ignores it."""
    content: dict[str, Any] = {"text": text}
    if text.startswith("/"):
        command = text.split()[0]
        content["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    message = _message(api, user, chat or private_chat(user), date, **content)
    return _update(app, api, message=message)


def sticker_update(
    app: Application, api: OfflineBotAPI, user: User = ALICE, chat: Chat | None = None,
    emoji: str = "👍", date: float | None = None,
) -> Update:
    """A sticker: a message with no text."""
    sticker = {
        "file_id": "CAACAgIAAxkBAAE-offline-sticker", "file_unique_id": "AgADoffline",
        "type": "regular", "width": 512, "height": 512, "is_animated": False,
        "is_video": False, "emoji": emoji,
    }
    return _update(app, api, message=_message(api, user, chat or private_chat(user), date,
                                              sticker=sticker))


def photo_update(
    app: Application, api: OfflineBotAPI, user: User = ALICE, chat: Chat | None = None,
    caption: str | None = None, date: float | None = None,
) -> Update:
    """A photo, optionally with a caption (a caption is not ``text``)."""
    content: dict[str, Any] = {"photo": [{
        "file_id": "AgACAgIAAxkBAAE-offline-photo", "file_unique_id": "AQADoffline",
        "width": 90, "height": 90, "file_size": 1234,
    }]}
    if caption:
        content["caption"] = caption
    return _update(app, api, message=_message(api, user, chat or private_chat(user), date,
                                              **content))


def callback_query_update(
    app: Application, api: OfflineBotAPI, message: dict[str, Any], data: str, user: User = ALICE
) -> Update:
    """A press on an inline button of ``message`` (a message payload the bot sent).

    With ``arbitrary_callback_data`` the button's ``data`` is a cache key, and the real Python
    object is put back by ``ExtBot.insert_callback_data`` - what polling or a webhook would do.
    """
    query = {
        "id": str(api.next_id()),
        "from": user.to_dict(),
        "chat_instance": f"offline-{message['chat']['id']}",
        "message": message,
        "data": data,
    }
    update = _update(app, api, callback_query=query)
    app.bot.insert_callback_data(update)
    return update


def migration_updates(
    app: Application, api: OfflineBotAPI, group: Chat, supergroup: Chat, user: User = ALICE
) -> list[Update]:
    """The two service messages Telegram sends when a group becomes a supergroup:
    one in the old group (``migrate_to_chat_id``) and one in the new supergroup
    (``migrate_from_chat_id``)."""
    return [
        _update(app, api, message=_message(api, user, group, None,
                                           migrate_to_chat_id=supergroup.id)),
        _update(app, api, message=_message(api, user, supergroup, None,
                                           migrate_from_chat_id=group.id)),
    ]
