"""Stage 3: the same message logger on ``SQLitePersistence``, the persistence readers copy.

The bot is stage 1's, unchanged: its ``build_application`` is imported, builder line and all
(``ApplicationBuilder().token(...).persistence(persistence)...build()``). Only the persistence
handed to it differs - :func:`make_persistence` below. That is the point of PTB's persistence
interface - and of getting the class right.

Run it::

    python -m bots.stage3_sqlite_logger            # offline chat in this terminal
    python -m bots.stage3_sqlite_logger --demo     # scripted conversation, restart, then the rows
    BOT_TOKEN=123:ABC python -m bots.stage3_sqlite_logger   # on Telegram

The data file is ``./stage3.sqlite3``; choose another with ``--file PATH`` or ``STAGE3_FILE``.
Look inside with ``sqlite3 stage3.sqlite3 'SELECT chat_id, data FROM chat_data'``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from bots.offline import BOB, OfflineChat, Stage, group_chat, run_stage
from bots.stage1_pickle_logger import build_application
from persistence.sqlite import DatabaseFileError, SQLitePersistence

__all__ = ["STAGE", "build_application", "demo", "main", "make_persistence", "show_rows"]


def make_persistence(path: Path, serializer: Literal["json", "pickle"] = "json") -> SQLitePersistence:
    """The only line that differs from stage 1: ``SQLitePersistence`` for ``PicklePersistence``.
    (``serializer``: the command line's ``--serializer``.)"""
    return SQLitePersistence(path, serializer=serializer)


def show_rows(path: Path) -> None:
    """Print what the file holds, read with the standard library's sqlite3 - no PTB involved."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT chat_id, json_array_length(data, '$.messages'),"
            " json_extract(data, '$.messages[#-1].message') FROM chat_data ORDER BY chat_id"
        ).fetchall()
    conn.close()
    print(f"\n$ sqlite3 {path.name} \"SELECT chat_id, <number of messages>, <last message> FROM chat_data\"")
    for chat_id, count, last in rows:
        print(f"{chat_id} | {count} | {last}")


async def demo(chat: OfflineChat) -> None:
    """Messages in two chats, a restart, the data back - and the rows as sqlite3 shows them."""
    await chat.send("/start")
    await chat.send("remember the milk")
    await chat.send("and the eggs")
    await chat.send("group plans: picnic on Sunday", user=BOB, chat=group_chat())
    await chat.restart()
    await chat.send("/show_data")
    await chat.send("/show_data", user=BOB, chat=group_chat())
    await chat.save()
    show_rows(chat.persistence.filepath)


STAGE = Stage(
    name="stage3_sqlite_logger",
    build_application=build_application,
    make_persistence=make_persistence,
    default_file="stage3.sqlite3",
    file_env="STAGE3_FILE",
    demo=demo,
    file_errors=(DatabaseFileError,),
    serializer_option=True,
    description="Stage 3: the message logger on SQLitePersistence.",
)


def main() -> int:
    return run_stage(STAGE)


if __name__ == "__main__":
    raise SystemExit(main())
