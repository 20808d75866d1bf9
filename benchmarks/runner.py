"""The benchmark's runner: every (contender, N) in its own child process, phase by phase, under a
time budget; the parent collects the measurements (one JSON line per event on the child's stdout).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.contenders import MESSAGES_PER_CHAT, StallMeter, make_chats, make_contender, make_message

REPO = Path(__file__).resolve().parent.parent
FULL = {"sizes": (1_000, 5_000, 20_000), "ks": (50, 500), "repeats": 5, "budget": 30.0}
QUICK = {"sizes": (200,), "ks": (20,), "repeats": 1, "budget": 10.0}
SETUP_BUDGET = 120.0  # seconds to build the store of N chats (not a measured figure); --quick: 60
EXTRA_RUNS, EXTRA_TIME = 3, 2.0  # cheap phases: up to 3x the runs while they take under 2 s
MEMORY = ("pickle", "sqlite_json", "sqlite_shared", "floor")  # memory after load, measured for these


# ------------------------------------------------------------------------------------------------
# the child process: one contender at one N, phase by phase, one JSON line per event on stdout
# ------------------------------------------------------------------------------------------------
def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


class FullCollections:
    """Seconds the process spent in full (generation 2) garbage collections. Such a collection
    walks every object of the process - with N stored chats loaded, tens of milliseconds - and
    lands in whatever code happens to allocate when it falls due, often because of work done
    before. So, for every contender alike, each load starts right after a ``gc.collect()``, and
    before the first measured save round the loaded chats are frozen (``gc.freeze()``, as
    long-running servers do): full collections in rounds then walk only what rounds allocate.
    (``timeit`` goes further and switches the collector off.)"""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                self._began = time.perf_counter()
            else:
                self.seconds += time.perf_counter() - self._began


async def run_child(key: str, n: int, phases: list[str], repeats: int, budget: float,
                    workdir: Path) -> None:
    full_gc = FullCollections()
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
                gc.collect()  # every measurement starts from the same, clean heap (see FullCollections)
                gc_before, began = full_gc.seconds, time.perf_counter()
                live = await contender.start()
                took = time.perf_counter() - began
                if len(live) != n:
                    raise RuntimeError(f"{key}: loaded {len(live)} chats, expected {n}")
                emit(event="measure", phase=phase, s=took, gc_s=full_gc.seconds - gc_before)
                if not keep_going(phase_began, took, done):
                    break
        elif phase.startswith("round:"):
            k = int(phase.split(":")[1])
            if live is None:
                live = await contender.start()
            ids = sorted(live)
            if not rounds_done:  # warm-up, not measured: threads started, statements prepared
                await contender.save(dirty_round(ids[-1:]), copy.deepcopy(bot_data))
                gc.collect()
                gc.freeze()  # the stored chats: see FullCollections
            for done in range(1, EXTRA_RUNS * repeats + 1):
                dirty_ids = [ids[(rounds_done * k + i) % len(ids)] for i in range(k)]
                # Application deep-copies before it starts the round; that is not the persistence's
                dirty = dirty_round(dirty_ids)
                bot_copy = copy.deepcopy(bot_data)
                async with StallMeter() as meter:
                    gc_before, began = full_gc.seconds, time.perf_counter()
                    await contender.save(dirty, bot_copy)
                    took = time.perf_counter() - began
                rounds_done += 1
                last_dirty = dirty_ids
                emit(event="measure", phase=phase, s=took, stall_s=meter.worst,
                     gc_s=full_gc.seconds - gc_before)
                if not keep_going(phase_began, took, done):
                    break
        elif phase == "memory":  # what a fresh instance keeps after loading, data included
            if live is not None:
                await contender.stop()
                live = None
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            live = await contender.start()
            kept = tracemalloc.get_traced_memory()[0] - before
            data_before = tracemalloc.get_traced_memory()[0]
            data = make_chats(n)  # the same data, built afresh: what the loaded data alone takes
            data_size = tracemalloc.get_traced_memory()[0] - data_before
            tracemalloc.stop()
            del data
            emit(event="measure", phase=phase, s=0.0, kept=kept, data=data_size)
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


# ------------------------------------------------------------------------------------------------
# the parent: runs the children under their budgets and collects the results
# ------------------------------------------------------------------------------------------------
@dataclass
class Phase:
    """Measurements of one phase of one (contender, N)."""

    times: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    gcs: list[float] = field(default_factory=list)  # seconds of full garbage collection in each
    over: bool = False  # killed: its first measurement did not finish within the budget
    skipped: bool = False  # not run: a smaller case of the same contender was already over budget
    cut: bool = False  # killed after some measurements; the ones taken are kept
    memory: tuple[int, int] | None = None  # memory phase: (kept after load, the data alone), bytes

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def worst(self) -> float | None:
        return max(self.times) if self.times else None

    @property
    def gc_in_worst(self) -> float:
        """Seconds of full garbage collection inside the slowest measurement."""
        if not self.times or len(self.gcs) != len(self.times):
            return 0.0
        return self.gcs[self.times.index(max(self.times))]

    @property
    def worst_stall_without_gc(self) -> float | None:
        """The longest stall of the rounds that contained no full garbage collection."""
        if len(self.gcs) != len(self.stalls):
            return max(self.stalls, default=None)
        calm = [stall for stall, gc_s in zip(self.stalls, self.gcs, strict=True) if not gc_s]
        return max(calm, default=None)

    @property
    def median_stall(self) -> float | None:
        return statistics.median(self.stalls) if self.stalls else None

    def to_json(self) -> dict:
        return {"times": self.times, "stalls": self.stalls, "gcs": self.gcs, "over": self.over,
                "skipped": self.skipped, "cut": self.cut, "memory": self.memory}


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
            if "gc_s" in event:
                phase.gcs.append(event["gc_s"])
            if "kept" in event:
                phase.memory = (event["kept"], event["data"])
                log(f"{tag}   memory after load: {event['kept'] / 1e6:.1f} MB, the data alone "
                    f"{event['data'] / 1e6:.1f} MB")
                continue
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


def pool(cases: dict[tuple[str, int], Case], case: Case) -> None:
    """Add one pass's ``case`` to ``cases``: measurements of the same phase are pooled."""
    earlier = cases.get((case.key, case.n))
    if earlier is None or earlier.error:
        cases[case.key, case.n] = case
        return
    earlier.error = case.error
    for name, phase in case.phases.items():
        mine = earlier.phases.setdefault(name, Phase())
        mine.times += phase.times
        mine.stalls += phase.stalls
        mine.gcs += phase.gcs
        mine.over, mine.skipped, mine.cut = mine.over or phase.over, mine.skipped and phase.skipped, \
            mine.cut or phase.cut
        mine.memory = mine.memory or phase.memory


def run_all(keys: list[str], sizes: tuple[int, ...], ks: tuple[int, ...], repeats: int,
            budget: float, workroot: Path, setup_budget: float,
            passes: int = 1) -> dict[tuple[str, int], Case]:
    """Every (contender, N) in a child of its own; with ``passes`` > 1 the whole set runs again
    that many times, in the same order, and each figure pools all passes (a disturbance of the
    machine then hits every contender alike, instead of whichever ran at that moment)."""
    cases: dict[tuple[str, int], Case] = {}
    total = len(sizes) * len(keys) * passes
    number = 0
    began = time.monotonic()
    for _ in range(passes):
        for n in sizes:
            for key in keys:
                number += 1
                case = Case(key, n)
                tag = f"[{number:2}/{total}] {key} N={n:,}:"
                todo = ["load", *(f"round:{k}" for k in ks)]
                if key == "pickle_on_flush":
                    todo.append("flush")
                if key in MEMORY:
                    todo.append("memory")
                while todo:
                    runnable = []
                    for phase in todo:
                        k = int(phase.split(":")[1]) if phase.startswith("round:") else 0
                        if k and over_budget(cases, key, n, k):
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
                pool(cases, case)
    log(f"all cases done in {time.monotonic() - began:.0f} s")
    return cases


