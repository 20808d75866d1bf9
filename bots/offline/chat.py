"""The OfflineChat driver: a conversation with one stage's bot, offline, across restarts.

Tests, notebooks, ``--demo`` and the terminal chat all talk to bots through :class:`OfflineChat`:
``send()`` a message and get the bot's replies, ``click()`` a button of the last inline keyboard,
``save()``, ``restart()``, and ``wait_for_messages()`` the bot sends on its own (a reminder
firing). It builds the stage's Application with the offline Bot API injected
(``build_application(persistence=..., request=OfflineBotAPI())``) and knows nothing about any
particular persistence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from telegram import Update
from telegram.ext import Application, BasePersistence

from bots.offline.api import ALICE, ApiCall, Chat, OfflineBotAPI, User, private_chat
from bots.offline.updates import callback_query_update, message_update, sticker_update

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
        self.last_update_handled = False
        """Whether a handler took the last update (a bot may handle a message and not answer)."""
        self._read = 0  # calls before this index have been looked at
        self._unprompted: list[str] = []  # messages the bot sent on its own, not yet taken
        self._turn = asyncio.Lock()  # while an update is processed, what the bot sends is a reply

    # life cycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> OfflineChat:
        if self.app is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Build a fresh Application over a fresh persistence, ``initialize()`` it, run its
        ``post_init`` and ``start()`` it, in the order ``run_polling`` does: start-up loads
        everything from storage, and the periodic save task begins."""
        self.persistence = self._make_persistence() if self._make_persistence else None
        self.app = self._build(persistence=self.persistence, request=self.api)
        await self.app.initialize()
        if self.app.post_init:
            await self.app.post_init(self.app)
        await self.app.start()

    async def shutdown(self) -> None:
        """What a bot does on a clean exit: ``stop()`` (saves nothing), then ``shutdown()``
        (a last ``update_persistence()``, then ``flush()``); ``post_stop`` and ``post_shutdown``
        run where ``run_polling`` runs them."""
        if self.app is None:
            return
        app, self.app = self.app, None
        if app.running:
            await app.stop()
            if app.post_stop:
                await app.post_stop(app)
        await app.shutdown()
        if app.post_shutdown:
            await app.post_shutdown(app)

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
        async with self._turn:
            self._collect_unprompted()  # sent before this update: not its replies
            keyboard_before = self.last_keyboard
            self.last_update_handled = handled(app, update)
            await app.process_update(update)
            replies = []
            for call in self._unread_calls():
                if call.method in ("sendMessage", "editMessageText"):
                    replies.append(call.params["text"])
                if call.method in ("sendMessage", "editMessageText", "editMessageReplyMarkup"):
                    self._note_keyboard(call)
            self.last_keyboard_is_new = self.last_keyboard is not keyboard_before
        if self.echo:
            for reply in replies:
                print(indent("bot> ", reply))
        return replies

    # messages the bot sends on its own ------------------------------------------------------------
    def unprompted_messages(self) -> list[str]:
        """Take the texts the bot sent on its own (a job, ``post_init``), oldest first."""
        self._collect_unprompted()
        messages, self._unprompted = self._unprompted, []
        return messages

    async def wait_for_messages(self, count: int = 1, within: float | None = 10.0) -> list[str]:
        """Wait until the bot has sent ``count`` messages on its own - a reminder firing - and
        return them (all that arrived, oldest first); ``TimeoutError`` if they have not arrived
        ``within`` seconds (``None``: wait for ever)."""
        messages: list[str] = []
        async with asyncio.timeout(within):
            while True:
                async with self._turn:
                    self.api.new_call.clear()
                    messages += self.unprompted_messages()
                if len(messages) >= count:
                    return messages
                await self.api.new_call.wait()

    def _unread_calls(self) -> list[ApiCall]:
        calls, self._read = self.api.calls[self._read:], len(self.api.calls)
        return calls

    def _collect_unprompted(self) -> None:
        new = [call.params["text"] for call in self._unread_calls() if call.method == "sendMessage"]
        self._unprompted += new
        if self.echo:
            for message in new:
                print(indent("bot> ", message))

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


def handled(app: Application, update: Update) -> bool:
    """Whether a handler of ``app`` takes ``update``: PTB's own test, ``check_update``, before the
    update is processed (afterwards a conversation may have moved on)."""
    return any(
        handler.check_update(update) not in (None, False)
        for group in app.handlers.values()
        for handler in group
    )


def indent(prefix: str, text: str) -> str:
    """``text`` after ``prefix``, its further lines aligned under the first."""
    pad = " " * len(prefix)
    return prefix + text.replace("\n", "\n" + pad)
