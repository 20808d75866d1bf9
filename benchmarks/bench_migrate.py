"""How long ``python -m persistence.migrate`` takes to move a big Pickle file into SQLite.

The workload is the stage 1 logger's file grown to N chats of 20 short messages each (the same
chats as ``benchmarks/bench_persistence.py``), written by PTB's ``PicklePersistence``, moved into a
new ``SQLitePersistence`` file (JSON rows) by the tool - reading, checking every value, writing one
transaction, reading everything back and comparing. Beside it, the **floor**: the least any such
move can do - ``PicklePersistence`` loading the file, then raw ``sqlite3`` ``executemany`` of
``json.dumps`` rows in one transaction, no checks and no read-back.

    python -m benchmarks.bench_migrate              # N = 100,000, 5 rounds (about 2 minutes)
    python -m benchmarks.bench_migrate --chats 2000 --rounds 1

Writes ``benchmarks/results/migrate.md``: the median and the worst round of each, wall and CPU
time, and the tool's time per phase. The target the issue sets: 100,000 chats in under 10 s, met
only if the wall time of the worst round meets it. Not run by the tests beyond a tiny smoke run
(timings are never asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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


@dataclass
class Round:
    wall: float  # seconds on the clock
    cpu: float  # CPU seconds used (user + system): what the work costs when nothing else runs
    phases: dict[str, float] = field(default_factory=dict)


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tool_round(source: Path, workdir: Path) -> Round:
    """The command a user runs, timed from outside (Python's start-up included), and its phases."""
    target = workdir / f"tool-{time.monotonic_ns()}.sqlite3"
    began, cpu = time.perf_counter(), _cpu_of_children()
    done = subprocess.run([sys.executable, "-m", "persistence.migrate", str(source), str(target)],
                          capture_output=True, text=True, check=True)
    took, cpu = time.perf_counter() - began, _cpu_of_children() - cpu
    phases = re.search(r"\((read .*)\)", done.stdout)
    assert phases, done.stdout
    return Round(took, cpu, {p: float(s) for p, s in re.findall(r"(\w+) ([\d.]+) s", phases.group(1))})


async def floor_round(source: Path, workdir: Path) -> Round:
    began, cpu = time.perf_counter(), time.process_time()
    persistence = PicklePersistence(source)
    persistence.set_bot(ExtBot("123456:bench"))
    await persistence.get_bot_data()  # loads the whole file (see persistence/migrate.py)
    rows = [(chat_id, json.dumps(data)) for chat_id, data in persistence.chat_data.items()]
    with sqlite3.connect(workdir / f"floor-{time.monotonic_ns()}.sqlite3") as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE chat_data (chat_id INTEGER PRIMARY KEY, data NOT NULL)")
        db.executemany("INSERT INTO chat_data VALUES (?, ?)", rows)
    db.close()
    return Round(time.perf_counter() - began, time.process_time() - cpu)


def _row(name: str, rounds: list[Round]) -> str:
    walls, cpus = [r.wall for r in rounds], [r.cpu for r in rounds]
    return (f"| {name} | {statistics.median(walls):.1f} s | {max(walls):.1f} s | "
            f"{statistics.median(cpus):.1f} s | {max(cpus):.1f} s |")


def report(chats: int, size: int, tool: list[Round], floor: list[Round], load: tuple[float, float]) -> str:
    phases = {phase: statistics.median(r.phases[phase] for r in tool) for phase in tool[0].phases}
    worst = max(r.wall for r in tool)
    lines = [
        "# Moving a big Pickle file into SQLite",
        "",
        f"`python -m benchmarks.bench_migrate --chats {chats} --rounds {len(tool)}` on "
        f"{platform.machine()}, Python {platform.python_version()}, {len(os.sched_getaffinity(0))} CPUs "
        f"shared with other work (load average {load[0]:.1f} before, {load[1]:.1f} after): a "
        f"{size / 1e6:.0f} MB `PicklePersistence` file of {chats:,} chats x 20 messages.",
        "",
        "| | wall, median | wall, worst round | CPU, median | CPU, worst round |",
        "|---|---:|---:|---:|---:|",
        _row("`python -m persistence.migrate big.pickle new.sqlite3` (start-up, read, write, read back "
             "and compare)", tool),
        _row("floor: load + raw `executemany` of `json.dumps` rows", floor),
        "",
        "Wall time is what a user waits; CPU time (user + system) is what the work costs, and grows "
        "less when other programs share the CPUs.",
        "",
        "The tool's median time per phase, as it prints it: "
        + ", ".join(f"{p} {s:.1f} s" for p, s in phases.items())
        + "; the rest is Python's start-up and imports.",
        "",
        f"Target: {chats:,} chats in under {TARGET_SECONDS:.0f} s, wall time of the worst round: "
        + ("**met**." if worst < TARGET_SECONDS else f"**not met** ({worst:.1f} s)."),
    ]
    return "\n".join(lines) + "\n"


async def main_async(chats: int, rounds: int, write: bool) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        source = workdir / "big.pickle"
        await write_pickle(source, chats)
        tool, floor = [], []
        load = os.getloadavg()[0]
        for round_ in range(rounds):
            tool.append(tool_round(source, workdir))
            floor.append(await floor_round(source, workdir))
            print(f"round {round_ + 1}: tool {tool[-1]}, floor {floor[-1]}", flush=True)
        text = report(chats, source.stat().st_size, tool, floor, (load, os.getloadavg()[0]))
    if write:
        RESULTS.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the results, do not save them")
    args = parser.parse_args()
    print(asyncio.run(main_async(args.chats, args.rounds, write=not args.no_write)))


if __name__ == "__main__":
    main()
