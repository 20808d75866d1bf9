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
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.contenders import CONTENDERS, SPECS, make_chats
from benchmarks.report import machine_info, render_markdown, render_plot, results_json, source_id
from benchmarks.runner import FULL, QUICK, REPO, SETUP_BUDGET, log, run_all, run_child

RESULTS_DIR = Path(__file__).resolve().parent / "results"
__all__ = ["CONTENDERS", "main", "make_chats"]  # (bench_migrate.py uses the same workload)


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
    parser.add_argument("--passes", type=int, default=1,
                        help="run every contender this many times, in turn, and pool the figures")
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
                        setup_budget=60.0 if args.quick else SETUP_BUDGET, passes=args.passes)
    took = time.monotonic() - began

    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.out / "latest.png"
    render_plot(cases, keys, sizes, ks, budget, plot)
    markdown = render_markdown(cases, keys, sizes, ks, repeats, budget, info, took, args.quick, plot.name,
                               " ".join(sys.argv[1:]), args.passes)
    (args.out / "latest.md").write_text(markdown, encoding="utf-8")
    settings = {"sizes": list(sizes), "ks": list(ks), "repeats": repeats, "passes": args.passes,
                "budget": budget, "quick": args.quick, "contenders": keys}
    (args.out / "latest.json").write_text(json.dumps(results_json(cases, info, settings, took), indent=1),
                                          encoding="utf-8")
    print(markdown)
    log(f"wrote {args.out / 'latest.md'}, {plot} and {args.out / 'latest.json'}")
    return 1 if any(case.error for case in cases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
