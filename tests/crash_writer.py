"""A bot that saves in a loop until it is killed, and the code that kills it and looks at the file.

Run as a script, it is the bot (the child)::

    python tests/crash_writer.py DATA_FILE --persistence sqlite|pickle [--users 100] [--chats 10]

It builds a real ``Application`` over the persistence (only the HTTP layer is offline), loads the
file, prints ``loaded R rounds=...`` (R: the round stored in ``bot_data``; rounds: every round number
found in user, chat and bot data), then plays rounds R+1, R+2, ... forever: in round r every user
sends the message ``r`` in a group chat, and the handler sets that user's, that chat's and the
bot's ``round`` to r. It then prints ``saving r``, runs ``await app.update_persistence()`` and
prints ``saved r in <seconds> s`` once that save round has returned. Every line is flushed, so a
line the parent read was really printed before the kill. An error reported to the error handler ends the child
with exit status 3 and the error on stderr.

Imported, it is the parent side: :func:`run_until_killed` starts the child and kills it with
SIGKILL at a chosen moment inside one of its save rounds; :func:`inspect` reads what a fresh
process finds in the file.
``tests/test_reliability.py`` and ``benchmarks/crash_safety.py`` both use it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent



# --------------------------------------------------------------------------------------------
# the child: a bot saving round after round
# --------------------------------------------------------------------------------------------
def make_persistence(kind: str, path: Path, update_interval: float = 3600):
    """A new persistence of ``kind`` over ``path``. The periodic save is pushed out of the way:
    the child saves explicitly, so every ``saved r`` line is exactly one save round."""
    from telegram.ext import PicklePersistence

    from persistence import SQLitePersistence

    if kind == "sqlite":
        return SQLitePersistence(path, update_interval=update_interval)
    if kind == "pickle":
        return PicklePersistence(path, update_interval=update_interval)
    raise ValueError(f"unknown persistence {kind!r}")


def rounds_in(user_data: dict, chat_data: dict, bot_data: dict) -> list[int]:
    """Every round number stored, as a sorted list without repeats."""
    found = {data.get("round") for data in [*user_data.values(), *chat_data.values(), bot_data]}
    found.discard(None)
    return sorted(found)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _bot(path: Path, kind: str, users: int, chats: int, pad: int) -> int:
    from telegram.ext import ContextTypes, MessageHandler, filters

    from bots.offline import Chat, OfflineBotAPI, User, application_builder, message_update

    filler = "x" * pad

    async def set_round(update, context: ContextTypes.DEFAULT_TYPE) -> None:
        number = int(update.effective_message.text)
        context.user_data["round"] = number
        # a row of realistic size, different in every row and round, so a save takes a while
        context.user_data["pad"] = f"{number} {update.effective_user.id} {filler}"
        context.chat_data["round"] = number
        context.chat_data["pad"] = f"{number} {update.effective_chat.id} {filler}"
        context.bot_data["round"] = number

    errors: list[BaseException] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)

    api = OfflineBotAPI()
    app = application_builder(request=api, persistence=make_persistence(kind, path)).build()
    app.add_handler(MessageHandler(filters.TEXT, set_round))
    app.add_error_handler(on_error)
    await app.initialize()
    found = rounds_in(app.user_data, app.chat_data, app.bot_data)
    number = app.bot_data.get("round", 0)
    _say(f"loaded {number} rounds={','.join(map(str, found))} users={len(app.user_data)} "
         f"chats={len(app.chat_data)}")
    people = [User(100_000 + i, f"User {i}") for i in range(users)]
    groups = [Chat(-500_000 - i, "group", title=f"Group {i}") for i in range(chats)]
    while True:
        number += 1
        for i, person in enumerate(people):
            await app.process_update(message_update(app, api, str(number), person, groups[i % chats]))
        _say(f"saving {number}")
        started = time.perf_counter()
        await app.update_persistence()
        took = time.perf_counter() - started
        if errors:
            print(f"error in round {number}: {errors[0]!r}", file=sys.stderr, flush=True)
            return 3
        _say(f"saved {number} in {took:.4f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--persistence", choices=["sqlite", "pickle"], default="sqlite")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--chats", type=int, default=10)
    parser.add_argument("--pad", type=int, default=4000, help="characters of padding in each row")
    args = parser.parse_args(argv)
    return asyncio.run(_bot(args.path, args.persistence, args.users, args.chats, args.pad))


# --------------------------------------------------------------------------------------------
# the parent: start, kill, inspect
# --------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What one child printed before it was killed."""

    loaded: int  # the round it found in the file at start-up
    loaded_rounds: list[int]  # every round number it found (one, or none for a new file)
    saved: list[int] = field(default_factory=list)  # rounds whose "saved r" line was printed
    mid_save: bool = False  # the last line was "saving r": the kill landed inside a save round
    output: str = ""

    @property
    def last_saved(self) -> int:
        """The last round known to be complete: the last ``saved r``, else what was loaded."""
        return self.saved[-1] if self.saved else self.loaded


class ChildFailed(RuntimeError):
    """The child could not start, or ended by itself instead of being killed."""


def child_command(path: Path, kind: str, users: int, chats: int) -> list[str]:
    return [sys.executable, str(SCRIPT), str(path), "--persistence", kind,
            "--users", str(users), "--chats", str(chats)]


async def run_until_killed(path: Path, kind: str, rounds: int, fraction: float, *, users: int = 100,
                           chats: int = 10, limit: float = 60) -> Run:
    """Start the child over ``path`` and kill it with SIGKILL inside its ``rounds``-th save round
    (counted from its start; at least 2): when it prints ``saving <that round>``, wait ``fraction``
    (0 to 1) of the time its earlier save rounds took (the median, as the child measured them),
    then kill. Raises :class:`ChildFailed`
    (with the child's stderr) if it does not get there within ``limit`` seconds or exits first."""
    if rounds < 2:
        raise ValueError("rounds must be at least 2: the first save round is measured")
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    proc = await asyncio.create_subprocess_exec(
        *child_command(path, kind, users, chats), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO)
    read = b""
    reached = False
    try:
        async with asyncio.timeout(limit):
            durations: list[float] = []  # how long each save round took, as the child measured it
            saving = 0
            while line := await proc.stdout.readline():
                read += line
                if line.startswith(b"saved "):
                    durations.append(float(line.split()[3]))
                elif line.startswith(b"saving "):
                    saving += 1
                    if saving == rounds:
                        reached = True
                        break
            if reached:
                await asyncio.sleep(fraction * statistics.median(durations))
    except TimeoutError:
        pass  # reached is False: reported below with what the child printed
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited by itself: checked below
            proc.send_signal(signal.SIGKILL)
        rest, err = await proc.communicate()
    output = (read + rest).decode()
    if not reached or proc.returncode != -signal.SIGKILL:
        raise ChildFailed(f"the child did not reach save round {rounds} within {limit} s and get "
                          f"killed there (exit status {proc.returncode})\n"
                          f"stdout: {output[-2000:]}\nstderr: {err.decode()[-4000:]}")
    lines = output.splitlines()
    words = lines[0].split()
    loaded_rounds = [int(n) for n in words[2].removeprefix("rounds=").split(",") if n]
    run = Run(int(words[1]), loaded_rounds, output=output)
    run.saved = [int(line.split()[1]) for line in lines if line.startswith("saved ")]
    run.mid_save = lines[-1].startswith("saving ")
    return run


@dataclass
class Stored:
    """What a fresh process finds in the file after a kill."""

    readable: bool
    rounds: list[int] = field(default_factory=list)  # every round number in user/chat/bot data
    users: int = 0
    chats: int = 0
    integrity: str | None = None  # SQLite only: the answer of PRAGMA integrity_check
    error: str = ""


async def inspect(path: Path, kind: str) -> Stored:
    """Open the file as a restarted bot would (a new persistence, the three ``get_*`` calls
    ``Application.initialize()`` makes) and, for SQLite, run ``PRAGMA integrity_check`` first."""
    integrity = None
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(path)) as db:
            integrity = "\n".join(row[0] for row in db.execute("PRAGMA integrity_check"))
    persistence = make_persistence(kind, path)
    try:
        user_data = await persistence.get_user_data()
        chat_data = await persistence.get_chat_data()
        bot_data = await persistence.get_bot_data()
    except Exception as exc:  # an unreadable file: that is the finding, reported to the caller
        return Stored(False, integrity=integrity, error=f"{type(exc).__name__}: {exc}")
    finally:
        if kind == "sqlite":  # closes the file; PicklePersistence.flush would rewrite it instead
            await persistence.flush()
    return Stored(True, rounds_in(user_data, chat_data, bot_data), len(user_data), len(chat_data),
                  integrity)


if __name__ == "__main__":
    sys.exit(main())
