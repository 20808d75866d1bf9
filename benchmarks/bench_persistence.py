"""Side-by-side benchmark: how each persistence behaves as the bot grows.

Run it (a full run takes about six minutes on a 2-core machine; progress goes to stderr)::

    python -m benchmarks.bench_persistence                  # writes benchmarks/results/
    python -m benchmarks.bench_persistence --quick --out /tmp/bench   # seconds, for a smoke test

It prints a Markdown table and writes ``latest.md`` (the same table), ``latest.png`` (the plot) and
``latest.json`` (every measurement) into the output directory.

The workload is the stage 1 message logger as ``Application`` drives it: N stored chats of 20 short
messages each (``{"messages": [{"message": ..., "message_ts": ...}, ...]}``), then *save rounds*:
K chats got a new message (the oldest is dropped, so sizes stay put), and the persistence is called
the way ``Application.update_persistence()`` calls it - one ``update_chat_data(chat_id, deepcopy)``
per dirty chat plus ``update_bot_data``, all started at once with ``asyncio.gather``. For each case:

* **save round** - wall time of that ``gather`` (the ``deepcopy`` before it is Application's and the
  same for everyone, so it is left out);
* **worst stall** - the longest the event loop went without running a 1 ms ticker task during the
  round: while it lasts the bot answers nobody (~1 ms means no stall);
* **start-up load** - a fresh instance's ``get_user_data``, ``get_chat_data``, ``get_bot_data``
  (what ``Application.initialize()`` calls, skipping kinds the persistence switched off);
* **file size** of the N chats on disk.

Every case runs in its own child process with a time budget per measured phase: repeats stop when
the next one would not fit, and a child still busy when its budget runs out is killed and the case
reported as ``> budget`` (with an extrapolated estimate when smaller sizes allow one). Larger sizes
of a case already over budget are not run. The *floor* is the least any persistence must do: the
same JSON rows written by raw ``aiosqlite`` ``executemany`` in one transaction, on a file with the
same PRAGMAs as ``SQLitePersistence`` (WAL, ``synchronous=NORMAL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import inspect
import json
import math
import os
import platform
import queue
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

FULL = {"sizes": (1_000, 5_000, 20_000), "ks": (50, 500), "repeats": 5, "budget": 30.0}
QUICK = {"sizes": (200,), "ks": (20,), "repeats": 1, "budget": 10.0}
SETUP_BUDGET = 120.0  # seconds to build the store of N chats (not a measured figure); --quick: 60
EXTRA_RUNS, EXTRA_TIME = 3, 2.0  # cheap phases: up to 3x the runs while they take under 2 s
MESSAGES_PER_CHAT = 20
FIRST_CHAT_ID = 10_000_001
TARGET_N, TARGET_K_SMALL, TARGET_K_LARGE = 5_000, 50, 500


@dataclass(frozen=True)
class Spec:
    """A contender as the tables show it."""

    key: str
    label: str
    note: str = ""


CONTENDERS = [
    Spec("pickle", "PicklePersistence"),
    Spec("pickle_on_flush", "PicklePersistence(on_flush=True) †",
         "† writes nothing during the save round: everything since start-up is only written by "
         "`flush()` at shutdown, so a crash or a kill loses it all. Not crash-safe."),
    Spec("dict", "DictPersistence + its *_json",
         "DictPersistence keeps data in memory; its round includes producing `chat_data_json`, "
         "`user_data_json` and `bot_data_json` - the text a bot would have to save somewhere. "
         "Its file size is the size of that text."),
    Spec("article", "ArticleSqlitePersistence (stage 2)",
         "The tutorial's class from `persistence/article.py`, broken on purpose: blocking `sqlite3` "
         "and a full-table scan per stored message. It stores chat_data only (bot/user data switched "
         "off, so Application does not call those). Its store was seeded with the same rows "
         "inserted directly (seeding through the class is itself quadratic)."),
    Spec("sqlite_json", "SQLitePersistence(serializer=\"json\")"),
    Spec("sqlite_pickle", "SQLitePersistence(serializer=\"pickle\")"),
    Spec("floor", "floor: raw aiosqlite executemany",
         "The floor: `json.dumps` of each dirty chat and one `executemany` upsert (plus the bot_data "
         "row) in one transaction on a WAL, `synchronous=NORMAL` file; loading is one SELECT and "
         "`json.loads` per row."),
]
SPECS = {spec.key: spec for spec in CONTENDERS}
PICKLE, FLOOR, TARGET = "pickle", "floor", "sqlite_json"


# ================================================================================================
# The workload
# ================================================================================================
def make_message(chat_id: int, seq: int) -> dict[str, Any]:
    """One logged message, as the stage 1 logger stores it."""
    return {"message": f"note {seq} in chat {chat_id}: see you at 6",
            "message_ts": 1_700_000_000.25 + seq * 1.5}


def make_chats(n: int) -> dict[int, dict[str, Any]]:
    """``n`` chats of ``MESSAGES_PER_CHAT`` messages each, keyed by chat id."""
    return {chat_id: {"messages": [make_message(chat_id, seq) for seq in range(MESSAGES_PER_CHAT)]}
            for chat_id in range(FIRST_CHAT_ID, FIRST_CHAT_ID + n)}


class StallMeter:
    """Measures the longest gap between ticks of a 1 ms ticker task while the block runs."""

    def __init__(self, period: float = 0.001) -> None:
        self.period = period
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.period)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    async def __aenter__(self) -> StallMeter:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(self.period * 2)  # the ticker is running before the measured block
        self.worst = 0.0
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.sleep(self.period * 3)  # a tick after the block closes its last gap
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# ================================================================================================
# The contenders, each behind the same small interface (used in the child process)
# ================================================================================================
class Contender:
    """``seed`` a store of N chats, ``start`` a fresh instance over it (as ``initialize()`` loads),
    ``save`` one round, ``stop``. ``size`` is the store's size on disk in bytes."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    async def seed(self, chats: dict[int, dict]) -> None:
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError

    async def start(self) -> dict[int, dict]:
        raise NotImplementedError

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def files_size(self, *paths: Path) -> int:
        return sum(path.stat().st_size for path in paths if path.exists())


def _bot() -> Any:
    """An ``ExtBot`` as ``ApplicationBuilder`` would hand to ``set_bot`` (no network used)."""
    from telegram.ext import ExtBot

    from bots.offline import OFFLINE_TOKEN
    return ExtBot(OFFLINE_TOKEN)


class PersistenceContender(Contender):
    """A ``BasePersistence`` driven the way ``Application`` drives it."""

    def __init__(self, workdir: Path, factory: Callable[[], Any]) -> None:
        super().__init__(workdir)
        self.factory = factory
        self.bot = _bot()
        self.persistence: Any = None

    def new(self) -> Any:
        persistence = self.factory()
        persistence.set_bot(self.bot)
        return persistence

    async def start(self) -> dict[int, dict]:
        persistence = self.new()
        store = persistence.store_data
        chat_data: dict[int, dict] = {}
        if store.user_data:
            await persistence.get_user_data()
        if store.chat_data:
            chat_data = await persistence.get_chat_data()
        if store.bot_data:
            await persistence.get_bot_data()
        self.persistence = persistence
        return chat_data

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        persistence = self.persistence
        coroutines = [persistence.update_chat_data(chat_id, data) for chat_id, data in dirty.items()]
        if persistence.store_data.bot_data:
            coroutines.append(persistence.update_bot_data(bot_data))
        for result in await asyncio.gather(*coroutines, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def stop(self) -> None:
        if self.persistence is not None:
            result = self.persistence.flush()
            if inspect.isawaitable(result):
                await result
            self.persistence = None


class PickleContender(PersistenceContender):
    def __init__(self, workdir: Path, on_flush: bool = False) -> None:
        from telegram.ext import PicklePersistence

        self.path = workdir / "bot.pickle"
        super().__init__(workdir, lambda: PicklePersistence(self.path, on_flush=on_flush))

    async def seed(self, chats: dict[int, dict]) -> None:
        from telegram.ext import PicklePersistence

        writer = PicklePersistence(self.path, on_flush=True)  # one file write, in flush()
        writer.set_bot(self.bot)
        await writer.get_chat_data()
        for chat_id, data in chats.items():
            await writer.update_chat_data(chat_id, data)
        await writer.update_bot_data({"started": 1})
        await writer.flush()

    def size(self) -> int:
        return self.files_size(self.path)


class DictContender(PersistenceContender):
    def __init__(self, workdir: Path) -> None:
        from telegram.ext import DictPersistence

        self.saved: dict[str, str] = {}
        super().__init__(workdir, lambda: DictPersistence(
            user_data_json=self.saved["user"], chat_data_json=self.saved["chat"],
            bot_data_json=self.saved["bot"]))

    def _produce_json(self, persistence: Any) -> None:
        """What a bot using DictPersistence must produce to save its data."""
        self.saved = {"user": persistence.user_data_json, "chat": persistence.chat_data_json,
                      "bot": persistence.bot_data_json}

    async def seed(self, chats: dict[int, dict]) -> None:
        from telegram.ext import DictPersistence

        writer = DictPersistence()
        await writer.get_user_data()
        for chat_id, data in chats.items():
            await writer.update_chat_data(chat_id, data)
        await writer.update_bot_data({"started": 1})
        self._produce_json(writer)

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        await super().save(dirty, bot_data)
        self._produce_json(self.persistence)

    def size(self) -> int:
        return sum(len(text.encode()) for text in self.saved.values())

    async def stop(self) -> None:
        if self.persistence is not None:
            self._produce_json(self.persistence)
        await super().stop()


class SQLiteContender(PersistenceContender):
    def __init__(self, workdir: Path, serializer: str) -> None:
        from persistence.sqlite import SQLitePersistence

        self.path = workdir / "bot.sqlite3"
        super().__init__(workdir, lambda: SQLitePersistence(self.path, serializer=serializer))

    async def seed(self, chats: dict[int, dict]) -> None:
        writer = self.new()
        await asyncio.gather(*(writer.update_chat_data(chat_id, data) for chat_id, data in chats.items()),
                             writer.update_bot_data({"started": 1}))
        await writer.flush()

    def size(self) -> int:
        return self.files_size(*(Path(f"{self.path}{suffix}") for suffix in ("", "-wal", "-shm")))


class ArticleContender(PersistenceContender):
    def __init__(self, workdir: Path) -> None:
        from persistence.article import ArticleSqlitePersistence

        self.path = workdir / "demo.db"
        super().__init__(workdir, lambda: ArticleSqlitePersistence(name=str(self.path)))

    async def seed(self, chats: dict[int, dict]) -> None:
        from persistence.article import create_article_table

        create_article_table(self.path)
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            connection.executemany(
                "INSERT INTO chat_data (chat_id, message_ts, message) VALUES (?, ?, ?)",
                ((chat_id, message["message_ts"], message["message"])
                 for chat_id, data in chats.items() for message in data["messages"]))
            connection.commit()

    def size(self) -> int:
        return self.files_size(self.path, Path(f"{self.path}-journal"))


FLOOR_UPSERT = ("INSERT INTO {table} ({column}, data) VALUES (?, ?)"
                " ON CONFLICT ({column}) DO UPDATE SET data = excluded.data")


class FloorContender(Contender):
    """The same JSON rows, written with nothing but one aiosqlite transaction."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.path = workdir / "floor.sqlite3"
        self.db: Any = None

    @staticmethod
    def dumps(data: Any) -> str:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    async def _open(self) -> Any:
        import aiosqlite

        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        return db

    async def _write(self, db: Any, dirty: dict[int, dict], bot_data: dict) -> None:
        rows = [(chat_id, self.dumps(data)) for chat_id, data in dirty.items()]
        await db.execute("BEGIN IMMEDIATE")
        await db.executemany(FLOOR_UPSERT.format(table="chat_data", column="chat_id"), rows)
        await db.execute(FLOOR_UPSERT.format(table="bot_data", column="id"), (0, self.dumps(bot_data)))
        await db.execute("COMMIT")

    async def seed(self, chats: dict[int, dict]) -> None:
        db = await self._open()
        await db.execute("CREATE TABLE chat_data (chat_id INTEGER PRIMARY KEY, data NOT NULL)")
        await db.execute("CREATE TABLE bot_data (id INTEGER PRIMARY KEY, data NOT NULL)")
        await self._write(db, chats, {"started": 1})
        await db.close()

    def size(self) -> int:
        return self.files_size(*(Path(f"{self.path}{suffix}") for suffix in ("", "-wal", "-shm")))

    async def start(self) -> dict[int, dict]:
        self.db = await self._open()
        async with self.db.execute("SELECT chat_id, data FROM chat_data") as cursor:
            chat_data = {chat_id: json.loads(data) for chat_id, data in await cursor.fetchall()}
        async with self.db.execute("SELECT data FROM bot_data WHERE id = 0") as cursor:
            json.loads((await cursor.fetchone())[0])
        return chat_data

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        await self._write(self.db, dirty, bot_data)

    async def stop(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None


def make_contender(key: str, workdir: Path) -> Contender:
    factories: dict[str, Callable[[], Contender]] = {
        "pickle": lambda: PickleContender(workdir),
        "pickle_on_flush": lambda: PickleContender(workdir, on_flush=True),
        "dict": lambda: DictContender(workdir),
        "article": lambda: ArticleContender(workdir),
        "sqlite_json": lambda: SQLiteContender(workdir, "json"),
        "sqlite_pickle": lambda: SQLiteContender(workdir, "pickle"),
        "floor": lambda: FloorContender(workdir),
    }
    return factories[key]()


# ================================================================================================
# The child process: one contender at one N, phase by phase, one JSON line per event on stdout
# ================================================================================================
def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def run_child(key: str, n: int, phases: list[str], repeats: int, budget: float,
                    workdir: Path) -> None:
    contender = make_contender(key, workdir)
    began = time.perf_counter()
    await contender.seed(make_chats(n))
    emit(event="ready", setup_s=time.perf_counter() - began, size=contender.size())

    live: dict[int, dict] | None = None
    bot_data = {"started": 1, "saves": 0}
    seq = MESSAGES_PER_CHAT
    rounds_done = 0
    last_dirty: list[int] = []

    def keep_going(phase_began: float, last: float, done: int) -> bool:
        """``repeats`` runs if they fit in the budget; up to three times as many if they are cheap
        (a phase of fast runs is noisy, more runs steady its median)."""
        elapsed = time.perf_counter() - phase_began
        if done < repeats:
            return elapsed + 1.5 * last <= budget
        return done < EXTRA_RUNS * repeats and elapsed + last <= min(budget, EXTRA_TIME)

    def dirty_round(chat_ids: list[int]) -> dict[int, dict]:
        """These chats got a new message since the last save (oldest dropped: sizes stay put).
        Returns what Application hands the persistence: a deep copy of each."""
        nonlocal seq
        for chat_id in chat_ids:
            messages = live[chat_id]["messages"]
            messages.pop(0)
            messages.append(make_message(chat_id, seq))
            seq += 1
        bot_data["saves"] += 1
        return {chat_id: copy.deepcopy(live[chat_id]) for chat_id in chat_ids}

    for phase in phases:
        emit(event="phase", phase=phase)
        phase_began = time.perf_counter()
        if phase == "load":
            for done in range(1, EXTRA_RUNS * repeats + 1):
                if live is not None:
                    await contender.stop()
                began = time.perf_counter()
                live = await contender.start()
                took = time.perf_counter() - began
                if len(live) != n:
                    raise RuntimeError(f"{key}: loaded {len(live)} chats, expected {n}")
                emit(event="measure", phase=phase, s=took)
                if not keep_going(phase_began, took, done):
                    break
        elif phase.startswith("round:"):
            k = int(phase.split(":")[1])
            if live is None:
                live = await contender.start()
            ids = sorted(live)
            if not rounds_done:  # warm-up, not measured: threads started, statements prepared
                await contender.save(dirty_round(ids[-1:]), copy.deepcopy(bot_data))
            for done in range(1, EXTRA_RUNS * repeats + 1):
                dirty_ids = [ids[(rounds_done * k + i) % len(ids)] for i in range(k)]
                # Application deep-copies before it starts the round; that is not the persistence's
                dirty = dirty_round(dirty_ids)
                bot_copy = copy.deepcopy(bot_data)
                async with StallMeter() as meter:
                    began = time.perf_counter()
                    await contender.save(dirty, bot_copy)
                    took = time.perf_counter() - began
                rounds_done += 1
                last_dirty = dirty_ids
                emit(event="measure", phase=phase, s=took, stall_s=meter.worst)
                if not keep_going(phase_began, took, done):
                    break
        elif phase == "flush":  # only meaningful for on_flush=True: the one write it ever does
            if live is None:
                live = await contender.start()
            began = time.perf_counter()
            await contender.stop()
            emit(event="measure", phase=phase, s=time.perf_counter() - began)
            live = await contender.start()
        else:
            raise ValueError(f"unknown phase {phase!r}")

    await contender.stop()
    # what was saved must come back (the article's class is known not to: it is stage 2's subject)
    if last_dirty and live is not None and key != "article":
        reloaded = await contender.start()
        await contender.stop()
        wrong = [chat_id for chat_id in last_dirty if reloaded.get(chat_id) != live[chat_id]]
        if wrong:
            raise RuntimeError(f"{key}: {len(wrong)} saved chats did not load back as saved")
    emit(event="done")


# ================================================================================================
# The parent: runs the children under their budgets and collects the results
# ================================================================================================
@dataclass
class Phase:
    """Measurements of one phase of one (contender, N)."""

    times: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    over: bool = False  # killed: its first measurement did not finish within the budget
    skipped: bool = False  # not run: a smaller case of the same contender was already over budget
    cut: bool = False  # killed after some measurements; the ones taken are kept

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def median_stall(self) -> float | None:
        return statistics.median(self.stalls) if self.stalls else None

    def to_json(self) -> dict:
        return {"times": self.times, "stalls": self.stalls, "over": self.over,
                "skipped": self.skipped, "cut": self.cut}


@dataclass
class Case:
    key: str
    n: int
    setup_s: float | None = None
    size: int | None = None
    phases: dict[str, Phase] = field(default_factory=dict)
    error: str | None = None


_STARTED = time.monotonic()


def log(message: str) -> None:
    """Progress, on stderr, with the seconds since the run started."""
    print(f"{time.monotonic() - _STARTED:5.0f}s {message}", file=sys.stderr, flush=True)


def _reader(stream: Any, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_case_child(case: Case, phases: list[str], repeats: int, budget: float, workroot: Path,
                   tag: str, setup_budget: float) -> list[str]:
    """Run one child for ``phases``; return the phases it did not get to (after a kill)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{case.key}-{case.n}-", dir=workroot))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "benchmarks.bench_persistence", "--child", case.key,
               "--n", str(case.n), "--phases", ",".join(phases), "--repeats", str(repeats),
               "--budget", str(budget), "--workdir", str(workdir)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(child.stdout, lines), daemon=True).start()
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(child.stderr), daemon=True).start()

    deadline = time.monotonic() + setup_budget
    current: str | None = None
    remaining = list(phases)
    killed = False
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            child.kill()
            killed = True
            break
        if line is None:
            break
        event = json.loads(line)
        kind = event["event"]
        if kind == "ready":
            case.setup_s, case.size = event["setup_s"], event["size"]
            log(f"{tag} store of {case.n:,} chats built in {event['setup_s']:.1f} s, "
                f"{event['size'] / 1e6:.1f} MB")
        elif kind == "phase":
            current = event["phase"]
            remaining.remove(current)
            case.phases[current] = Phase()
            deadline = time.monotonic() + budget
        elif kind == "measure":
            phase = case.phases[event["phase"]]
            phase.times.append(event["s"])
            if "stall_s" in event:
                phase.stalls.append(event["stall_s"])
            stall = f", worst stall {fmt_time(event['stall_s'])}" if "stall_s" in event else ""
            log(f"{tag}   {event['phase']}: {fmt_time(event['s'])}{stall}")
        elif kind == "done":
            deadline = time.monotonic() + 60
    child.wait()
    if killed:
        if current is None:
            case.error = f"building the store took more than {setup_budget:.0f} s"
            log(f"{tag} killed while building the store; its stderr: {''.join(errors)[-2000:]}")
            return []
        phase = case.phases[current]
        if phase.times:
            phase.cut = True
        else:
            phase.over = True
        log(f"{tag}   {current}: over the {budget:.0f} s budget, stopped")
        return remaining
    if child.returncode != 0:
        case.error = "".join(errors).strip().splitlines()[-1] if errors else f"exit {child.returncode}"
        log(f"{tag} FAILED: {''.join(errors)}")
    return []


def over_budget(cases: dict[tuple[str, int], Case], key: str, n: int, k: int) -> bool:
    """A smaller or equal case of this contender (N' <= N, K' <= K) went over the budget."""
    for (other_key, other_n), case in cases.items():
        if other_key != key or other_n > n:
            continue
        for name, phase in case.phases.items():
            if name.startswith("round:") and int(name.split(":")[1]) <= k and phase.over:
                return True
    return False


def run_all(keys: list[str], sizes: tuple[int, ...], ks: tuple[int, ...], repeats: int,
            budget: float, workroot: Path, setup_budget: float) -> dict[tuple[str, int], Case]:
    cases: dict[tuple[str, int], Case] = {}
    total = len(sizes) * len(keys)
    number = 0
    began = time.monotonic()
    for n in sizes:
        for key in keys:
            number += 1
            case = cases[key, n] = Case(key, n)
            tag = f"[{number:2}/{total}] {key} N={n:,}:"
            todo = ["load", *(f"round:{k}" for k in ks)]
            if key == "pickle_on_flush":
                todo.append("flush")
            while todo:
                runnable = []
                for phase in todo:
                    if phase.startswith("round:") and over_budget(cases, key, n, int(phase.split(":")[1])):
                        case.phases[phase] = Phase(skipped=True)
                        log(f"{tag}   {phase}: not run, a smaller case was already over budget")
                    elif phase == "flush" and any(p.over or p.skipped for p in case.phases.values()):
                        continue
                    else:
                        runnable.append(phase)
                if not runnable:
                    break
                todo = run_case_child(case, runnable, repeats, budget, workroot, tag, setup_budget)
                if case.error:
                    break
    log(f"all cases done in {time.monotonic() - began:.0f} s")
    return cases


# ================================================================================================
# Reporting
# ================================================================================================
def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def fmt_ratio(value: float, lower_bound: bool = False, upper_bound: bool = False) -> str:
    text = f"{value:.2g}" if value < 10 else f"{value:,.0f}"
    return ("> " if lower_bound else "< " if upper_bound else "") + text


def fmt_size(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def estimate(cases: dict[tuple[str, int], Case], key: str, n: int, k: int) -> tuple[float, str] | None:
    """An extrapolated save-round time for a case over budget, from the same contender's smaller
    measured cases: a power law in N through two measured sizes, else linear in K."""
    phase = f"round:{k}"
    measured = sorted((other_n, case.phases[phase].median) for (other_key, other_n), case in cases.items()
                      if other_key == key and other_n < n and phase in case.phases
                      and case.phases[phase].median is not None and not case.phases[phase].over)
    if len(measured) >= 2:
        (n1, t1), (n2, t2) = measured[-2:]
        power = math.log(t2 / t1) / math.log(n2 / n1)
        return t2 * (n / n2) ** power, f"N^{power:.1f} from N={n1:,}..{n2:,}"
    case = cases.get((key, n))
    for smaller in sorted((int(name.split(":")[1]) for name in (case.phases if case else {})
                           if name.startswith("round:")), reverse=True):
        if smaller < k:
            base = case.phases[f"round:{smaller}"].median
            if base is not None:
                return base * k / smaller, f"linear in K from K={smaller}"
            guess = estimate(cases, key, n, smaller)
            if guess:
                return guess[0] * k / smaller, f"{guess[1]}, then linear in K"
    return None


@dataclass
class Cell:
    """One figure: a value, or a lower bound (over budget), or nothing."""

    value: float | None
    lower: bool = False
    est: tuple[float, str] | None = None


def round_cell(cases: dict, key: str, n: int, k: int, budget: float) -> Cell:
    case = cases.get((key, n))
    phase = case.phases.get(f"round:{k}") if case else None
    if phase is None:
        return Cell(None)
    if phase.over or phase.skipped:
        return Cell(budget, lower=True, est=estimate(cases, key, n, k))
    return Cell(phase.median)


def time_text(cell: Cell) -> str:
    if cell.value is None:
        return "-"
    if cell.lower:
        text = f"> {fmt_time(cell.value)}"
        return text + (f" (est. ~{fmt_time(cell.est[0])})" if cell.est else "")
    return fmt_time(cell.value)


def ratio(numerator: Cell, denominator: Cell) -> str:
    """numerator / denominator, with bounds carried through."""
    if numerator.value is None or denominator.value is None or (numerator.lower and denominator.lower):
        return "-"
    value = numerator.value / denominator.value
    return fmt_ratio(value, lower_bound=numerator.lower, upper_bound=denominator.lower)


def machine_info() -> dict[str, str]:
    import aiosqlite
    import telegram

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "CPU": cpu, "cores": str(os.cpu_count()), "OS": platform.platform(),
        "Python": platform.python_version(), "python-telegram-bot": telegram.__version__,
        "aiosqlite": getattr(aiosqlite, "__version__", "unknown"), "SQLite": sqlite3.sqlite_version,
    }


def source_id(path: Path) -> str:
    """The file's git blob id (what `git log --find-object` finds), and whether it is committed."""
    try:
        blob = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True,
                              cwd=REPO, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", str(path)], capture_output=True,
                               text=True, cwd=REPO, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"blob {blob[:12]}" + (" (uncommitted changes)" if dirty else "")


def check_targets(cases: dict, budget: float) -> list[tuple[str, str, bool | None]]:
    """The SQLitePersistence(json) targets: (what, measured, met). ``None``: not measured."""
    n, small, large = TARGET_N, TARGET_K_SMALL, TARGET_K_LARGE
    results: list[tuple[str, str, bool | None]] = []

    def cell(key: str, k: int) -> Cell:
        return round_cell(cases, key, n, k, budget)

    ours, pickle_, floor = cell(TARGET, small), cell(PICKLE, small), cell(FLOOR, small)
    if ours.value and pickle_.value and not ours.lower:
        speedup = pickle_.value / ours.value
        results.append((f"save round ≥ 300× faster than PicklePersistence (N={n:,}, K={small})",
                        f"{fmt_ratio(speedup, lower_bound=pickle_.lower)}× "
                        f"({fmt_time(ours.value)} vs {time_text(pickle_)})", speedup >= 300))
    else:
        results.append((f"save round ≥ 300× faster than PicklePersistence (N={n:,}, K={small})",
                        "not measured in this run", None))
    for k in (small, large):
        ours, floor = cell(TARGET, k), cell(FLOOR, k)
        what = f"save round within 4× of the floor (N={n:,}, K={k})"
        if ours.value and floor.value and not ours.lower:
            factor = ours.value / floor.value
            results.append((what, f"{factor:.2g}× ({fmt_time(ours.value)} vs {fmt_time(floor.value)})",
                            factor <= 4))
        else:
            results.append((what, "not measured in this run", None))
    case = cases.get((TARGET, n))
    phase = case.phases.get(f"round:{large}") if case else None
    what = f"worst event-loop stall ≤ 20 ms (N={n:,}, K={large})"
    if phase and phase.stalls:
        results.append((what, f"{fmt_time(phase.median_stall)} (max of {len(phase.stalls)} runs: "
                              f"{fmt_time(max(phase.stalls))})", phase.median_stall <= 0.020))
    else:
        results.append((what, "not measured in this run", None))
    for size in sorted({other_n for (_, other_n) in cases}):
        ours, theirs = cases.get((TARGET, size)), cases.get((PICKLE, size))
        what = f"start-up load no slower than PicklePersistence (N={size:,})"
        a = ours.phases.get("load") if ours else None
        b = theirs.phases.get("load") if theirs else None
        if a and b and a.median and b.median:
            results.append((what, f"{fmt_time(a.median)} vs {fmt_time(b.median)} "
                                  f"({a.median / b.median:.2g}×)", a.median <= b.median))
        else:
            results.append((what, "not measured in this run", None))
    return results


def render_markdown(cases: dict, keys: list[str], sizes: tuple[int, ...], ks: tuple[int, ...],
                    repeats: int, budget: float, info: dict[str, str], took: float, quick: bool,
                    plot_name: str) -> str:
    mark = {True: "✅ met", False: "❌ missed", None: "- not measured"}
    out = ["# Persistence benchmark: how each persistence behaves as the bot grows", ""]
    out.append(f"Generated by `python -m benchmarks.bench_persistence{' --quick' if quick else ''}` on "
               f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {took / 60:.1f} min. "
               f"Each figure is the median of {repeats} run(s) (up to {EXTRA_RUNS * repeats} when runs "
               f"are fast, fewer when the budget runs out: see *runs*); time budget {budget:.0f} s per "
               "measured phase; one unmeasured warm-up save before the first round.")
    out.append("")
    out.append("| machine | |")
    out.append("|---|---|")
    out += [f"| {name} | {value} |" for name, value in info.items()]
    out += ["", f"Workload: N stored chats of {MESSAGES_PER_CHAT} short messages (the stage 1 logger), "
            "save rounds of K dirty chats plus `update_bot_data`, gathered like "
            "`Application.update_persistence()`.", ""]

    out += ["## Targets for SQLitePersistence(serializer=\"json\")", "", "| target | measured | |",
            "|---|---|---|"]
    out += [f"| {what} | {measured} | {mark[met]} |" for what, measured, met in check_targets(cases, budget)]

    out += ["", "## Save round", "",
            "Time for one save round (median); **× floor**: that time over the floor's; **× faster than "
            "Pickle**: PicklePersistence's time over this one; **worst stall**: the longest the event "
            "loop was blocked during a round (median over runs; ~1 ms = not blocked); **runs**: "
            "rounds measured.", "",
            "| N | K | persistence | save round | × floor | × faster than Pickle | worst stall | runs |",
            "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for n in sizes:
        for k in ks:
            floor, pickle_ = round_cell(cases, FLOOR, n, k, budget), round_cell(cases, PICKLE, n, k, budget)
            for key in keys:
                case = cases.get((key, n))
                if case and case.error:
                    out.append(f"| {n:,} | {k} | {SPECS[key].label} | failed: {case.error} | | | | |")
                    continue
                cell = round_cell(cases, key, n, k, budget)
                phase = case.phases.get(f"round:{k}") if case else None
                stall = "-"
                if phase and phase.stalls:
                    stall = fmt_time(phase.median_stall)
                elif cell.lower:
                    stall = f"> {fmt_time(budget)}"
                runs = "-"
                if phase and phase.times:
                    runs = f"{len(phase.times)}" + (" (cut)" if phase.cut else "")
                elif phase and phase.skipped:
                    runs = "not run"
                elif phase and phase.over:
                    runs = "0 (stopped)"
                out.append(f"| {n:,} | {k} | {SPECS[key].label} | {time_text(cell)} | "
                           f"{ratio(cell, floor)} | {ratio(pickle_, cell)} | {stall} | {runs} |")

    out += ["", "## Start-up load and file size", "",
            "Start-up load: a fresh instance's `get_user_data`, `get_chat_data`, `get_bot_data`, as "
            "`Application.initialize()` calls them (median). File size: the N chats on disk.", "",
            "| N | persistence | start-up load | × Pickle's time | file size |",
            "|---:|---|---:|---:|---:|"]
    for n in sizes:
        reference = cases.get((PICKLE, n))
        reference_phase = reference.phases.get("load") if reference else None
        reference_load = reference_phase.median if reference_phase else None
        for key in keys:
            case = cases.get((key, n))
            load = case.phases.get("load") if case else None
            value = load.median if load else None
            if load and load.over:
                text = f"> {fmt_time(budget)}"
            else:
                text = fmt_time(value)
            relative = f"{value / reference_load:.2g}" if value and reference_load else "-"
            out.append(f"| {n:,} | {SPECS[key].label} | {text} | {relative} | "
                       f"{fmt_size(case.size if case else None)} |")

    out += ["", f"![save round, stall, load and size against N]({plot_name})", "", "## Notes", ""]
    out += [f"- {SPECS[key].note}" for key in keys if SPECS[key].note]
    flushes = [(n, cases[("pickle_on_flush", n)].phases["flush"].median) for n in sizes
               if ("pickle_on_flush", n) in cases and "flush" in cases[("pickle_on_flush", n)].phases
               and cases[("pickle_on_flush", n)].phases["flush"].median is not None]
    if flushes:
        out.append("- PicklePersistence(on_flush=True)'s one write, `flush()` at shutdown, took "
                   + ", ".join(f"{fmt_time(t)} at N={n:,}" for n, t in flushes) + ".")
    out += ["- `> budget`: the first run of that case had not finished when its budget ran out, so it "
            "was stopped; larger cases of the same contender were not run. `est.` extrapolates from "
            "the same contender's smaller measured cases (a power law in N, or linear in K) and is an "
            "estimate, not a measurement.",
            "- Each (persistence, N) runs in a fresh child process; the deep copy Application makes "
            "before a round is not timed (it is the same for every persistence). Before finishing, "
            "each child reloads the last round's chats with a fresh instance and checks they came "
            "back as saved (all but the article's class, which is known to get this wrong).",
            "- The stall column is a median over runs, which hides the tail: now and then a round of "
            "any contender, the floor included, stalls for tens of milliseconds - a full garbage "
            "collection of every object in the process (the bot's own data included) or another "
            "program taking the CPU. Every run's figure is in `latest.json`.",
            "- user_data is not dirtied (the logger only writes chat_data), callback data is off."]
    return "\n".join(out) + "\n"


def render_plot(cases: dict, keys: list[str], sizes: tuple[int, ...], ks: tuple[int, ...],
                budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    small, large = ks[0], ks[-1]
    panels = [(f"save round, K={small}", "round", small), (f"save round, K={large}", "round", large),
              ("start-up load", "load", None), (f"worst stall, K={small}", "stall", small),
              (f"worst stall, K={large}", "stall", large), ("file size", "size", None)]
    if small == large:
        panels = [panels[0], panels[2], panels[3], panels[5]]
    columns = 3 if len(panels) == 6 else 2
    figure, axes = plt.subplots(2, columns, figsize=(5.2 * columns, 8.5))
    colors = dict(zip([spec.key for spec in CONTENDERS], plt.get_cmap("tab10").colors, strict=False))
    styles = {FLOOR: dict(linestyle="--", color="black"), TARGET: dict(linewidth=2.8)}
    for axis, (title, what, k) in zip(axes.flat, panels, strict=True):
        for index, key in enumerate(keys):
            xs, ys, over_xs, est_xs, est_ys = [], [], [], [], []
            for n in sizes:
                case = cases.get((key, n))
                if case is None:
                    continue
                value = None
                if what == "round":
                    cell = round_cell(cases, key, n, k, budget)
                    if cell.lower and cell.est:
                        est_xs.append(n)
                        est_ys.append(cell.est[0] * 1e3)
                    elif cell.lower:
                        over_xs.append(n)
                    value = None if cell.lower else cell.value
                elif what == "stall":
                    phase = case.phases.get(f"round:{k}")
                    if phase and phase.stalls:
                        value = phase.median_stall
                    elif phase and (phase.over or phase.skipped):
                        over_xs.append(n)
                elif what == "load":
                    phase = case.phases.get("load")
                    value = phase.median if phase else None
                else:
                    value = case.size / 1e6 if case.size else None
                if value is not None:
                    xs.append(n)
                    ys.append(value * (1e3 if what in ("round", "stall", "load") else 1))
            style = {"color": colors[key], "marker": "o", **styles.get(key, {})}
            axis.plot(xs, ys, label=SPECS[key].label, **style)
            if est_xs:  # extrapolated, not measured: hollow markers on a dotted line
                axis.plot(xs[-1:] + est_xs, ys[-1:] + est_ys, linestyle=":", marker="o",
                          markerfacecolor="none", color=style["color"])
            if over_xs:  # stopped at the budget; side by side so that several stay visible
                shift = 1 + 0.05 * (index - len(keys) / 2)
                axis.plot([x * shift for x in over_xs], [budget * 1e3] * len(over_xs), linestyle="none",
                          marker="^", markerfacecolor="none", markersize=9, color=style["color"])
        if what in ("round", "stall"):
            axis.axhline(budget * 1e3, color="grey", linestyle=":", linewidth=1)
            axis.text(0.5, budget * 1e3 / 1.3, f"budget {budget:.0f} s", va="top", ha="center", fontsize=8,
                      color="grey", transform=axis.get_yaxis_transform())
        if what == "stall":
            axis.axhline(20, color="red", linestyle=":", linewidth=1)
            axis.text(0.5, 20 * 1.15, "20 ms target", fontsize=8, color="red", ha="center",
                      transform=axis.get_yaxis_transform())
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(title)
        axis.set_xlabel("N stored chats")
        axis.set_ylabel("MB" if what == "size" else "ms")
        axis.set_xticks(list(sizes), [f"{n:,}" for n in sizes])
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
            lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
        axis.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda value, _, axis=axis: f"{value:g}" if axis.get_ylim()[1] < 10 * axis.get_ylim()[0] else ""))
        axis.grid(True, which="major", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False,
                  bbox_to_anchor=(0.5, 0.025))
    figure.text(0.5, 0.008, "▲ stopped at the time budget (its stall is at least that long);  "
                "○ on a dotted line: extrapolated estimate, not measured", ha="center", fontsize=8,
                color="dimgrey")
    figure.suptitle("python-telegram-bot persistences as the bot grows (log scales; lower is better)")
    figure.tight_layout(rect=(0, 0.09, 1, 0.96))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def results_json(cases: dict, info: dict, settings: dict, took: float) -> dict:
    return {
        "machine": info, "settings": settings, "took_s": took,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels": {spec.key: spec.label for spec in CONTENDERS},
        "cases": [{"contender": case.key, "n": case.n, "setup_s": case.setup_s, "size": case.size,
                   "error": case.error,
                   "phases": {name: phase.to_json() for name, phase in case.phases.items()}}
                  for case in cases.values()],
        "targets": [{"target": what, "measured": measured, "met": met}
                    for what, measured, met in check_targets(cases, settings["budget"])],
    }


# ================================================================================================
# Command line
# ================================================================================================
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_persistence",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: N=200, K=20, one run, small budget (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="directory for latest.md, latest.png, latest.json (default: %(default)s)")
    parser.add_argument("--sizes", type=lambda text: tuple(int(x) for x in text.split(",")),
                        help="N values, comma-separated (default 1000,5000,20000)")
    parser.add_argument("--ks", type=lambda text: tuple(int(x) for x in text.split(",")),
                        help="K values, comma-separated (default 50,500)")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 5)")
    parser.add_argument("--budget", type=float, help="seconds per measured phase (default 30)")
    parser.add_argument("--only", help="comma-separated contenders: " + ",".join(SPECS))
    # the child process's arguments
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--phases", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    defaults = QUICK if args.quick else FULL
    repeats = args.repeats or defaults["repeats"]
    budget = args.budget or defaults["budget"]
    if args.child:
        asyncio.run(run_child(args.child, args.n, args.phases.split(","), repeats, budget, args.workdir))
        return 0

    sizes, ks = args.sizes or defaults["sizes"], args.ks or defaults["ks"]
    if min(sizes) < max(ks):
        raise SystemExit("every N must be at least the largest K")
    keys = [spec.key for spec in CONTENDERS]
    if args.only:
        keys = [key for key in keys if key in args.only.split(",")]
    if not (REPO / "persistence" / "article.py").exists() and "article" in keys:
        log("persistence/article.py not found: the article's class is left out")
        keys.remove("article")
    info = machine_info()
    info["persistence/sqlite.py"] = source_id(REPO / "persistence" / "sqlite.py")
    with contextlib.suppress(OSError):
        info["load average at start"] = " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)"
    log("machine: " + ", ".join(f"{name} {value}" for name, value in info.items()))
    log(f"N={sizes}, K={ks}, {repeats} runs, budget {budget:.0f} s per phase; contenders: {', '.join(keys)}")

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-persistence-") as workroot:
        cases = run_all(keys, sizes, ks, repeats, budget, Path(workroot),
                        setup_budget=60.0 if args.quick else SETUP_BUDGET)
    took = time.monotonic() - began

    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.out / "latest.png"
    render_plot(cases, keys, sizes, ks, budget, plot)
    markdown = render_markdown(cases, keys, sizes, ks, repeats, budget, info, took, args.quick, plot.name)
    (args.out / "latest.md").write_text(markdown, encoding="utf-8")
    settings = {"sizes": list(sizes), "ks": list(ks), "repeats": repeats, "budget": budget,
                "quick": args.quick, "contenders": keys}
    (args.out / "latest.json").write_text(json.dumps(results_json(cases, info, settings, took), indent=1),
                                          encoding="utf-8")
    print(markdown)
    log(f"wrote {args.out / 'latest.md'}, {plot} and {args.out / 'latest.json'}")
    return 1 if any(case.error for case in cases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
