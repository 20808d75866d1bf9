"""The code readers copy should be clean: ruff, with the project's settings, finds nothing."""

import subprocess
import sys

from helpers import REPO


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
