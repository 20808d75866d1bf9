"""The benchmark script runs end to end: ``--quick`` mode, as a real subprocess, into a temporary
directory (the committed results in benchmarks/results/ are never touched). No timing is asserted:
the figures depend on the machine; this only checks the script still works and reports everyone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from benchmarks.bench_persistence import CONTENDERS


@pytest.mark.slow
def test_quick_benchmark_writes_table_and_plot_with_every_contender(tmp_path):
    out = tmp_path / "results"
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "benchmarks.bench_persistence", "--quick", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment,
                            timeout=300)
    assert result.returncode == 0, result.stderr

    table = (out / "latest.md").read_text(encoding="utf-8")
    assert result.stdout.strip() == table.strip(), "stdout shows the same table as latest.md"
    assert "| N | K | persistence | save round |" in table
    for spec in CONTENDERS:
        assert f"| {spec.label} |" in table, f"{spec.label} missing from the table"
    assert "python-telegram-bot | 22." in table and "| SQLite |" in table
    assert "failed" not in table

    plot = out / "latest.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "latest.png" in table

    results = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    measured = {case["contender"] for case in results["cases"]
                if case["phases"].get("round:20", {}).get("times")}
    assert measured == {spec.key for spec in CONTENDERS}
    assert result.stdout.startswith("# Persistence benchmark"), "stdout holds the table only"
    assert "sqlite_json N=200" in result.stderr, "progress goes to stderr"
