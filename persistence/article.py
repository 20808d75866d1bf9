"""BROKEN ON PURPOSE - DO NOT USE. Stage 2 only: a popular tutorial's SQLite persistence, rebuilt bug for bug.

    If you want a SQLite persistence for your bot, copy ``persistence/sqlite.py``
    (class ``SQLitePersistence``) instead. Nothing in this file is safe to copy.

A widely read 2022 blog tutorial made its message-logging bot persistent with a hand-written
``BasePersistence`` subclass on the stdlib ``sqlite3`` module. This module reconstructs that class
(in the cookbook's own words and code) *with every one of its mistakes kept*, so that stage 2 of the
cookbook - ``bots/stage2_article_sqlite.py``, ``notebooks/02_article_sqlite.ipynb`` and
``tests/test_stage2_article_sqlite.py`` - can show each of them happening under a real python-telegram-bot
``Application``. The comments marked ``BUG n`` point at the numbered list in the stage 2 notebook.

The design, as the tutorial had it:

* only ``chat_data`` is stored (``store_data`` switches everything else off), every second
  (``update_interval=1``), one table row per logged message;
* the table is **not** created by the class: the tutorial's reader typed a ``CREATE TABLE`` into a
  Python REPL beforehand (:func:`create_article_table` does what they typed);
* one blocking ``sqlite3`` connection and one cursor, shared by every call, used inside the event loop;
* most of the methods it did not need are plain ``def`` stubs - which python-telegram-bot will
  ``await`` as soon as it calls them.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from contextlib import closing
from os import PathLike

from telegram.ext import BasePersistence, PersistenceInput

ARTICLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_data (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INT NOT NULL,
    message_ts INT,
    message CHAR(500)
)
"""
"""The table the tutorial's reader created by hand: one row per logged message."""


def create_article_table(path: str | PathLike[str]) -> None:
    """Create the tutorial's table in the database file ``path``, as its reader did by hand.

    The class never creates it (BUG 3): without this step the bot cannot even start."""
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(ARTICLE_SCHEMA)
        connection.commit()


def _row_to_message(row: tuple) -> dict:
    """One table row as the message dict the bot keeps in ``chat_data["messages"]``."""
    row_id, chat_id, message_ts, message = row
    return {"id": row_id, "chat_id": chat_id, "message_ts": message_ts, "message": message}


class ArticleSqlitePersistence(BasePersistence):
    """The tutorial's SQLite persistence, bugs included. DO NOT USE: see the module docstring."""

    def __init__(self, name: str | PathLike[str] = "demo.db") -> None:
        super().__init__(update_interval=1)
        # only chat_data is read and written; the switched-off kinds hide the sync stubs (BUG 5)
        self.store_data = PersistenceInput(bot_data=False, user_data=False, callback_data=False)
        # one blocking connection and one cursor for everything (BUG 10, BUG 13)
        self.conn = sqlite3.connect(name)
        self.cursor = self.conn.cursor()

    # bot data: switched off, stubs -------------------------------------------------------------
    async def get_bot_data(self):
        pass  # BUG 5: returns None; Application wants a dict

    def update_bot_data(self, data):  # BUG 5: plain def, Application awaits it
        pass

    def refresh_bot_data(self, bot_data):  # BUG 5: plain def, Application awaits it
        pass

    # chat data: the one kind it stores -----------------------------------------------------------
    async def get_chat_data(self):
        # BUG 3: "no such table" on a fresh file, the class never creates it
        self.cursor.execute("SELECT * FROM chat_data")
        chat_data = defaultdict(dict)
        for row in self.cursor.fetchall():
            message = _row_to_message(row)
            chat_data[message["chat_id"]].setdefault("messages", []).append(message)
        return chat_data

    async def refresh_chat_data(self, chat_id, chat_data):
        # BUG 7: runs before every handler and REPLACES the live list with the stored rows,
        # throwing away every message received since the last save
        self.cursor.execute("SELECT * FROM chat_data WHERE chat_id = ?", (chat_id,))
        chat_data["messages"] = [_row_to_message(row) for row in self.cursor.fetchall()]

    async def update_chat_data(self, chat_id, data):
        # BUG 11: only data["messages"] is stored (KeyError without it), and nothing is ever deleted
        for message in data["messages"]:
            # BUG 10: one SELECT per stored message, on every save, blocking the event loop
            # BUG 9: "message = ?" never matches NULL (stickers, photos): inserted again every save
            self.cursor.execute(
                "SELECT * FROM chat_data WHERE chat_id = ? AND message_ts = ? AND message = ?",
                (chat_id, message["message_ts"], message["message"]),
            )
            if self.cursor.fetchone() is None:
                self.cursor.execute(
                    "INSERT INTO chat_data (chat_id, message_ts, message) VALUES (?, ?, ?)",
                    (chat_id, message["message_ts"], message["message"]),
                )
            else:
                # BUG 8: matches every row of that chat in that second, not just this message
                self.cursor.execute(
                    "UPDATE chat_data SET message = ? WHERE chat_id = ? AND message_ts = ?",
                    (message["message"], chat_id, message["message_ts"]),
                )
        self.conn.commit()

    async def drop_chat_data(self, chat_id):
        # BUG 1: not SQL ("near '*': syntax error"); BUG 2: and no commit()
        self.cursor.execute("DELETE * FROM chat_data WHERE chat_id = ?", (chat_id,))

    # user data: switched off, stubs --------------------------------------------------------------
    def get_user_data(self):  # BUG 5: plain def - and redefined below
        pass

    def update_user_data(self, user_id, data):  # BUG 5: plain def, Application awaits it
        pass

    def refresh_user_data(self, user_id, user_data):  # BUG 5: plain def, awaited before every handler
        pass

    async def get_user_data(self):  # noqa: F811 - BUG 5: the article defined it twice; this one wins
        pass  # returns None; Application does user_data.update(None)

    async def drop_user_data(self, user_id):
        pass  # BUG 12: "forget me" forgets nothing

    # callback data and conversations: stubs, and conversations cannot be switched off ------------
    def get_callback_data(self):  # BUG 5: plain def
        pass

    def update_callback_data(self, data):  # BUG 5: plain def
        pass

    def get_conversations(self, name):  # BUG 6: plain def, awaited by any persistent ConversationHandler
        pass

    def update_conversation(self, name, key, new_state):  # BUG 6: plain def
        pass

    # the end ------------------------------------------------------------------------------------
    def flush(self):
        # BUG 4: plain def - Application.shutdown() awaits its None and raises TypeError.
        # BUG 2: closing without commit() rolls back a pending DELETE. And the object is now
        # unusable: a second initialize() over it fails on the closed connection.
        self.conn.close()
