"""Another program writing the bot's file while the bot runs: an admin script adding notes to users.

    python tests/admin_writer.py DATA_FILE --users 100001,100002,... --rounds 30

In round i it does what a real admin script would: opens the file with a new
``SharedSQLitePersistence``, reads every user's data with ``get_user_data()``, adds the key
``admin_note_<i>`` (value i) to every third user of the list (those at positions p with
p % 3 == i % 3), writes them back with ``update_user_data`` (all in one save round, as PTB would)
and ``flush()``es. It prints ``wrote i`` after each round and exits 0; any error ends it with a
traceback and a non-zero status. ``tests/test_reliability.py`` runs it next to a running bot.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from persistence import SharedSQLitePersistence


def noted_users(users: list[int], round_number: int) -> list[int]:
    """The users who get ``admin_note_<round_number>``."""
    return [user for position, user in enumerate(users) if position % 3 == round_number % 3]


async def admin(path: Path, users: list[int], rounds: int) -> None:
    for number in range(rounds):
        persistence = SharedSQLitePersistence(path)
        try:
            stored = await persistence.get_user_data()
            writes = []
            for user in noted_users(users, number):
                data = dict(stored.get(user, {}))
                data[f"admin_note_{number}"] = number
                writes.append(persistence.update_user_data(user, data))
            await asyncio.gather(*writes)
        finally:
            await persistence.flush()
        print(f"wrote {number}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--users", required=True, help="comma-separated user ids")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    asyncio.run(admin(args.path, [int(user) for user in args.users.split(",")], args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
