"""Stage 9: one bot, several processes, one PostgreSQL database - and no update lost.

The bot counts messages per user (``user_data["messages"]``) and per chat
(``chat_data["messages"]``), keeps each process's own count in ``bot_data`` under that process's
key, and has a two-step form (``/form``: name, then city) in a persistent ``ConversationHandler``.
Any of its processes may get any update: a user's second answer can land on another process than
the first, and the form still continues at the right step with the right answers.

What makes that safe is in the builder line, in plain sight: ``PostgresPersistence`` (one database
for all processes) and ``application_class(IsolatingApplication)``, which runs every update with
its user and chat locked in all processes, their rows read fresh before the handlers and written
after them (``persistence/postgres.py`` explains how, and what it costs).

Run it::

    python -m bots.stage9_several_processes                        # offline chat, one process
    python -m bots.stage9_several_processes --demo --workers 4     # 4 processes, random routing
    BOT_TOKEN=123:ABC python -m bots.stage9_several_processes --workers 4   # on Telegram

Without ``DATABASE_URL`` a private PostgreSQL is started (``bots/local_postgres.py``), its data in
``./stage9-postgres`` (a temporary directory for ``--demo``). With ``BOT_TOKEN`` this process is the
one receiver (it polls Telegram: only one client may call ``getUpdates``) and feeds the updates to
``--workers`` worker processes at random, which handle them and answer Telegram themselves; see
``bots/workers.py`` and the README for the alternative, several webhook workers behind a proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BasePersistence,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

from bots.commands import UNKNOWN_COMMAND
from bots.local_postgres import database_url
from bots.logs import configure_logging, log_error
from bots.offline import OFFLINE_TOKEN
from bots.offline.cli import reach_telegram, token_problem
from persistence.postgres import IsolatingApplication, PostgresPersistence, PostgresSchemaError

NAME, CITY = range(2)
FORM = "form"
"""The conversation's name: its steps are stored under it."""

ASK_NAME = "{first}, what is your name?"
ASK_CITY = "{first}, which city do you live in?"
DONE = "Thank you, {first}: {name} from {city}. Forms completed by you: {forms}."
COUNTED = "{first}: your message {mine}, this chat's message {chat}."


MODULE = "bots.stage9_several_processes"  # what the router runs, as `python -m MODULE --worker`


def worker_name() -> str:
    """This process's name in ``bot_data``: ``STAGE9_WORKER`` (set by the router), or its pid."""
    return os.environ.get("STAGE9_WORKER") or f"pid {os.getpid()}"


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Explain what the bot does."""
    await update.effective_message.reply_text(
        "I count messages - yours, this chat's, and each of my processes' - whichever of my "
        "processes gets them. /form asks your name and city (its two steps may land on different "
        "processes), /stats shows the counts.")


def plural(number: int, word: str) -> str:
    return f"{number} {word}" if number == 1 else f"{number} {word}s"


async def count(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every text outside the form: +1 for the user, the chat and this process."""
    context.user_data["messages"] = context.user_data.get("messages", 0) + 1
    context.chat_data["messages"] = context.chat_data.get("messages", 0) + 1
    mine = f"handled by {worker_name()}"
    context.bot_data[mine] = context.bot_data.get(mine, 0) + 1
    await update.effective_message.reply_text(COUNTED.format(
        first=update.effective_user.first_name, mine=context.user_data["messages"],
        chat=context.chat_data["messages"]))


async def form_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    context.user_data.setdefault("answers", {})[update.effective_chat.id] = {}
    await update.effective_message.reply_text(ASK_NAME.format(first=update.effective_user.first_name))
    return NAME


async def form_name(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    context.user_data["answers"][update.effective_chat.id]["name"] = update.effective_message.text
    await update.effective_message.reply_text(ASK_CITY.format(first=update.effective_user.first_name))
    return CITY


async def form_city(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    answers = context.user_data["answers"].pop(update.effective_chat.id)
    answers["city"] = update.effective_message.text
    context.user_data["profile"] = answers
    context.user_data["forms"] = context.user_data.get("forms", 0) + 1
    await update.effective_message.reply_text(DONE.format(
        first=update.effective_user.first_name, forms=context.user_data["forms"], **answers))
    return ConversationHandler.END


async def stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The user's, the chat's and every process's counts."""
    per_worker = ", ".join(f"{key}: {value}" for key, value in sorted(context.bot_data.items())) or "none"
    profile = context.user_data.get("profile")
    await update.effective_message.reply_text(
        f"{update.effective_user.first_name}: {plural(context.user_data.get('messages', 0), 'message')}, "
        f"profile {profile}. This chat: {plural(context.chat_data.get('messages', 0), 'message')}. "
        f"Per process: {per_worker}.")


def build_application(
    token: str | None = None,
    persistence: BasePersistence | None = None,
    request: BaseRequest | None = None,
) -> Application:
    """One worker's Application. ``IsolatingApplication`` isolates every update, whichever way it
    arrives (``update_queue`` after ``start()``, as polling and ``run_webhook`` deliver them, or a
    direct ``process_update``); ``concurrent_updates`` lets updates of different users overlap."""
    builder = (ApplicationBuilder().token(token or OFFLINE_TOKEN)
               .application_class(IsolatingApplication)
               .persistence(persistence).concurrent_updates(32))
    if request is not None:
        builder.request(request).get_updates_request(request)
    app = builder.build()
    text = filters.TEXT & ~filters.COMMAND
    app.add_handler(ConversationHandler(
        entry_points=[CommandHandler("form", form_start)],
        states={NAME: [MessageHandler(text, form_name)], CITY: [MessageHandler(text, form_city)]},
        fallbacks=[], name=FORM, persistent=persistence is not None,
    ))
    app.add_handler(CommandHandler(["start", "help"], start))
    app.add_handler(CommandHandler("stats", stats))
    app.add_handler(MessageHandler(text, count))
    app.add_handler(UNKNOWN_COMMAND)  # last: answers the commands the handlers above leave
    app.add_error_handler(log_error)
    return app


def make_persistence(dsn: str) -> PostgresPersistence:
    """All processes of the bot over one database (in the schema ``STAGE9_SCHEMA``, default
    ``public``); bot data is saved (merged with the other processes') every 5 seconds."""
    return PostgresPersistence(dsn, update_interval=5, schema=os.environ.get("STAGE9_SCHEMA", "public"))


def main(argv: list[str] | None = None) -> int:
    from bots import workers  # the process machinery: workers, the router, the demo

    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="a scripted conversation over several "
                        "worker processes with random routing, a restart, and the totals")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: 4 for --demo and BOT_TOKEN, else one)")
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)  # started by the router
    parser.add_argument("--debug", action="store_true",
                        help="log everything, PTB's tracebacks included (the token stays hidden)")
    args = parser.parse_args(argv)
    token = os.environ.get("BOT_TOKEN")
    configure_logging(logging.DEBUG if args.debug else logging.INFO if token else logging.WARNING, token)
    if not args.debug:
        logging.getLogger("pgserver").setLevel(logging.WARNING)  # its start-up chatter
    if args.worker:
        # (the address comes in the environment, where other users cannot read it, unlike argv)
        return asyncio.run(workers.run_worker(sys.modules[__name__], os.environ["DATABASE_URL"],
                                              args.worker, token))
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    problem = token and not args.demo and (token_problem(token) or asyncio.run(reach_telegram(token)))
    if problem:  # (before any server starts or worker is spawned)
        print(problem, file=sys.stderr)
        return 1
    try:
        if args.demo:  # (a temporary server: stopped, then its directory removed, when this exits)
            dsn = database_url(Path(tempfile.mkdtemp(prefix="cookbook-stage9-")), delete=True)
            return asyncio.run(workers.demo(MODULE, dsn, args.workers or 4))
        dsn = database_url(Path("stage9-postgres").resolve())
        if token:
            return asyncio.run(workers.receive_and_route(MODULE, dsn, args.workers or 4, token))
        return asyncio.run(workers.terminal_chat(sys.modules[__name__], dsn))
    except PostgresSchemaError as exc:  # no server at DATABASE_URL, another program's tables...
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the chat has shut the bot down, which saved
        print("\n(Ctrl+C: the bot stopped and saved its data)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
