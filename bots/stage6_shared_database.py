"""Stage 6: the bot is not the only program writing its database.

A notes bot on ``SharedSQLitePersistence`` and an admin command line that edits the same file while the
bot runs. What it shows:

* **refresh** - an admin edits a user's data; the running bot sees it at that user's next message,
  and never loses what it has not saved yet (the save merges both sides' changes);
* **forget** - ``/forget`` erases everything the bot knows about you (``drop_user_data`` and your
  private chat's ``drop_chat_data``), for good;
* **migrate** - a group upgraded to a supergroup keeps its data (``migrate_chat_data``).

The bot::

    python -m bots.stage6_shared_database            # offline chat in this terminal
    python -m bots.stage6_shared_database --demo     # the story above, with a real admin process
    BOT_TOKEN=123:ABC python -m bots.stage6_shared_database   # on Telegram

The admin tool (any time, also while the bot runs)::

    python -m bots.stage6_shared_database admin list
    python -m bots.stage6_shared_database admin set USER_ID KEY VALUE    # VALUE: JSON, or text
    python -m bots.stage6_shared_database admin broadcast "TEXT"

Both use ``./stage6.sqlite3``, or ``--file PATH`` (anywhere on the line) / ``STAGE6_FILE``. The
bot saves every ``SAVE_EVERY`` (5) seconds: a user or note is visible to the admin tool from its
first save on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BasePersistence,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

from bots.commands import UNKNOWN_COMMAND
from bots.logs import log_error
from bots.offline import (
    BOB,
    OFFLINE_TOKEN,
    OfflineChat,
    Stage,
    group_chat,
    migration_updates,
    run_stage,
    supergroup_chat,
)
from persistence import SharedSQLitePersistence
from persistence.sqlite import DatabaseFileError

DEFAULT_FILE = "stage6.sqlite3"
FILE_ENV = "STAGE6_FILE"


# ---- the bot -----------------------------------------------------------------------------------
async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Explain what the bot does."""
    await update.effective_message.reply_text(
        "I keep notes: write anything and I remember it. /me shows what I know about you, "
        "/forget erases it, /chat counts this chat's messages. An admin may edit my database "
        "while I run."
    )


async def remember(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Keep the text as one of the user's notes; count the chat's messages."""
    notes = context.user_data.setdefault("notes", [])
    notes.append(update.effective_message.text)
    context.chat_data["messages"] = context.chat_data.get("messages", 0) + 1
    await update.effective_message.reply_text(f"Noted ({len(notes)}).")


async def me(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Everything the bot knows about the user, and the admin's announcement, if any."""
    lines = [f"{key}: {value}" for key, value in context.user_data.items()] or ["nothing"]
    text = "What I know about you:\n" + "\n".join(lines)
    if "announcement" in context.bot_data:
        text += f"\nAnnouncement: {context.bot_data['announcement']}"
    await update.effective_message.reply_text(text)


async def chat_info(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """How many messages this chat has sent, under which chat id."""
    await update.effective_message.reply_text(
        f"Chat {update.effective_chat.id}: {context.chat_data.get('messages', 0)} message(s)."
    )


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Erase the user's data and, in a private chat, the chat's data. PTB deletes the rows at the
    next save; the persistence leaves no trace of them in the file."""
    context.application.drop_user_data(update.effective_user.id)
    if update.effective_chat.type == "private":
        context.application.drop_chat_data(update.effective_chat.id)
    await update.effective_message.reply_text("I have forgotten everything about you.")


async def migrate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A group became a supergroup: move its chat data to the new id.

    Telegram sends two service messages (one in each chat); migrating on both would move the
    already-emptied old entry over the moved data, so only the old group's message is used."""
    if update.effective_message.migrate_to_chat_id:
        context.application.migrate_chat_data(message=update.effective_message)


def build_application(
    token: str | None = None,
    persistence: BasePersistence | None = None,
    request: BaseRequest | None = None,
) -> Application:
    """The notes bot over ``persistence``; ``request`` replaces PTB's HTTP layer (the offline
    Bot API in tests, notebooks and the terminal chat; ``None`` keeps PTB's own)."""
    builder = ApplicationBuilder().token(token or OFFLINE_TOKEN).persistence(persistence)
    if request is not None:
        builder.request(request).get_updates_request(request)
    app = builder.build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("me", me))
    app.add_handler(CommandHandler("chat", chat_info))
    app.add_handler(CommandHandler("forget", forget))
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, migrate))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, remember))
    app.add_handler(UNKNOWN_COMMAND)  # last: answers the commands the handlers above leave
    app.add_error_handler(log_error)
    return app


SAVE_EVERY = 5
"""Seconds between saves. Shorter than PTB's default 60: the admin tool reads the file, so a new
user or note is visible to it within this time."""


def make_persistence(path: Path) -> SharedSQLitePersistence:
    return SharedSQLitePersistence(path, update_interval=SAVE_EVERY)


# ---- the admin tool: another program, writing the same file ------------------------------------
async def admin_list(path: Path) -> str:
    """One line per user: id and data."""
    persistence = SharedSQLitePersistence(path)
    try:
        users = await persistence.get_user_data()
    finally:
        await persistence.flush()
    return "\n".join(f"{user_id}: {json.dumps(data, ensure_ascii=False, default=repr)}"
                     for user_id, data in sorted(users.items())) or "no users yet"


async def admin_set(path: Path, user_id: int, key: str, value: object) -> str:
    """Set one key of one user's data. Only that key changes, even if the bot saves the same user
    at the same moment: the saves merge key by key."""
    check_user_value(key, value)
    persistence = SharedSQLitePersistence(path)
    try:
        users = await persistence.get_user_data()
        if user_id not in users:
            raise LookupError(f"no user {user_id} in {path}; 'admin list' shows the users")
        users[user_id][key] = value
        await persistence.update_user_data(user_id, users[user_id])
    finally:
        await persistence.flush()
    return f"user {user_id}: {key} = {value!r}"


async def admin_broadcast(path: Path, text: str) -> str:
    """Put an announcement into bot data; every user sees it with /me."""
    persistence = SharedSQLitePersistence(path)
    try:
        bot_data = await persistence.get_bot_data()
        bot_data["announcement"] = text
        await persistence.update_bot_data(bot_data)
    finally:
        await persistence.flush()
    return f"announcement: {text!r}"


def check_user_value(key: str, value: object) -> None:
    """Refuse a value the bot could not use, before anything is written: ``notes`` is a list of
    texts (:func:`remember` appends to it). Other keys are only shown by ``/me``: anything goes."""
    if key == "notes" and not (isinstance(value, list) and all(isinstance(n, str) for n in value)):
        raise ValueError(
            f"notes must be a list of texts, like '[\"buy a bike\", \"call mum\"]' (the bot adds "
            f"each new note to it), not {value!r}. Nothing was changed."
        )


def parse_value(text: str) -> object:
    """``42`` and ``["a"]`` are JSON; anything that is not JSON is taken as text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def admin_main(argv: list[str]) -> int:
    # --file is accepted before the command and after it: "admin --file X list", "admin list --file X"
    file_option = argparse.ArgumentParser(add_help=False)
    file_option.add_argument("--file", type=Path, default=argparse.SUPPRESS,
                             help=f"the bot's database (default: ${FILE_ENV} or ./{DEFAULT_FILE})")
    parser = argparse.ArgumentParser(prog="python -m bots.stage6_shared_database admin",
                                     description="Edit the bot's database, also while the bot runs.",
                                     parents=[file_option])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the users and their data", parents=[file_option])
    setter = commands.add_parser("set", help="set one key of a user's data", parents=[file_option])
    setter.add_argument("user_id", type=int)
    setter.add_argument("key")
    setter.add_argument("value", type=parse_value, help="JSON (42, true, [1]) or plain text")
    broadcast = commands.add_parser("broadcast", help="an announcement every user sees with /me",
                                    parents=[file_option])
    broadcast.add_argument("text")
    args = parser.parse_args(argv)
    path = getattr(args, "file", None) or Path(os.environ.get(FILE_ENV) or DEFAULT_FILE)
    if path.is_dir():
        print(f"{path} is a directory: give --file the path of the bot's database file.", file=sys.stderr)
        return 1
    if not path.exists():
        print(f"{path} does not exist: start the bot first (it creates the file), "
              "or pass --file PATH.", file=sys.stderr)
        return 1
    if args.command == "list":
        action = admin_list(path)
    elif args.command == "set":
        action = admin_set(path, args.user_id, args.key, args.value)
    else:
        action = admin_broadcast(path, args.text)
    try:
        print(asyncio.run(action))
    except (DatabaseFileError, LookupError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def run_admin(path: Path, *args: str) -> str:
    """Run the admin tool as a separate process, as a person would, and return what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "bots.stage6_shared_database", "admin", "--file", str(path), *args],
        capture_output=True, text=True, check=True, timeout=120,
    )
    return result.stdout.strip()


# ---- the demo ----------------------------------------------------------------------------------
async def demo(chat: OfflineChat) -> None:
    """Refresh, forget and migrate, with the admin tool as a real second process."""
    path = chat.persistence.filepath
    await chat.send("/start")
    await chat.send("buy a bike")
    await chat.save()
    await chat.send("call mum")  # not saved yet when the admin writes
    print(f"\n$ admin set {chat.user.id} plan premium   (another process, while the bot runs)")
    print(run_admin(path, "set", str(chat.user.id), "plan", "premium"))
    print('$ admin broadcast "Maintenance on Sunday"')
    print(run_admin(path, "broadcast", "Maintenance on Sunday"))
    print()
    await chat.send("/me")  # the admin's changes, and the unsaved note, are all there
    await chat.send("see you in the group", user=BOB, chat=group_chat())
    print("\n  ... the group is upgraded to a supergroup ...")
    for update in migration_updates(chat.app, chat.api, group_chat(), supergroup_chat(), user=BOB):
        await chat.feed(update)
    await chat.restart()
    await chat.send("/chat", user=BOB, chat=supergroup_chat())
    await chat.send("/forget")
    await chat.restart()
    await chat.send("/me")
    print(f"\n$ admin list\n{run_admin(path, 'list')}")


STAGE = Stage(
    name="stage6_shared_database",
    build_application=build_application,
    make_persistence=make_persistence,
    default_file=DEFAULT_FILE,
    file_env=FILE_ENV,
    demo=demo,
    file_errors=(DatabaseFileError,),
    description="Stage 6: a notes bot whose database an admin tool edits while it runs "
    "(see also: admin --help).",
)


def main(argv: list[str] | None = None) -> int:
    """The bot (``run_stage``), or the admin tool when ``admin`` is among the arguments
    (``--file PATH`` may come before it: ``--file x.sqlite3 admin list``)."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "admin" and (i == 0 or argv[i - 1] != "--file"):
            return admin_main(argv[:i] + argv[i + 1:])
    return run_stage(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
