"""Stage 1: a message logger made persistent with PTB's own ``PicklePersistence``.

Every text message is appended to ``context.chat_data["messages"]`` with its timestamp;
``/show_data`` lists what this chat has stored. Making it persistent took two steps:

1. create a persistence: ``PicklePersistence(filepath=...)``;
2. hand it to the builder: ``ApplicationBuilder().persistence(...)``.

PTB then loads ``chat_data`` at start-up and writes the chats that changed every
``update_interval`` seconds (60 by default) and once more on a clean shutdown.

Run it::

    python -m bots.stage1_pickle_logger            # offline chat in this terminal
    python -m bots.stage1_pickle_logger --demo     # scripted conversation with a restart
    BOT_TOKEN=123:ABC python -m bots.stage1_pickle_logger   # on Telegram

The data file is ``./stage1.pickle``; choose another with ``--file PATH`` or ``STAGE1_FILE``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BasePersistence,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    PicklePersistence,
    filters,
)
from telegram.request import BaseRequest

from bots.commands import UNKNOWN_COMMAND
from bots.logs import log_error
from bots.offline import OFFLINE_TOKEN, OfflineChat, Stage, run_stage

START_TEXT = (
    "I am a message logger. Everything you write here is stored for this chat, "
    "and it survives restarts. /show_data lists what I have stored."
)


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Explain what the bot does."""
    await update.effective_message.reply_text(START_TEXT)


async def save_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Append the message and its timestamp to this chat's stored list.

    Only ``chat_data`` is touched: PTB marks the chat as changed after the handler and the
    persistence writes it at the next save."""
    message = update.effective_message
    context.chat_data.setdefault("messages", []).append(
        {"message": message.text, "message_ts": message.date.timestamp()}
    )


def format_messages(messages: list[dict]) -> str:
    """One ``time: text`` line per stored message; times in UTC, and the line says so (the bot
    cannot know the user's time zone)."""
    lines = []
    for entry in messages:
        when = datetime.fromtimestamp(entry["message_ts"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(f"{when}: {entry['message'] if entry['message'] is not None else '(no text)'}")
    return "\n".join(lines)


async def show_data(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Reply with every message stored for this chat."""
    messages = context.chat_data.get("messages", [])
    if not messages:
        await update.effective_message.reply_text("Nothing stored for this chat yet.")
        return
    await update.effective_message.reply_text(
        f"{len(messages)} stored message(s):\n{format_messages(messages)}"
    )


def add_logger_handlers(app: Application, message_filter: filters.BaseFilter = filters.TEXT) -> None:
    """The logger's handlers, shared by stages 1-3 (stage 2 logs ``filters.ALL`` like the article)."""
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("show_data", show_data))
    app.add_handler(MessageHandler(message_filter & ~filters.COMMAND, save_message))


def build_application(
    token: str | None = None,
    persistence: BasePersistence | None = None,
    request: BaseRequest | None = None,
) -> Application:
    """The logger bot over ``persistence``.

    ``request`` replaces PTB's HTTP layer: the offline Bot API in tests, notebooks and the terminal
    chat; ``None`` (on Telegram) keeps PTB's own."""
    builder = ApplicationBuilder().token(token or OFFLINE_TOKEN).persistence(persistence)
    if request is not None:
        builder.request(request).get_updates_request(request)
    app = builder.build()
    add_logger_handlers(app)
    app.add_handler(UNKNOWN_COMMAND)  # last: answers the commands the handlers above leave
    app.add_error_handler(log_error)
    return app


def make_persistence(path: Path) -> PicklePersistence:
    """Step 1 of 2: a persistence. (Step 2 is ``.persistence(persistence)`` in
    :func:`build_application`.)"""
    return PicklePersistence(filepath=path)


async def demo(chat: OfflineChat) -> None:
    """Two messages, a restart, and the messages are still there."""
    await chat.send("/start")
    await chat.send("remember the milk")
    await chat.send("and the eggs")
    await chat.restart()
    await chat.send("/show_data")


STAGE = Stage(
    name="stage1_pickle_logger",
    build_application=build_application,
    make_persistence=make_persistence,
    default_file="stage1.pickle",
    file_env="STAGE1_FILE",
    demo=demo,
    description="Stage 1: a message logger on PicklePersistence.",
)


def main() -> int:
    return run_stage(STAGE)


if __name__ == "__main__":
    raise SystemExit(main())
