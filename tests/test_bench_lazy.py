"""The lazy-loading benchmark runs end to end on a small size, as a real subprocess, and reports
every contender. No timing is asserted: the figures depend on the machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from benchmarks.bench_lazy import CONTENDERS


@pytest.mark.slow
def test_the_lazy_benchmark_reports_every_contender(tmp_path):
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "benchmarks.bench_lazy", "--sizes", "1500", "--rounds", "1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for label in CONTENDERS.values():
        assert f"|     1,500 | {label} |" in result.stdout, f"{label} missing from the table"
