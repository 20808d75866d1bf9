"""Write the PicklePersistence files in this folder with an older python-telegram-bot.

Each ``ptbNN.pickle`` (one file) and ``ptbNN_multi_*`` (``single_file=False``) was written by
PicklePersistence of PTB NN, run in a throwaway virtual environment outside the repository::

    python3.11 -m venv /tmp/ptb20 && /tmp/ptb20/bin/pip install "python-telegram-bot==20.0"
    /tmp/ptb20/bin/python tests/data/make_old_pickles.py 20

(likewise 21 with ``==21.0`` and 22 with ``==22.0``). ``ptb13.pickle`` comes from PTB 13.15 (the last
version before PTB 20 moved its classes), whose files PTB 20 and later cannot read: the migration
must refuse it with a clear message. The data is :func:`sample_data`, which
``tests/test_migrate.py`` also imports to check that the migration brings all of it, exactly.
The script uses only what PTB 20.0 already had.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def sample_data() -> dict[str, Any]:
    """A small bot's data, with what plain JSON cannot say: int keys below the top level, tuples,
    a ``datetime``, and Telegram objects (which PicklePersistence pickles without their bot)."""
    from telegram import Chat, User

    alice = User(id=1001, first_name="Alice", is_bot=False, language_code="en")
    return {
        "user_data": {
            1001: {"name": "Alice", "age": 34, "me": alice,
                   "joined": datetime(2024, 5, 17, 9, 30, tzinfo=UTC)},
            1002: {"name": "Bob", "scores": {1: 10, 2: 7}, "last": (3, "apple")},
        },
        "chat_data": {
            -4001: {"messages": [{"message": "remember the milk", "message_ts": 1700000000.0},
                                 {"message": "and the eggs", "message_ts": 1700000060.5}]},
            1001: {"chat": Chat(id=1001, type="private", first_name="Alice")},
        },
        "bot_data": {"forms_completed": 2, "admins": [1001], "started": "2024-05-01"},
        "callback_data": (
            [("kb-7f3a", 1700000100.0, {"btn-1": ("apple", 2), "btn-2": ("pear", 1)})],
            {"query-99": "kb-7f3a"},
        ),
        "conversations": {
            "signup": {(-4001, 1001): 1, (1002, 1002): "CITY"},
            "inline_poll": {("AgAAAinline",): 0},
        },
    }


async def write(path: Path, single_file: bool) -> None:
    from telegram.ext import ExtBot, PicklePersistence

    bot = ExtBot("123456:old-version-test-data")
    data = sample_data()
    data["user_data"][1001]["me"].set_bot(bot)  # stored as "the bot", given back the new one on load
    persistence = PicklePersistence(filepath=path, single_file=single_file, on_flush=True)
    persistence.set_bot(bot)
    for user_id, user_data in data["user_data"].items():
        await persistence.update_user_data(user_id, user_data)
    for chat_id, chat_data in data["chat_data"].items():
        await persistence.update_chat_data(chat_id, chat_data)
    await persistence.update_bot_data(data["bot_data"])
    await persistence.update_callback_data(data["callback_data"])
    for name, states in data["conversations"].items():
        for key, state in states.items():
            await persistence.update_conversation(name, key, state)
    await persistence.flush()


def write_v13(path: Path) -> None:
    """PTB 13's PicklePersistence is synchronous and names its file ``filename``."""
    from telegram import Bot
    from telegram.ext import PicklePersistence

    data = sample_data()
    persistence = PicklePersistence(filename=str(path), on_flush=True)
    persistence.set_bot(Bot("123456:old-version-test-data"))
    for user_id, user_data in data["user_data"].items():
        persistence.update_user_data(user_id, user_data)
    for chat_id, chat_data in data["chat_data"].items():
        persistence.update_chat_data(chat_id, chat_data)
    persistence.update_bot_data(data["bot_data"])
    persistence.flush()


def main() -> None:
    import telegram

    major = sys.argv[1]
    if major == "13":
        write_v13(HERE / "ptb13.pickle")
        print(f"wrote a PTB {telegram.__version__} pickle to {HERE}")
        return
    if telegram.__version__.split(".")[0] != major:
        raise SystemExit(f"this venv has PTB {telegram.__version__}, not {major}")
    asyncio.run(write(HERE / f"ptb{major}.pickle", single_file=True))
    asyncio.run(write(HERE / f"ptb{major}_multi", single_file=False))
    print(f"wrote PTB {telegram.__version__} pickles to {HERE}")


if __name__ == "__main__":
    main()
