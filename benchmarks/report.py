"""The benchmark's report: the Markdown table, the plot and the JSON of a run, and the issue's
targets - each marked met only when both the median and the worst round meet it, shown side by side.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.contenders import (
    CONTENDERS,
    FLOOR,
    FLOOR_EXACT,
    FLOOR_PTB,
    MESSAGES_PER_CHAT,
    PICKLE,
    SPECS,
    TARGET,
)
from benchmarks.runner import EXTRA_RUNS, MEMORY, REPO, Case, fmt_time


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


TARGET_N, TARGET_K_SMALL, TARGET_K_LARGE, MEMORY_N = 5_000, 50, 500, 20_000
SHARED = "sqlite_shared"


def gc_note(phase: Any) -> str:
    """`` (full GC 21 ms)`` when the phase's slowest measurement included a full collection."""
    return f" incl. a full GC of {fmt_time(phase.gc_in_worst)}" if phase.gc_in_worst else ""


def check_targets(cases: dict, budget: float) -> list[tuple[str, str, bool | None]]:
    """Issue 10's targets for SQLitePersistence(json): (what, measured, met); ``None``: not
    measured. A time target is met only when both the median and the *worst* round meet it (ours
    against the floor's of the same run)."""
    n, results = TARGET_N, []

    def phase(key: str, name: str, size: int = n) -> Any:
        case = cases.get((key, size))
        return case.phases.get(name) if case else None

    for floor_key, floor_name in ((FLOOR, "the floor"), (FLOOR_PTB, "the floor as PTB calls it"),
                                  (FLOOR_EXACT, "the floor as PTB calls it, exact types")):
        for k, limit in ((TARGET_K_SMALL, 1.5), (TARGET_K_LARGE, 1.3)):
            what = f"save round ≤ {limit}× {floor_name} (N={n:,}, K={k}; worst rounds)"
            ours, floor = phase(TARGET, f"round:{k}"), phase(floor_key, f"round:{k}")
            if ours and floor and ours.times and floor.times:
                worst, median = ours.worst / floor.worst, ours.median / floor.median
                results.append((what, f"worst {worst:.2f}× ({fmt_time(ours.worst)}{gc_note(ours)} vs "
                                      f"{fmt_time(floor.worst)}{gc_note(floor)}); median {median:.2f}× "
                                      f"({fmt_time(ours.median)} vs {fmt_time(floor.median)})",
                                worst <= limit and median <= limit))
            else:
                results.append((what, "not measured in this run", None))
        what = (f"worst event-loop stall ≤ the worst of {floor_name} + 5 ms (N={n:,}, K={TARGET_K_LARGE}, "
                "all rounds)")
        ours, floor = phase(TARGET, f"round:{TARGET_K_LARGE}"), phase(floor_key, f"round:{TARGET_K_LARGE}")
        if ours and floor and ours.stalls and floor.stalls:
            results.append((what, f"{fmt_time(max(ours.stalls))} vs {fmt_time(max(floor.stalls))} "
                                  f"(medians {fmt_time(ours.median_stall)} vs "
                                  f"{fmt_time(floor.median_stall)}; rounds without a full GC: "
                                  f"{fmt_time(ours.worst_stall_without_gc)} vs "
                                  f"{fmt_time(floor.worst_stall_without_gc)})",
                            max(ours.stalls) <= max(floor.stalls) + 0.005))
        else:
            results.append((what, "not measured in this run", None))
    what = f"start-up load ≤ 1.1× the floor (N={n:,}; worst loads)"
    ours, floor = phase(TARGET, "load"), phase(FLOOR, "load")
    if ours and floor and ours.times and floor.times:
        results.append((what, f"worst {ours.worst / floor.worst:.2f}× ({fmt_time(ours.worst)}"
                              f"{gc_note(ours)} vs {fmt_time(floor.worst)}{gc_note(floor)}); "
                              f"median {ours.median / floor.median:.2f}×",
                        ours.worst <= 1.1 * floor.worst and ours.median <= 1.1 * floor.median))
    else:
        results.append((what, "not measured in this run", None))
    size = max((other_n for (_, other_n) in cases), default=MEMORY_N)
    for key, limit in ((TARGET, 1.05), (SHARED, 1.3)):
        what = f"memory after load ≤ {limit}× the data ({SPECS[key].label}, N={size:,})"
        memory = phase(key, "memory", size)
        if memory and memory.memory:
            kept, data = memory.memory
            results.append((what, f"{kept / data:.2f}× ({kept / 1e6:.1f} MB; the data "
                                  f"{data / 1e6:.1f} MB)", kept <= limit * data))
        else:
            results.append((what, "not measured in this run", None))
    return results


def render_markdown(cases: dict, keys: list[str], sizes: tuple[int, ...], ks: tuple[int, ...],
                    repeats: int, budget: float, info: dict[str, str], took: float, quick: bool,
                    plot_name: str, arguments: str = "", passes: int = 1) -> str:
    mark = {True: "✅ met", False: "❌ missed", None: "- not measured"}
    out = ["# Persistence benchmark: how each persistence behaves as the bot grows", ""]
    pooled = (f"; the whole set ran {passes} times in turn and each figure pools all {passes} passes"
              if passes > 1 else "")
    command = "python -m benchmarks.bench_persistence" + (f" {arguments}" if arguments else "")
    out.append(f"Generated by `{command}` on "
               f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {took / 60:.1f} min. "
               f"Each figure is the median of {repeats} run(s) (up to {EXTRA_RUNS * repeats} when runs "
               f"are fast, fewer when the budget runs out: see *runs*){pooled}; time budget "
               f"{budget:.0f} s per measured phase; one unmeasured warm-up save before the first round.")
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
            "| N | K | persistence | save round | worst round | × floor | × faster than Pickle "
            "| worst stall | runs |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        for k in ks:
            floor, pickle_ = round_cell(cases, FLOOR, n, k, budget), round_cell(cases, PICKLE, n, k, budget)
            for key in keys:
                case = cases.get((key, n))
                if case and case.error:
                    out.append(f"| {n:,} | {k} | {SPECS[key].label} | failed: {case.error} | | | | | |")
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
                    with_gc = sum(1 for seconds in phase.gcs if seconds)
                    runs += f", {with_gc} with a full GC" if with_gc else ""
                elif phase and phase.skipped:
                    runs = "not run"
                elif phase and phase.over:
                    runs = "0 (stopped)"
                worst = fmt_time(phase.worst) if phase and phase.times else "-"
                out.append(f"| {n:,} | {k} | {SPECS[key].label} | {time_text(cell)} | {worst} | "
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

    out += ["", "## Memory after load", "",
            "What a fresh instance holds after `Application.initialize()`'s loads (tracemalloc), next "
            "to the same data built afresh: the data alone.", "",
            "| N | persistence | after load | the data alone | × the data |", "|---:|---|---:|---:|---:|"]
    for n in sizes:
        for key in [key for key in keys if key in MEMORY]:
            case = cases.get((key, n))
            memory = case.phases.get("memory") if case else None
            if memory and memory.memory:
                kept, data = memory.memory
                out.append(f"| {n:,} | {SPECS[key].label} | {fmt_size(kept)} | {fmt_size(data)} | "
                           f"{kept / data:.2f} |")
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
            "- *save round* is the median round, *worst round* the slowest; the targets above are met "
            "only when both the median and the worst round meet them. The stall column is a median "
            "over runs; the target uses the worst of all rounds.",
            "- Garbage collection, the same for every contender: a full (generation 2) collection "
            "walks every object of the process - tens of milliseconds with N chats loaded - and "
            "lands in whichever code allocates when it falls due, often because of work done "
            "before. So each load starts right after a `gc.collect()`, and before the first "
            "measured round the loaded chats are frozen (`gc.freeze()`, as long-running servers "
            "do): a full collection in a round then walks only what rounds allocate. *runs* counts "
            "the rounds that contained one, and a target's worst round says when it did. Another "
            "program taking the CPU can still slow any round. Every run's figure is in `latest.json`.",
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


