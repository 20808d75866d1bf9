"""Start-up time and memory against the number of stored users: eager and lazy loading (issue 12).

For N = 10,000 / 100,000 / 1,000,000 stored users (a small dict each), side by side in one run:

* start-up: ``Application.initialize()`` of a real Application (offline HTTP layer) over
  ``PicklePersistence(on_flush=True)``, ``SQLitePersistence``, ``SQLitePersistence(lazy=True)`` and
  ``SharedSQLitePersistence(lazy=True)`` and ``PostgresPersistence(lazy=True)`` (N up to
  100,000; a private ``pgserver`` server, or ``DATABASE_URL``), and the memory (RSS) it added;
* first touch: ``refresh_user_data`` of 10,000 distinct stored users, one each - what PTB calls
  before a handler runs for a user (it loads the user in lazy mode, does nothing in eager mode);
* then those 10,000 users' data changes and is saved (one save round): the memory grown since
  start-up.

Every measurement runs in a fresh Python process (memory is that process's RSS), ``--rounds``
times; the tables show the median and the worst round. The test files are built with raw SQL
(``executemany``, triggers off while inserting; the persistence makes them again at start-up),
the PostgreSQL schema with ``COPY`` (a new schema each round) and the pickle file with
``pickle.dump``, so that a million users take seconds to set up.

    python -m benchmarks.bench_lazy                       # all sizes, 3 rounds (several minutes)
    python -m benchmarks.bench_lazy --sizes 10000 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pickle
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psutil
from telegram.ext import PicklePersistence

from bots.local_postgres import database_url
from bots.offline import OfflineBotAPI, application_builder
from persistence import SharedSQLitePersistence, SQLitePersistence
from persistence.postgres import PostgresPersistence

SIZES = (10_000, 100_000, 1_000_000)
TOUCHED = 10_000  # distinct users that write after start-up
FIRST_USER = 100_000_001
CONTENDERS = {
    "pickle": "PicklePersistence(on_flush=True)",
    "sqlite": "SQLitePersistence",
    "sqlite_lazy": "SQLitePersistence(lazy=True)",
    "shared_lazy": "SharedSQLitePersistence(lazy=True)",
    "postgres_lazy": "PostgresPersistence(lazy=True)",
}
POSTGRES_MAX = 1_000_000  # PostgreSQL is measured up to this N
RESULTS = Path(__file__).parent / "results" / "lazy.json"


def user_data(user_id: int) -> dict[str, Any]:
    """One stored user: the few keys a typical bot keeps."""
    return {"name": f"user {user_id}", "lang": "en", "visits": user_id % 50, "last": "see you"}


# ---- setup: test files built directly -------------------------------------------------------
def build_sqlite(path: Path, n: int) -> None:
    async def schema() -> None:  # an empty file with the persistence's schema
        persistence = SQLitePersistence(path)
        await persistence.update_bot_data({})
        await persistence.flush()

    asyncio.run(schema())
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TRIGGER user_data_insert")  # made again when the bot opens the file
        conn.executemany(
            "INSERT INTO user_data (user_id, data) VALUES (?, ?)",
            ((uid, json.dumps(user_data(uid), separators=(",", ":")))
             for uid in range(FIRST_USER, FIRST_USER + n)))
    conn.close()


def build_pickle(path: Path, n: int) -> None:
    data = {"user_data": {uid: user_data(uid) for uid in range(FIRST_USER, FIRST_USER + n)},
            "chat_data": {}, "bot_data": {}, "callback_data": None, "conversations": {}}
    with path.open("wb") as file:
        pickle.dump(data, file, protocol=pickle.HIGHEST_PROTOCOL)


def build_postgres(dsn: str, schema: str, n: int) -> None:
    async def build() -> None:
        persistence = PostgresPersistence(dsn, schema=schema)  # creates the schema
        await persistence.update_bot_data({})
        await persistence.flush()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.copy_records_to_table(
                "user_data", schema_name=schema, columns=["user_id", "data"],
                records=[(uid, json.dumps(user_data(uid), separators=(",", ":")))
                         for uid in range(FIRST_USER, FIRST_USER + n)])
        finally:
            await conn.close()

    asyncio.run(build())


def make(key: str, location: str) -> Any:
    """The persistence ``key`` over ``location``: a file, or ``schema@dsn`` for PostgreSQL."""
    if key == "postgres_lazy":
        schema, _, dsn = location.partition("@")
        return PostgresPersistence(dsn, schema=schema, lazy=True)
    path = Path(location)
    if key == "pickle":
        # (without on_flush, each of the 10,000 update_user_data calls rewrites the whole file)
        return PicklePersistence(path, on_flush=True)
    if key == "sqlite":
        return SQLitePersistence(path)
    cls = SQLitePersistence if key == "sqlite_lazy" else SharedSQLitePersistence
    return cls(path, lazy=True)


# ---- one measurement, in a fresh process ----------------------------------------------------
def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def measure(key: str, location: str, n: int) -> dict[str, float]:
    baseline = rss()
    persistence = make(key, location)
    app = application_builder(request=OfflineBotAPI(), persistence=persistence).build()
    began = time.perf_counter()
    await app.initialize()
    startup = time.perf_counter() - began
    after_start = rss()
    touched = range(FIRST_USER, FIRST_USER + min(TOUCHED, n))
    began = time.perf_counter()
    for user_id in touched:  # what CallbackContext.refresh_data does before a handler
        await persistence.refresh_user_data(user_id, app.user_data[user_id])
    first_touch = (time.perf_counter() - began) / len(touched)
    for user_id in touched:
        data = app.user_data[user_id]
        if data != user_data(user_id):  # every stored key must be there after the first touch
            raise AssertionError(f"user {user_id} was loaded as {data!r}")
        data["visits"] += 1
        app.mark_data_for_update_persistence(user_ids=user_id)
    await app.update_persistence()
    after_writes = rss()
    await app.shutdown()
    return {"startup_s": startup, "start_mb": (after_start - baseline) / 2**20,
            "first_touch_ms": first_touch * 1000, "growth_mb": (after_writes - after_start) / 2**20}


# ---- the run ---------------------------------------------------------------------------------
def run(sizes: list[int], rounds: int, keys: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"rounds": rounds, "touched": TOUCHED, "cases": []}
    dsn = None
    if "postgres_lazy" in keys and min(sizes) <= POSTGRES_MAX:  # (stopped when this process exits)
        dsn = database_url(Path(tempfile.mkdtemp(prefix="bench-lazy-pg-")), delete=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            print(f"N = {n:,}: building the files", file=sys.stderr, flush=True)
            files = {"pickle": Path(tmp, f"{n}.pickle"), "sqlite": Path(tmp, f"{n}.sqlite3")}
            build_pickle(files["pickle"], n)
            build_sqlite(files["sqlite"], n)
            for key in keys:
                if key == "postgres_lazy" and (dsn is None or n > POSTGRES_MAX):
                    continue
                source = files["pickle" if key == "pickle" else "sqlite"]
                samples = []
                for round_ in range(rounds):
                    work = Path(tmp, f"work-{source.name}")  # each round from the same file
                    location = str(work)
                    if dsn is not None and key == "postgres_lazy":  # each round a new schema
                        location = f"bench_lazy_{os.getpid()}_{n}_{round_}@{dsn}"
                        build_postgres(dsn, location.partition("@")[0], n)
                    else:
                        work.write_bytes(source.read_bytes())
                    out = subprocess.run(
                        [sys.executable, "-m", "benchmarks.bench_lazy", "--child", key, location,
                         str(n)], check=True, capture_output=True, text=True)
                    samples.append(json.loads(out.stdout))
                    for extra in Path(tmp).glob(f"{work.name}*"):
                        extra.unlink()
                case = {"key": key, "n": n, "samples": samples}
                results["cases"].append(case)
                print(row(case), file=sys.stderr, flush=True)
    return results


def row(case: dict[str, Any]) -> str:
    def both(name: str, fmt: str) -> str:
        values = [sample[name] for sample in case["samples"]]
        return f"{format(statistics.median(values), fmt)} ({format(max(values), fmt)})"

    return (f"| {case['n']:>9,} | {CONTENDERS[case['key']]} | {both('startup_s', '.2f')} | "
            f"{both('start_mb', '.0f')} | {both('first_touch_ms', '.3f')} | {both('growth_mb', '.0f')} |")


def report(results: dict[str, Any]) -> str:
    lines = [
        f"Median (worst) of {results['rounds']} rounds, each in a fresh process; "
        f"{results['touched']:,} distinct users touched and saved after start-up.",
        "",
        "| stored users | persistence | initialize() s | memory after start-up MB | "
        "first touch ms per update (round mean) | growth after 10,000 users wrote MB |",
        "|---:|---|---:|---:|---:|---:|",
        *(row(case) for case in results["cases"]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    parser.add_argument("--save", action="store_true", help=f"write the results to {RESULTS}")
    parser.add_argument("--child", nargs=3, metavar=("KEY", "LOCATION", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        key, location, n = args.child
        print(json.dumps(asyncio.run(measure(key, location, int(n)))))
        return
    results = run(args.sizes, args.rounds, args.only)
    results["load_average"] = os.getloadavg()
    print(report(results))
    if args.save:
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        RESULTS.with_suffix(".md").write_text(
            "# Lazy loading: start-up and memory by number of stored users\n\n"
            f"`python -m benchmarks.bench_lazy --rounds {args.rounds} --save`; load average "
            + ", ".join(f"{load:.1f}" for load in results["load_average"]) + ".\n\n"
            + report(results) + "\n")


if __name__ == "__main__":
    main()
