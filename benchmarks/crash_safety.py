"""What a SIGKILL in the middle of a save does to the data file: PicklePersistence vs SQLitePersistence.

Run it (about a minute and a half for 30 kills each; progress goes to stderr)::

    python -m benchmarks.crash_safety                 # 30 kills each, writes benchmarks/results/
    python -m benchmarks.crash_safety --kills 100 --seed 1234 --out /tmp/crash

The bot is ``tests/crash_writer.py``: a real ``Application`` (offline HTTP layer) over the
persistence, with 100 users in 10 group chats. In round r every user sends ``r``; the handler sets
the user's, the chat's and the bot's ``round`` to r (plus 4 KB of other data per row), then the
bot runs ``await app.update_persistence()`` and prints ``saved r``. It is killed with SIGKILL inside
a random save round (2nd to 4th after it started), a random fraction of the way through, and
restarted over the same file - the same schedule for both persistences. After every kill a fresh
persistence opens the file, as a restarted bot would, and the kill is counted as:

* **file unreadable** - opening it fails (for SQLite also: ``PRAGMA integrity_check`` is not
  ``ok``). Everything is lost; the file is then deleted so the bot can start again.
* **completed round lost** - the file opens, but some user or chat is missing or holds a round
  older than the last one reported ``saved``.
* **torn round** - the file opens, but rows hold different rounds: the kill left half a save.

``PicklePersistence`` (default settings) rewrites the whole file for every changed user and chat,
in place (``open("wb")`` truncates it first), so a kill during a write leaves a cut-off file.
``SQLitePersistence`` commits a whole save round as one transaction in a WAL-mode database.
The table is printed and written to ``crash_safety.md`` in the output directory.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import telegram

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
USERS, CHATS = 100, 10
KINDS = {"pickle": "PicklePersistence", "sqlite": "SQLitePersistence"}


def _crash_writer():
    """tests/crash_writer.py: the bot that is killed, and the code that kills and inspects it."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import crash_writer
    finally:
        sys.path.remove(str(REPO / "tests"))
    return crash_writer


@dataclass
class Tally:
    kills: int = 0
    inside_a_save: int = 0
    unreadable: int = 0
    lost: int = 0
    torn: int = 0
    rounds_saved: int = 0


def _start_over(directory: Path) -> None:
    """Delete an unreadable file (and its companions), as the bot's owner would have to."""
    for leftover in directory.iterdir():
        leftover.unlink()


async def crash(kind: str, kills: int, seed: int, directory: Path) -> Tally:
    """Kill the bot ``kills`` times over one file of ``kind`` and count what each kill left."""
    writer = _crash_writer()
    rng = random.Random(seed)  # the same seed for both kinds: the same kill schedule
    path = directory / f"bot.{kind}"
    tally = Tally()
    for number in range(1, kills + 1):
        rounds, fraction = rng.randint(2, 4), rng.random()
        run = await writer.run_until_killed(path, kind, rounds, fraction, users=USERS, chats=CHATS)
        tally.kills += 1
        tally.inside_a_save += run.mid_save
        tally.rounds_saved += len(run.saved)
        stored = await writer.inspect(path, kind)
        if not stored.readable or stored.integrity not in (None, "ok"):
            tally.unreadable += 1
            verdict = f"unreadable ({stored.error or stored.integrity})"
            _start_over(directory)
        elif (stored.users, stored.chats) != (USERS, CHATS) or min(stored.rounds) < run.last_saved:
            tally.lost += 1
            verdict = (f"completed round {run.last_saved} lost: {stored.users} users, {stored.chats} "
                       f"chats, rounds {stored.rounds}")
        elif len(stored.rounds) > 1:
            tally.torn += 1
            verdict = f"torn: rows from rounds {stored.rounds}"
        else:
            verdict = f"ok (round {stored.rounds[0]})"
        print(f"{KINDS[kind]} kill {number}/{kills}: last saved {run.last_saved}, "
              f"{'inside a save' if run.mid_save else 'between saves'} -> {verdict}", file=sys.stderr)
    return tally


def table(tallies: dict[str, Tally], seed: int) -> str:
    sqlite_version = sqlite3.sqlite_version
    lines = [
        "# Crash safety: SIGKILL during saves",
        "",
        f"`python -m benchmarks.crash_safety --kills {next(iter(tallies.values())).kills} --seed {seed}`"
        f" on {datetime.now(UTC):%Y-%m-%d}: python-telegram-bot {telegram.__version__}, "
        f"SQLite {sqlite_version}, Python {sys.version.split()[0]}. A bot with {USERS} users in "
        f"{CHATS} chats saves round after round and is killed with SIGKILL inside a random save "
        "round, then restarted over the same file; see the module docstring for the details.",
        "",
        "| persistence | kills | inside a save round | file unreadable | completed round lost "
        "| torn round (rows from two rounds) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, tally in tallies.items():
        lines.append(f"| {KINDS[kind]} | {tally.kills} | {tally.inside_a_save} | {tally.unreadable} "
                     f"| {tally.lost} | {tally.torn} |")
    lines += [
        "",
        "*file unreadable*: a restarted bot cannot load the file at all - every user's data is gone. "
        "*completed round lost*: the file loads, but a save that had finished before the kill is "
        "missing. *torn round*: the file loads with some rows from the interrupted save and some "
        "from the one before.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crash_safety",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30, help="kills per persistence (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random, printed)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="where crash_safety.md goes (default: benchmarks/results)")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"seed {seed}", file=sys.stderr)
    tallies = {}
    with tempfile.TemporaryDirectory(prefix="crash-safety-") as tmp:
        for kind in KINDS:
            directory = Path(tmp) / kind
            directory.mkdir()
            tallies[kind] = asyncio.run(crash(kind, args.kills, seed, directory))
    result = table(tallies, seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crash_safety.md").write_text(result, encoding="utf-8")
    print(result, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
