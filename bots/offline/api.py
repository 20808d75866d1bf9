"""The fake Bot API: the only thing the cookbook replaces to run a bot with no network.

:class:`OfflineBotAPI` is a ``telegram.request.BaseRequest`` subclass. The Application, its
handlers, ``ExtBot`` and the persistence are all real; this class answers the Bot API methods our
bots call with the payloads Telegram would send, records every call in ``calls``, and answers any
other method with a Bot API error that names it. Hand it to a bot through its
``build_application(request=...)``, as the stages' tests, notebooks and terminal chat do.

Also here: the people and chats of the offline world (:data:`ALICE`, :data:`BOB`,
:func:`group_chat`, ...) and :func:`application_builder`, for tests that build a small bot of
their own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from telegram.ext import ApplicationBuilder, BasePersistence
from telegram.request import BaseRequest, RequestData

OFFLINE_TOKEN = "123456789:OFFLINE-not-a-real-token"
"""A syntactically valid token; nothing is ever sent with it."""

BOT_USER = {
    "id": 123456789,
    "is_bot": True,
    "first_name": "Cookbook Bot",
    "username": "cookbook_offline_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


# --------------------------------------------------------------------------------------------
# People and chats
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    """A Telegram user who talks to the bot."""

    id: int
    first_name: str
    username: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.username:
            data["username"] = self.username
        return data


@dataclass(frozen=True)
class Chat:
    """A chat: ``private`` (id = the user's id), ``group`` (negative id) or ``supergroup``."""

    id: int
    type: str = "private"
    title: str | None = None
    first_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.title:
            data["title"] = self.title
        if self.first_name:
            data["first_name"] = self.first_name
        return data


ALICE = User(1001, "Alice", "alice")
BOB = User(1002, "Bob", "bob")


def private_chat(user: User) -> Chat:
    """The one-to-one chat between ``user`` and the bot (Telegram gives it the user's id)."""
    return Chat(user.id, "private", first_name=user.first_name)


def group_chat(chat_id: int = -4001, title: str = "Cookbook group") -> Chat:
    """A basic group (negative id)."""
    return Chat(chat_id, "group", title=title)


def supergroup_chat(chat_id: int = -1001234567890, title: str = "Cookbook group") -> Chat:
    """A supergroup (ids start with -100)."""
    return Chat(chat_id, "supergroup", title=title)


# --------------------------------------------------------------------------------------------
# The Bot API, answered locally
# --------------------------------------------------------------------------------------------
@dataclass
class ApiCall:
    """One request the bot made: the Bot API method and its parameters."""

    method: str
    params: dict[str, Any]


class OfflineBotAPI(BaseRequest):
    """Answers the Bot API locally, the way Telegram would, and records every call.

    Unknown methods get ``{"ok": false, "error_code": 400, ...}``, which PTB turns into
    ``telegram.error.BadRequest`` - so a bot that calls something this class does not know fails
    loudly instead of getting a made-up answer.
    """

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.new_call = asyncio.Event()
        """Set at every call (clear it before waiting for the next one)."""
        self._ids = itertools.count(1)
        # what the bot has sent, by (chat_id, message_id), so that edits return the full message
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.chats: dict[int, dict[str, Any]] = {}

    # BaseRequest's abstract interface -------------------------------------------------------
    @property
    def read_timeout(self) -> float | None:
        return None

    async def initialize(self) -> None:
        """Nothing to open: there is no connection."""

    async def shutdown(self) -> None:
        """Nothing to close: there is no connection."""

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        api_method = url.rsplit("/", 1)[-1]
        params = dict(request_data.parameters) if request_data else {}
        self.calls.append(ApiCall(api_method, params))
        self.new_call.set()
        answer = getattr(self, f"_answer_{api_method}", None)
        if answer is None:
            body = {
                "ok": False,
                "error_code": 400,
                "description": (
                    f"the offline Bot API does not implement method {api_method!r}; "
                    f"add an _answer_{api_method} method to bots/offline/api.py:OfflineBotAPI"
                ),
            }
            return 400, json.dumps(body).encode()
        return 200, json.dumps({"ok": True, "result": answer(params)}).encode()

    # helpers ------------------------------------------------------------------------------
    def next_id(self) -> int:
        """A fresh id for messages and updates (one counter, so ids never collide)."""
        return next(self._ids)

    def remember_chat(self, chat: Chat) -> None:
        """Called for every fed update, so replies carry the chat's real type and title."""
        self.chats[chat.id] = chat.to_dict()

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        chat_id = int(chat_id)
        return self.chats.get(chat_id, {"id": chat_id, "type": "private" if chat_id > 0 else "group"})

    def _store(self, message: dict[str, Any]) -> dict[str, Any]:
        self.messages[(message["chat"]["id"], message["message_id"])] = message
        return message

    def _edited(self, params: dict[str, Any], **changes: Any) -> dict[str, Any] | bool:
        if "inline_message_id" in params:  # Telegram answers edits of inline messages with True
            return True
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = dict(self.messages.get(key) or {
            "message_id": key[1], "date": int(time.time()), "chat": self._chat(key[0]),
            "from": BOT_USER,
        })
        message.update(changes, edit_date=int(time.time()))
        if "reply_markup" not in params:
            message.pop("reply_markup", None)
        return self._store(message)

    # the Bot API methods our bots use ---------------------------------------------------------
    def _answer_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return BOT_USER

    def _answer_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        message = {
            "message_id": self.next_id(),
            "date": int(time.time()),
            "chat": self._chat(params["chat_id"]),
            "from": BOT_USER,
            "text": params["text"],
        }
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:  # Telegram echoes only these
            message["reply_markup"] = markup
        return self._store(message)

    def _answer_editMessageText(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        changes = {"text": params["text"]}
        if "reply_markup" in params:
            changes["reply_markup"] = params["reply_markup"]
        return self._edited(params, **changes)

    def _answer_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        changes = {"reply_markup": params["reply_markup"]} if "reply_markup" in params else {}
        return self._edited(params, **changes)

    def _answer_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        return True

    def _answer_deleteWebhook(self, params: dict[str, Any]) -> bool:
        return True

    def _answer_setMyCommands(self, params: dict[str, Any]) -> bool:
        return True

    def _answer_getUpdates(self, params: dict[str, Any]) -> list[Any]:
        return []


# --------------------------------------------------------------------------------------------
# A builder for tests that make a bot of their own
# --------------------------------------------------------------------------------------------
def application_builder(
    token: str | None = None,
    request: BaseRequest | None = None,
    persistence: BasePersistence | None = None,
) -> ApplicationBuilder:
    """An ApplicationBuilder for a test's own small bot (the stages write theirs out in full).

    ``request`` given (offline): both the bot's requests and ``getUpdates`` go to it, and there is
    no Updater (updates are fed by hand). Otherwise: PTB's own HTTP stack and Updater, for polling.
    """
    builder = ApplicationBuilder().token(token or OFFLINE_TOKEN)
    if request is not None:
        builder = builder.request(request).get_updates_request(request).updater(None)
    if persistence is not None:
        builder = builder.persistence(persistence)
    return builder
