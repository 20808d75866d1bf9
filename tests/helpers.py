"""Helpers the tests share (fixtures live in conftest.py): the repository's root and running a
stage the way a user does, as a separate process."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STAGES = [
    "stage1_pickle_logger", "stage2_article_sqlite", "stage3_sqlite_logger", "stage4_conversation",
    "stage5_inline_buttons", "stage6_shared_database", "stage7_reminders",
]
"""Every stage module under bots/, by name."""


def stage_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without BOT_TOKEN (the stages go offline), the repository importable,
    plus ``env``."""
    environment = {k: v for k, v in os.environ.items() if k != "BOT_TOKEN"}
    environment["PYTHONPATH"] = str(REPO)
    environment.update(env or {})
    return environment


def run_cli(stage: str, *args: str, stdin: str = "", cwd: Path,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m bots.<stage> ARGS`` with ``stdin`` piped in; waits for it to end."""
    return subprocess.run([sys.executable, "-m", f"bots.{stage}", *args], input=stdin,
                          capture_output=True, text=True, cwd=cwd, env=stage_environment(env),
                          timeout=120)


class Terminal:
    """A stage running in a pseudo-terminal, as in a real one: ``type()`` lines, press Ctrl+C
    (the terminal turns it into SIGINT for the process), read what the screen shows.

    Use it as ``with Terminal(...) as terminal:``; leaving kills a process still running."""

    def __init__(self, stage: str, *args: str, cwd: Path) -> None:
        self.master, follower = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"bots.{stage}", *args], stdin=follower, stdout=follower,
            stderr=follower, cwd=cwd, env=stage_environment(), start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(follower)
        self.screen = ""

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:  # the test failed half-way: leave nothing running
            self.process.kill()
            self.process.wait(timeout=60)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        """Read the screen until ``text`` shows ``count`` times (an event, not a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while self.screen.count(text) < count:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"{text!r} did not show; the screen:\n{self.screen}")
            self.screen += os.read(self.master, 4096).decode(errors="replace")

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def finish(self, timeout: float = 60) -> int:
        """Wait for the process to end, read the rest of the screen, return the exit code."""
        code = self.process.wait(timeout=timeout)
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the process has gone and the terminal is closed
                break
            if not chunk:
                break
            self.screen += chunk.decode(errors="replace")
        return code


def _take_terminal() -> None:
    """In the child: make the pseudo-terminal its controlling terminal, so Ctrl+C reaches it, and
    let SIGINT interrupt as in a terminal (a test run started in the background with '&' would
    hand its children SIGINT ignored)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
