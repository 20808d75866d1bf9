"""How fast is PostgresPersistence, and what does the isolation of several processes cost?

``python -m benchmarks.bench_postgres`` (about two minutes) measures, in one run, on one private
PostgreSQL server (``DATABASE_URL`` if set, else ``pgserver``):

1. **Save rounds** - N = 5,000 stored chats of 20 short messages (the stage 1 logger's data), K = 50
   and K = 500 of them changed: PTB's round (K ``update_chat_data`` + ``update_bot_data`` at once,
   as ``Application.update_persistence()`` runs them) against the **floor**: the same rows,
   ``json.dumps``-encoded, written by raw ``asyncpg`` ``executemany`` in one transaction.
2. **The isolation's cost per update** - one process, updates of 500 users one after another
   through the stage 9 bot, with ``IsolatingApplication`` and with PTB's plain ``Application``
   over the same persistence: the difference is what locking, reading and writing each update's
   rows costs.
3. **Updates per second with 1, 2 and 4 worker processes** - the stage 9 workers fed through
   their ``update_queue`` at random, the 20,000-update test's traffic (4,000 updates here).

Every figure is the median of its rounds with the worst round beside it. Results go to
``benchmarks/results/postgres.md`` (and ``postgres.json``); ``--quick`` runs a tiny version (the
tests use it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import asyncpg
from telegram.ext import Application

from bots import stage9_several_processes as stage9
from bots.local_postgres import database_url
from bots.offline import OfflineBotAPI, User, group_chat, message_update
from bots.workers import Router, UpdateMaker
from persistence.postgres import PostgresPersistence

RESULTS = Path(__file__).resolve().parent / "results"


def chat(n: int, round_: int) -> dict:
    return {"messages": [{"message": f"message {i} of chat {n}, round {round_}", "message_ts": 1.7e9 + i}
                         for i in range(20)]}


async def save_rounds(dsn: str, n: int, k: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per save round of K changed chats out of N, PostgresPersistence and the floor."""
    schema = f"bench_{os.getpid()}_{n}_{k}"
    persistence = PostgresPersistence(dsn, schema=schema)
    await asyncio.gather(*(persistence.update_chat_data(i, chat(i, 0)) for i in range(n)))
    await persistence.get_chat_data()
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"CREATE TABLE {schema}.floor (chat_id bigint PRIMARY KEY, data text NOT NULL)")
    times: dict[str, list[float]] = {"PostgresPersistence": [], "floor": []}
    rng = random.Random(n * k)
    for round_ in range(1, rounds + 1):
        changed = rng.sample(range(n), k)
        data = {i: chat(i, round_) for i in changed}
        began = time.perf_counter()
        await asyncio.gather(*(persistence.update_chat_data(i, data[i]) for i in changed),
                             persistence.update_bot_data({"round": round_}))
        times["PostgresPersistence"].append(time.perf_counter() - began)
        began = time.perf_counter()
        rows = [(i, json.dumps(data[i], separators=(",", ":"))) for i in changed]
        async with conn.transaction():
            await conn.executemany(f"INSERT INTO {schema}.floor VALUES ($1, $2) ON CONFLICT (chat_id)"
                                   " DO UPDATE SET data = excluded.data", rows)
        times["floor"].append(time.perf_counter() - began)
    await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    await conn.close()
    await persistence.flush()
    return times


async def per_update(dsn: str, updates: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per update, one process, with and without the isolation."""
    results: dict[str, list[float]] = {"IsolatingApplication": [], "Application (not isolated)": []}
    users = [User(30_000 + i, f"U{i}") for i in range(500)]
    group = group_chat(-7000)
    for round_ in range(rounds):
        for label, isolated in (("IsolatingApplication", True), ("Application (not isolated)", False)):
            persistence = PostgresPersistence(dsn, schema=f"bench_{os.getpid()}_u{round_}_{int(isolated)}")
            api = OfflineBotAPI()
            app = stage9.build_application(persistence=persistence, request=api)
            # not isolated: PTB's own Application.process_update, which IsolatingApplication wraps
            process = app.process_update if isolated else partial(Application.process_update, app)
            await app.initialize()
            batch = [message_update(app, api, "hi", users[i % len(users)], group) for i in range(updates)]
            began = time.perf_counter()
            for update in batch:
                await process(update)
            results[label].append((time.perf_counter() - began) / updates)
            await app.shutdown()
    return results


async def workers_throughput(dsn: str, counts: list[int], updates: int) -> dict[int, float]:
    """Updates per second of ``count`` worker processes fed at random."""
    make = UpdateMaker()
    users = [User(40_000 + i, f"W{i}") for i in range(500)]
    chats = [group_chat(-8000 - j) for j in range(50)]
    result = {}
    for count in counts:
        os.environ["STAGE9_SCHEMA"] = f"bench_{os.getpid()}_w{count}"
        router = Router(stage9.MODULE, dsn, count, seed=count)
        await router.start()
        for number in range(count):  # every worker up and answering before the clock starts
            reply = router.expect(chats[0].id, "W0:")
            await router.send(make.message("warm up", users[0], chats[0]), worker=number)
            await reply
        done = asyncio.Event()
        router.on_reply = partial(_set_when, done, router.replies, len(router.replies) + updates)
        began = time.perf_counter()
        for i in range(updates):
            user = users[i * 7919 % len(users)]
            await router.send(make.message(f"m{i}", user, chats[user.id % len(chats)]))
        await done.wait()
        result[count] = updates / (time.perf_counter() - began)
        await router.close()
    return result


def _set_when(done: asyncio.Event, replies: list[dict], count: int, _reply: dict) -> None:
    if len(replies) >= count:
        done.set()


def _cell(values: list[float], unit: float = 1000, digits: int = 1) -> str:
    return f"{statistics.median(values) * unit:.{digits}f} (worst {max(values) * unit:.{digits}f})"


def report(saves: dict[int, dict[str, list[float]]], n: int, isolation: dict[str, list[float]],
           throughput: dict[int, float], updates: int) -> str:
    lines = [
        "# PostgresPersistence: save rounds, the isolation's cost, several workers",
        "",
        f"`python -m benchmarks.bench_postgres` on {os.cpu_count()} cores (load average "
        f"{os.getloadavg()[0]:.1f} at the end: other programs ran too), PostgreSQL from pgserver "
        "(Unix socket). Median of the rounds, the worst round in brackets.",
        "",
        f"## Save rounds (N = {n:,} stored chats of 20 messages; ms)",
        "",
        "| | " + " | ".join(f"K = {k}" for k in saves) + " |",
        "|---|" + "---:|" * len(saves),
    ]
    for name in ("PostgresPersistence", "floor"):
        label = name if name != "floor" else "floor: raw asyncpg `executemany`, one transaction"
        lines.append(f"| {label} | " + " | ".join(_cell(saves[k][name]) for k in saves) + " |")
    factors = [statistics.median(saves[k]["PostgresPersistence"]) / statistics.median(saves[k]["floor"])
               for k in saves]
    lines.append("| PostgresPersistence / floor (median) | "
                 + " | ".join(f"{factor:.1f}×" for factor in factors) + " |")
    cost = statistics.median(isolation["IsolatingApplication"]) - statistics.median(
        isolation["Application (not isolated)"])
    lines += [
        "",
        "## Per update, one process, one update at a time (ms)",
        "",
        "| | per update |",
        "|---|---:|",
        *(f"| {name} | {_cell(values, digits=2)} |" for name, values in isolation.items()),
        f"| the isolation's cost (difference of the medians) | {cost * 1000:.2f} |",
        "",
        f"## Worker processes fed at random ({updates:,} updates of 500 users in 50 chats)",
        "",
        "| workers | updates per second |",
        "|---:|---:|",
        *(f"| {count} | {rate:,.0f} |" for count, rate in throughput.items()),
        "",
    ]
    return "\n".join(lines)


async def run(quick: bool) -> tuple[str, str]:
    # a temporary server, stopped and its directory removed when this process exits (a directory
    # removed under a running server would leave the server running)
    dsn = database_url(Path(tempfile.mkdtemp(prefix="bench-postgres-")), delete=True)
    n, ks, rounds = (200, [5, 50], 3) if quick else (5000, [50, 500], 15)
    saves = {k: await save_rounds(dsn, n, k, rounds) for k in ks}
    isolation = await per_update(dsn, 100 if quick else 2000, 1 if quick else 3)
    updates = 200 if quick else 4000
    throughput = await workers_throughput(dsn, [1, 2] if quick else [1, 2, 4], updates)
    return report(saves, n, isolation, throughput, updates), json.dumps(
        {"n": n, "saves": saves, "per_update": isolation, "workers": throughput}, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_postgres",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds), for the tests")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where postgres.md/json go")
    args = parser.parse_args(argv)
    text, data = asyncio.run(run(args.quick))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "postgres.md").write_text(text)
    (args.out / "postgres.json").write_text(data)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
