"""The offline Bot API: run, test and demo any stage of the cookbook with no network and no token.

Three layers, each usable on its own:

* :class:`OfflineBotAPI` - a ``telegram.request.BaseRequest`` subclass. It is the *only* thing
  replaced: the Application, its handlers, ``ExtBot`` and the persistence are all real. It answers
  the Bot API methods our bots call with realistic payloads, records every call in ``calls``, and
  answers any other method with a Bot API error that names it.
* update factories (:func:`message_update`, :func:`sticker_update`, :func:`callback_query_update`,
  :func:`migration_updates`, ...) - the JSON Telegram would send, turned into ``Update`` objects.
* :class:`OfflineChat` - an async context manager around one stage's Application:
  ``send()`` a message and get the bot's replies, ``click()`` a button of the last inline
  keyboard, ``save()``, ``restart()``. Tests, notebooks and ``--demo`` all talk to bots this way.

And :func:`run_stage`, the command line every stage's ``main()`` uses: with ``BOT_TOKEN`` set it
polls Telegram; without, it is a chat in the terminal; with ``--demo`` it plays a scripted
conversation with a restart in the middle.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application, ApplicationBuilder, BasePersistence, CallbackContext
from telegram.request import BaseRequest, RequestData

from persistence.sqlite import DatabaseFileError

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
        answer = getattr(self, f"_answer_{api_method}", None)
        if answer is None:
            body = {
                "ok": False,
                "error_code": 400,
                "description": (
                    f"the offline Bot API does not implement method {api_method!r}; "
                    f"add an _answer_{api_method} method to bots/offline.py:OfflineBotAPI"
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
# Update factories: the JSON Telegram sends, as Update objects bound to the bot
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Building applications that run either online or offline
# --------------------------------------------------------------------------------------------
def application_builder(
    token: str | None = None,
    request: BaseRequest | None = None,
    persistence: BasePersistence | None = None,
) -> ApplicationBuilder:
    """The ApplicationBuilder every stage starts from, with its persistence if one is given.

    ``request`` given (offline): both the bot's requests and ``getUpdates`` go to it, and there is
    no Updater (updates are fed by hand). Otherwise: PTB's own HTTP stack and Updater, for polling.
    """
    builder = ApplicationBuilder().token(token or OFFLINE_TOKEN)
    if request is not None:
        builder = builder.request(request).get_updates_request(request).updater(None)
    if persistence is not None:
        builder = builder.persistence(persistence)
    return builder


BuildApplication = Callable[..., Application]
"""A stage's ``build_application(token=None, persistence=None, request=None)``."""


class OfflineChat:
    """A conversation with one stage's bot, offline, over a persistence that survives restarts.

    ``make_persistence`` is called for every (re)start and must return a *new* persistence over
    the same storage (e.g. ``lambda: PicklePersistence("bot.pickle")``) - exactly what a real
    restart does. With ``echo=True`` the conversation is printed as it happens.

    Use it as ``async with OfflineChat(stage.build_application, make) as chat:``.
    """

    def __init__(
        self,
        build_application: BuildApplication,
        make_persistence: Callable[[], BasePersistence] | None = None,
        *,
        user: User = ALICE,
        chat: Chat | None = None,
        echo: bool = False,
    ) -> None:
        self._build = build_application
        self._make_persistence = make_persistence
        self.user = user
        self.chat = chat
        self.echo = echo
        self.api = OfflineBotAPI()
        self.app: Application | None = None
        self.persistence: BasePersistence | None = None
        self.last_keyboard: dict[str, Any] | None = None
        self.last_keyboard_is_new = False

    # life cycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> OfflineChat:
        if self.app is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Build a fresh Application over a fresh persistence, ``initialize()`` and ``start()`` it:
        start-up loads everything from storage, and the periodic save task begins."""
        self.persistence = self._make_persistence() if self._make_persistence else None
        self.app = self._build(persistence=self.persistence, request=self.api)
        await self.app.initialize()
        await self.app.start()

    async def shutdown(self) -> None:
        """What a bot does on a clean exit: ``stop()`` (saves nothing), then ``shutdown()``
        (a last ``update_persistence()``, then ``flush()``)."""
        if self.app is None:
            return
        app, self.app = self.app, None
        if app.running:
            await app.stop()
        await app.shutdown()

    def discard(self) -> None:
        """Forget an Application whose start failed half-way. Nothing is saved or flushed:
        whatever is in storage stays exactly as it was."""
        self.app = None
        self.persistence = None

    async def restart(self) -> None:
        """Shut the bot down cleanly and start a new Application over the same storage."""
        if self.echo:
            print("  ... bot restarts (shutdown saves, a new Application loads) ...")
        await self.shutdown()
        await self.start()

    async def save(self) -> None:
        """Force the save that would otherwise happen every ``update_interval`` seconds."""
        await self._running().update_persistence()

    def _running(self) -> Application:
        if self.app is None:
            raise RuntimeError("the bot is not running: use 'async with OfflineChat(...)'")
        return self.app

    # talking to the bot ------------------------------------------------------------------------
    def button_labels(self) -> list[str]:
        """The labels of the last inline keyboard the bot sent, row by row."""
        if self.last_keyboard is None:
            return []
        rows = self.last_keyboard["reply_markup"]["inline_keyboard"]
        return [button["text"] for row in rows for button in row]

    async def feed(self, update: Update) -> list[str]:
        """Process one update as polling would, and return the texts the bot sent or edited."""
        app = self._running()
        first_call = len(self.api.calls)
        keyboard_before = self.last_keyboard
        await app.process_update(update)
        replies = []
        for call in self.api.calls[first_call:]:
            if call.method in ("sendMessage", "editMessageText"):
                replies.append(call.params["text"])
            if call.method in ("sendMessage", "editMessageText", "editMessageReplyMarkup"):
                self._note_keyboard(call)
        self.last_keyboard_is_new = self.last_keyboard is not keyboard_before
        if self.echo:
            for reply in replies:
                print(_indent("bot> ", reply))
        return replies

    async def send(
        self, text: str, user: User | None = None, chat: Chat | None = None,
        date: float | None = None,
    ) -> list[str]:
        """Send a text message (or ``/command``) as ``user`` in ``chat``; returns the replies."""
        user = user or self.user
        if self.echo:
            print(f"{user.first_name.lower()}> {text}")
        update = message_update(self._running(), self.api, text, user,
                                chat or self.chat or private_chat(user), date)
        return await self.feed(update)

    async def send_sticker(self, user: User | None = None, chat: Chat | None = None) -> list[str]:
        """Send a sticker (a message without text)."""
        user = user or self.user
        if self.echo:
            print(f"{user.first_name.lower()}> [sticker 👍]")
        update = sticker_update(self._running(), self.api, user, chat or self.chat or private_chat(user))
        return await self.feed(update)

    async def click(self, button_text: str, user: User | None = None) -> list[str]:
        """Press the button labelled ``button_text`` on the last inline keyboard the bot sent."""
        if self.last_keyboard is None:
            raise LookupError("the bot has not sent an inline keyboard yet")
        rows = self.last_keyboard["reply_markup"]["inline_keyboard"]
        buttons = {button["text"]: button for row in rows for button in row}
        if button_text not in buttons:
            raise LookupError(f"no button {button_text!r} on the last keyboard; there are {list(buttons)}")
        if self.echo:
            print(f"{(user or self.user).first_name.lower()}> [presses {button_text!r}]")
        update = callback_query_update(self._running(), self.api, self.last_keyboard,
                                       buttons[button_text]["callback_data"], user or self.user)
        return await self.feed(update)

    def _note_keyboard(self, call: ApiCall) -> None:
        markup = call.params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            key = (int(call.params["chat_id"]), int(call.params.get("message_id") or 0))
            message = self.api.messages.get(key)
            if message is None:  # a new message: the last one stored for that chat
                message = [m for (cid, _), m in self.api.messages.items() if cid == key[0]][-1]
            self.last_keyboard = message


def _indent(prefix: str, text: str) -> str:
    pad = " " * len(prefix)
    return prefix + text.replace("\n", "\n" + pad)


# --------------------------------------------------------------------------------------------
# The command line every stage uses
# --------------------------------------------------------------------------------------------
Demo = Callable[[OfflineChat], Awaitable[None]]


@dataclass
class Stage:
    """What :func:`run_stage` needs to know about a stage."""

    name: str
    build_application: BuildApplication
    make_persistence: Callable[[Path], BasePersistence]
    default_file: str
    file_env: str
    demo: Demo
    description: str = ""
    extra_help: list[str] = field(default_factory=list)


OFFLINE_HELP = (
    "Offline chat: each line you type is a message from Alice. "
    "/restart restarts the bot, /click TEXT presses a button, /quit (or end of input) saves and exits."
)


logger = logging.getLogger("bots")


async def log_error(update: object, context: CallbackContext) -> None:
    """The error handler of every stage: log the error with the chat and user involved, and let
    the bot carry on. Errors of a save have no update; the persistence's message names the id."""
    if isinstance(update, Update):
        chat = update.effective_chat.id if update.effective_chat else None
        user = update.effective_user.id if update.effective_user else None
        where = f"while handling an update (chat {chat}, user {user})"
    elif update is None:
        where = "while saving (update_persistence)"
    else:
        where = f"while handling {update!r:.80}"
    logger.error("%s: %s", where, context.error, exc_info=context.error)


def configure_logging(level: int = logging.INFO) -> None:
    """Log like PTB's examples, but keep httpx below INFO: it logs request URLs, which contain
    the bot token."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def run_stage(stage: Stage, argv: Sequence[str] | None = None) -> int:
    """``main()`` of every stage: polling with ``BOT_TOKEN``, a terminal chat without, or ``--demo``."""
    parser = argparse.ArgumentParser(prog=f"python -m bots.{stage.name}", description=stage.description)
    parser.add_argument(
        "--file", type=Path, default=None,
        help=f"where the bot keeps its data (default: ${stage.file_env} or ./{stage.default_file}; "
        "--demo uses a temporary file unless this is given)",
    )
    parser.add_argument("--demo", action="store_true",
                        help="play a scripted conversation with a restart, offline, and exit")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING if not os.environ.get("BOT_TOKEN") else logging.INFO)
    token = os.environ.get("BOT_TOKEN")
    try:
        if args.demo:
            with tempfile.TemporaryDirectory(prefix="cookbook-demo-") as tmp:
                return asyncio.run(_run_demo(stage, _usable(args.file or Path(tmp) / stage.default_file)))
        path = _usable(args.file or Path(os.environ.get(stage.file_env) or stage.default_file))
        if token:
            app = stage.build_application(token=token, persistence=stage.make_persistence(path))
            print(f"Polling Telegram; data is kept in {path}. Press Ctrl+C to stop.", file=sys.stderr)
            app.run_polling(allowed_updates=Update.ALL_TYPES)
            return 0
        print(f"No BOT_TOKEN set, so the bot runs offline in this terminal (data in {path}). "
              "To run it on Telegram: BOT_TOKEN=<token from @BotFather> "
              f"python -m bots.{stage.name}", file=sys.stderr)
        return asyncio.run(_terminal_chat(stage, path))
    except InvalidToken:
        print("Telegram refused BOT_TOKEN: check the token @BotFather gave you, "
              "or unset BOT_TOKEN to run offline.", file=sys.stderr)
        return 1
    except NetworkError as exc:
        print(f"Cannot reach Telegram ({exc}). Check this machine's network, "
              "or unset BOT_TOKEN to run offline.", file=sys.stderr)
        return 1
    except (StartupError, DatabaseFileError) as exc:  # the latter: a bad file found by polling
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("(interrupted)", file=sys.stderr)
        return 130


def _usable(path: Path) -> Path:
    """``path``, if the bot can keep its data there; else a StartupError naming it."""
    if path.is_dir():
        raise StartupError(f"{path} is a directory: give --file the path of a file.")
    if not path.parent.is_dir():
        raise StartupError(f"Cannot keep the bot's data in {path}: the directory {path.parent} "
                           "does not exist. Create it, or point --file elsewhere.")
    return path


class StartupError(Exception):
    """The bot could not start over its data file; the message names the file and the fix."""


async def _start_over(chat: OfflineChat, path: Path) -> None:
    """Start the chat, turning a failure to load ``path`` into one clear :class:`StartupError`.

    Nothing is written before the data has loaded, so the file is left exactly as it was."""
    try:
        await chat.start()
    except Exception as exc:
        chat.discard()
        if isinstance(exc, DatabaseFileError):  # it already names the file and the fix
            raise StartupError(str(exc)) from exc
        raise StartupError(
            f"Cannot load the bot's data from {path}: {exc}\n"
            f"The file was not changed. Move it away to start fresh, or point --file at another file."
        ) from exc


async def _run_demo(stage: Stage, path: Path) -> int:
    print(f"Demo of {stage.name}, data in {path}\n")
    chat = OfflineChat(stage.build_application, lambda: stage.make_persistence(path), echo=True)
    await _start_over(chat, path)
    try:
        await stage.demo(chat)
    finally:
        await chat.shutdown()
    return 0


async def _terminal_chat(stage: Stage, path: Path) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        print(OFFLINE_HELP, file=sys.stderr)
    chat = OfflineChat(stage.build_application, lambda: stage.make_persistence(path))
    await _start_over(chat, path)
    async with chat:
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.strip() == "/quit":
                break
            text = line.rstrip("\n")
            if not text.strip():
                continue
            if text.strip() == "/restart":
                await chat.restart()
                print("(the bot restarted)")
                continue
            if text.startswith("/click "):
                try:
                    replies = await chat.click(text[len("/click "):].strip())
                except LookupError as exc:
                    print(f"(cannot click: {exc})")
                    continue
            else:
                replies = await chat.send(text)
            for reply in replies:
                print(_indent("bot> ", reply))
            if replies and chat.last_keyboard_is_new:
                print("     buttons: " + "  ".join(f"[{label}]" for label in chat.button_labels())
                      + "   (/click LABEL)")
    if interactive:
        print(f"(saved to {path})", file=sys.stderr)
    return 0
