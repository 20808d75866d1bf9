"""Stage 2: the stage 1 logger on a popular tutorial's SQLite persistence - which is broken.

The bot is stage 1's message logger (its handlers are imported, not copied), logging every
message like the tutorial did (``filters.ALL``: stickers and photos too), plus ``/forget``, which
asks PTB to drop this chat's data. Its persistence is ``persistence/article.py``, the tutorial's
hand-written ``BasePersistence`` on the stdlib ``sqlite3`` module, rebuilt with all its bugs.
Everything here is meant to go wrong, visibly; ``notebooks/02_article_sqlite.ipynb`` explains why,
and stage 3 (``persistence/sqlite.py``) is the fix.

Run it::

    python -m bots.stage2_article_sqlite --demo   # watch messages get lost, rows multiply, /forget fail
    python -m bots.stage2_article_sqlite          # offline chat in this terminal
    BOT_TOKEN=123:ABC python -m bots.stage2_article_sqlite   # on Telegram (please don't)

The data file is ``./stage2.db``; choose another with ``--file PATH`` or ``STAGE2_FILE``. The
tutorial's reader had to create its table by hand first; :func:`make_persistence` does that step.
Every shutdown ends in a ``TypeError`` (the class's ``flush`` is not ``async``); the command line
says so instead of printing a traceback (the last save has run by then). Piped or fast input shows
bug 7 at once: ``printf 'hello\\n/show_data\\n' | python -m bots.stage2_article_sqlite`` answers
"Nothing stored" - the refresh before ``/show_data`` replaced the unsaved "hello" with the (empty)
table, and that empty list is what the next save wrote.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BasePersistence,
    CommandHandler,
    ContextTypes,
    filters,
)
from telegram.request import BaseRequest

from bots.commands import UNKNOWN_COMMAND
from bots.logs import log_error
from bots.offline import BOB, OFFLINE_TOKEN, OfflineChat, Stage, User, run_stage
from bots.stage1_pickle_logger import add_logger_handlers
from persistence.article import ArticleSqlitePersistence, create_article_table

CAROL = User(1003, "Carol", "carol")

FLUSH_CRASH = "object NoneType can't be used in 'await' expression"
"""What ``Application.shutdown()`` raises when it awaits the article's plain-``def`` ``flush``."""


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Drop everything stored for this chat. PTB removes it from memory now and asks the
    persistence to delete it (``drop_chat_data``) at the next save."""
    context.application.drop_chat_data(update.effective_chat.id)
    await update.effective_message.reply_text("Done: I have forgotten this chat.")


def build_application(
    token: str | None = None,
    persistence: BasePersistence | None = None,
    request: BaseRequest | None = None,
) -> Application:
    """Stage 1's logger, logging every kind of message as the tutorial did, plus ``/forget``.

    ``request`` replaces PTB's HTTP layer (the offline Bot API); ``None`` keeps PTB's own."""
    builder = ApplicationBuilder().token(token or OFFLINE_TOKEN).persistence(persistence)
    if request is not None:
        builder.request(request).get_updates_request(request)
    app = builder.build()
    add_logger_handlers(app, filters.ALL)
    app.add_handler(CommandHandler("forget", forget))
    app.add_handler(UNKNOWN_COMMAND)  # last: answers the commands the handlers above leave
    app.add_error_handler(log_error)
    return app


def make_persistence(path: Path) -> ArticleSqlitePersistence:
    """The tutorial's class over ``path``, after creating its table - the step its reader did by
    hand in a REPL (without it the bot cannot start: ``no such table: chat_data``)."""
    create_article_table(path)
    return ArticleSqlitePersistence(path)


# --------------------------------------------------------------------------------------------
# The demo: every failure happens for real, and is printed, not hidden
# --------------------------------------------------------------------------------------------
def _say(text: str) -> None:
    """An explanation, indented under the conversation; a blank line after it."""
    print("   " + text.replace("\n", "\n   ") + "\n")


async def _print_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """What PTB hands to the error handlers (a failed save arrives with ``update=None``)."""
    print(f"  !! error handler received {type(context.error).__name__}: {context.error}")


async def _manual_saves(chat: OfflineChat) -> None:
    """Stop the 1-second save timer (``app.stop()`` saves nothing) so that each save below
    happens exactly where the demo calls ``chat.save()`` - the very ``update_persistence()`` the
    timer runs - and print what reaches the error handlers."""
    await chat.app.stop()
    chat.app.add_error_handler(_print_error)


async def _save(chat: OfflineChat) -> None:
    print("  ... save: Application.update_persistence() ...")
    await chat.save()


def _database_file(chat: OfflineChat) -> str:
    """The file the persistence's connection has open (the class does not keep its name)."""
    return chat.persistence.conn.execute("PRAGMA database_list").fetchone()[2]


def _rows(path: str, chat_id: int | None = None) -> list[tuple]:
    """What the database really holds: plain sqlite3, a separate connection, committed rows only."""
    query = "SELECT id, chat_id, message_ts, message FROM chat_data"
    params: tuple = ()
    if chat_id is not None:
        query, params = query + " WHERE chat_id = ?", (chat_id,)
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(query + " ORDER BY id", params).fetchall()


async def demo(chat: OfflineChat) -> None:
    """Four failures in a row, a crashing restart, then the table as it really is."""
    path = _database_file(chat)
    await _manual_saves(chat)
    print("The tutorial's class saves every second. To show each step in the same order on every\n"
          "run, this demo stopped that timer and saves by hand at each '... save ...' line.\n")

    print("1. Two messages before a save: the first one is lost (bug 7)")
    await chat.send("remember the milk")
    await chat.send("and the eggs")
    await _save(chat)
    await chat.send("/show_data")
    _say("refresh_chat_data() runs before every handler and REPLACES chat_data['messages']\n"
         "with the rows stored so far - so 'remember the milk', not saved yet, was thrown away\n"
         "before 'and the eggs' was appended.")

    print("2. Two messages in the same second: rows multiply at every save (bug 8)")
    second = int(time.time())
    await chat.send("hello", user=BOB, date=second)
    await _save(chat)
    await chat.send("world", user=BOB, date=second)
    await _save(chat)
    for _ in range(3):
        await chat.send("/show_data", user=BOB)
        await _save(chat)
    _say("update_chat_data() finds 'hello' and runs UPDATE ... WHERE chat_id=? AND message_ts=?,\n"
         "which rewrites EVERY row of that second to 'hello'; then 'world' is not found any\n"
         "more and is inserted again. Any handler (even /show_data) marks the chat for the next\n"
         f"save. Bob sent two messages; his rows now: {[row[3] for row in _rows(path, BOB.id)]}")

    print("3. A sticker duplicates itself (bug 9)")
    await chat.send_sticker(user=CAROL)
    await _save(chat)
    counts = [len(_rows(path, CAROL.id))]
    for _ in range(3):
        await chat.send("/show_data", user=CAROL)
        await _save(chat)
        counts.append(len(_rows(path, CAROL.id)))
    _say(f"Carol sent ONE sticker; rows after each save: {counts}. A sticker has no text, so\n"
         "its row has message = NULL, and 'message = ?' never matches NULL: every save inserts\n"
         "every copy again, and the next refresh loads all the copies back.")

    print("4. /forget does not forget (bug 1)")
    await chat.send("/forget")
    await _save(chat)
    await chat.send("/show_data")
    _say("drop_chat_data() runs 'DELETE * FROM chat_data ...', which is not SQL. The error goes\n"
         "to the error handlers, PTB has already taken the chat off its to-do list, and the\n"
         "next refresh loads Alice's rows straight back (and so does the restart below).")

    print("5. A restart: shutdown crashes (bug 4)")
    try:
        await chat.restart()
    except TypeError as exc:
        print(f"  !! Application.shutdown() raised TypeError: {exc}")
        _say("flush() is a plain 'def': it closed the connection and returned None, and PTB\n"
             "awaited that None. The last save had already run (shutdown saves, then flushes),\n"
             "so nothing more is lost - but PTB stopped half-way: the Application still counts as\n"
             "initialized, and run_polling() would skip post_shutdown.")
    await chat.start()
    await _manual_saves(chat)
    await chat.send("/show_data")
    print()

    print("6. What the database really holds")
    try:
        await chat.shutdown()
    except TypeError as exc:
        print(f"  !! the final shutdown raised TypeError again: {exc}")
    print(f"  sqlite3 {path}: SELECT id, chat_id, message_ts, message FROM chat_data")
    for row in _rows(path):
        print(f"  {row}")
    print("\nStage 3 fixes every one of these: persistence/sqlite.py, class SQLitePersistence.")


STAGE = Stage(
    name="stage2_article_sqlite",
    build_application=build_application,
    make_persistence=make_persistence,
    default_file="stage2.db",
    file_env="STAGE2_FILE",
    demo=demo,
    description="Stage 2: the logger on a tutorial's SQLite persistence, bugs and all (do not copy).",
)


def main() -> int:
    """``run_stage``; a shutdown that crashes the tutorial's way is explained, not a traceback."""
    try:
        return run_stage(STAGE)
    except TypeError as exc:
        if str(exc) != FLUSH_CRASH:
            raise
        print(f"The bot's shutdown crashed with TypeError: {exc}\n"
              "That is the tutorial's bug 4: its flush() is a plain 'def', and PTB awaits it. "
              "The last save ran just before (shutdown saves, then flushes). A message missing "
              "from /show_data was lost earlier, by bug 7: lines typed less than a second apart "
              "replace each other. notebooks/02_article_sqlite.ipynb shows why.",
              file=sys.stderr)
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
