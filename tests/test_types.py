"""``persistence/`` is checked by mypy in strict mode, as part of ``python -m pytest``
(settings in pyproject.toml: the stage 2 tutorial class, broken on purpose, is exempt)."""

import subprocess
import sys

from conftest import REPO


def test_mypy_strict_finds_nothing_in_persistence():
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "persistence/"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
