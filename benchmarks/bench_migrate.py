"""How long ``python -m persistence.migrate`` takes to move a big Pickle file into SQLite.

The workload is the stage 1 logger's file grown to N chats of 20 short messages each (the same
chats as ``benchmarks/bench_persistence.py``), written by PTB's ``PicklePersistence``, moved into a
new ``SQLitePersistence`` file (JSON rows) by the tool - reading, checking every value, writing one
transaction, reading everything back and comparing. Beside it, the **floor**: the least any such
move can do - ``PicklePersistence`` loading the file, then raw ``sqlite3`` ``executemany`` of
``json.dumps`` rows in one transaction, no checks and no read-back.

    python -m benchmarks.bench_migrate              # N = 100,000, 3 rounds (about 2 minutes)
    python -m benchmarks.bench_migrate --chats 2000 --rounds 1

Writes ``benchmarks/results/migrate.md``: the median and the worst round of each, and the tool's
time per phase. The target the issue sets: 100,000 chats in under 10 s, met only if the worst
round meets it. Not run by the tests beyond a tiny smoke run (timings are never asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from telegram.ext import ExtBot, PicklePersistence

from benchmarks.bench_persistence import make_chats

RESULTS = Path(__file__).resolve().parent / "results" / "migrate.md"
TARGET_SECONDS = 10.0


async def write_pickle(path: Path, chats: int) -> None:
    """The stage 1 logger's file with ``chats`` chats, as PicklePersistence writes it."""
    persistence = PicklePersistence(path, on_flush=True)
    persistence.set_bot(ExtBot("123456:bench"))
    for chat_id, data in make_chats(chats).items():
        await persistence.update_chat_data(chat_id, data)
    await persistence.flush()


def tool_round(source: Path, workdir: Path) -> tuple[float, dict[str, float]]:
    """The command a user runs, timed from outside (Python's start-up included), and its phases."""
    target = workdir / f"tool-{time.monotonic_ns()}.sqlite3"
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "persistence.migrate", str(source), str(target)],
                          capture_output=True, text=True, check=True)
    took = time.perf_counter() - began
    phases = re.search(r"\((read .*)\)", done.stdout)
    assert phases, done.stdout
    return took, {p: float(s) for p, s in re.findall(r"(\w+) ([\d.]+) s", phases.group(1))}


async def floor_round(source: Path, workdir: Path) -> float:
    began = time.perf_counter()
    persistence = PicklePersistence(source)
    persistence.set_bot(ExtBot("123456:bench"))
    await persistence.get_bot_data()  # loads the whole file (see persistence/migrate.py)
    rows = [(chat_id, json.dumps(data)) for chat_id, data in persistence.chat_data.items()]
    with sqlite3.connect(workdir / f"floor-{time.monotonic_ns()}.sqlite3") as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE chat_data (chat_id INTEGER PRIMARY KEY, data NOT NULL)")
        db.executemany("INSERT INTO chat_data VALUES (?, ?)", rows)
    db.close()
    return time.perf_counter() - began


def report(chats: int, size: int, tool: list[tuple[float, dict[str, float]]], floor: list[float]) -> str:
    totals = [took for took, _ in tool]
    phases = {phase: statistics.median(p[phase] for _, p in tool) for phase in tool[0][1]}
    met = max(totals) < TARGET_SECONDS
    lines = [
        "# Moving a big Pickle file into SQLite",
        "",
        f"`python -m benchmarks.bench_migrate --chats {chats} --rounds {len(tool)}` on "
        f"{platform.machine()}, Python {platform.python_version()}, {len(os.sched_getaffinity(0))} CPUs "
        f"(load average {os.getloadavg()[0]:.1f} at the end: other work shares them): a "
        f"{size / 1e6:.0f} MB `PicklePersistence` file of {chats:,} chats x 20 messages.",
        "",
        "| | median | worst round |",
        "|---|---:|---:|",
        f"| `python -m persistence.migrate big.pickle new.sqlite3`, wall time (start-up, read, write, "
        f"read back and compare) | "
        f"{statistics.median(totals):.1f} s | {max(totals):.1f} s |",
        f"| floor: load + raw `executemany` of `json.dumps` rows | {statistics.median(floor):.1f} s | "
        f"{max(floor):.1f} s |",
        "",
        "The tool's median time per phase, as it prints it: "
        + ", ".join(f"{p} {s:.1f} s" for p, s in phases.items())
        + "; the rest is Python's start-up and imports.",
        "",
        f"Target: {chats:,} chats in under {TARGET_SECONDS:.0f} s, worst round: "
        + ("**met**." if met else "**not met**."),
    ]
    return "\n".join(lines) + "\n"


async def main_async(chats: int, rounds: int, write: bool) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        source = workdir / "big.pickle"
        await write_pickle(source, chats)
        tool, floor = [], []
        for round_ in range(rounds):
            tool.append(tool_round(source, workdir))
            floor.append(await floor_round(source, workdir))
            print(f"round {round_ + 1}: tool {tool[-1][0]:.2f} s {tool[-1][1]}, floor {floor[-1]:.2f} s",
                  flush=True)
        text = report(chats, source.stat().st_size, tool, floor)
    if write:
        RESULTS.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the results, do not save them")
    args = parser.parse_args()
    print(asyncio.run(main_async(args.chats, args.rounds, write=not args.no_write)))


if __name__ == "__main__":
    main()
