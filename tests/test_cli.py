"""Every stage as a user runs it: ``python -m bots.<stage>``, offline, as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

STAGES = [
    "stage1_pickle_logger", "stage2_article_sqlite", "stage3_sqlite_logger", "stage4_conversation",
    "stage5_inline_buttons", "stage6_shared_database",
]


def run(stage: str, *args: str, stdin: str = "", cwd: Path, env: dict | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "BOT_TOKEN"}
    environment["PYTHONPATH"] = str(REPO)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", f"bots.{stage}", *args], input=stdin,
                          capture_output=True, text=True, cwd=cwd, env=environment, timeout=120)


@pytest.mark.parametrize("stage", STAGES)
def test_demo_runs_offline_and_shows_a_restart(stage, tmp_path):
    result = run(stage, "--demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bot restarts" in result.stdout
    assert list(tmp_path.iterdir()) == [], "the demo must not leave data in the working directory"


def test_stage1_stdin_chat_remembers_across_runs(tmp_path):
    first = run("stage1_pickle_logger", stdin="remember the milk\n/show_data\n", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "remember the milk" in first.stdout
    assert "No BOT_TOKEN set" in first.stderr and "BOT_TOKEN=" in first.stderr
    assert (tmp_path / "stage1.pickle").exists()
    second = run("stage1_pickle_logger", stdin="/show_data\n/quit\nnot read\n", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "1 stored message(s)" in second.stdout and "remember the milk" in second.stdout


def test_stage1_data_file_from_flag_and_env(tmp_path):
    assert run("stage1_pickle_logger", "--file", "a.pickle", stdin="x\n", cwd=tmp_path).returncode == 0
    assert run("stage1_pickle_logger", stdin="y\n", cwd=tmp_path,
               env={"STAGE1_FILE": "b.pickle"}).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pickle", "b.pickle"]


def test_restart_in_the_terminal_keeps_the_data(tmp_path):
    result = run("stage1_pickle_logger", stdin="hello\n/restart\n/show_data\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(the bot restarted)" in result.stdout and "hello" in result.stdout.split("restarted")[1]


def test_unreadable_data_file_is_one_clear_error_and_left_alone(tmp_path):
    bad = tmp_path / "stage1.pickle"
    bad.write_bytes(b"this is not a pickle")
    result = run("stage1_pickle_logger", stdin="hello\n", cwd=tmp_path)
    assert result.returncode == 1
    assert "Cannot load the bot's data from stage1.pickle" in result.stderr
    assert "Traceback" not in result.stderr
    assert bad.read_bytes() == b"this is not a pickle"


def test_bad_arguments_exit_2(tmp_path):
    result = run("stage1_pickle_logger", "--no-such-flag", cwd=tmp_path)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_stage3_stdin_chat_and_a_bad_database_file(tmp_path):
    first = run("stage3_sqlite_logger", stdin="remember the milk\n/show_data\n", cwd=tmp_path)
    assert first.returncode == 0 and "remember the milk" in first.stdout, first.stderr
    assert (tmp_path / "stage3.sqlite3").stat().st_mode & 0o077 == 0
    bad = tmp_path / "other.sqlite3"
    bad.write_text("not a database")
    second = run("stage3_sqlite_logger", "--file", "other.sqlite3", stdin="hello\n", cwd=tmp_path)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert "other.sqlite3 cannot be used as the bot's database" in second.stderr
    assert bad.read_text() == "not a database"


def test_the_contract_suite_runs_against_a_class_named_on_the_command_line(tmp_path):
    """The documented way for bot authors to check their own persistence."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:nbmake", "-o", "addopts=", "-v",
         str(REPO / "tests" / "test_persistence_contract.py"),
         "--persistence", "persistence.sqlite:SQLitePersistence"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    passed = [line for line in result.stdout.splitlines() if " PASSED" in line]
    assert len(passed) >= 15
    assert all("[persistence.sqlite:SQLitePersistence]" in line for line in passed)


def test_stage2_stdin_chat_shows_its_bugs_and_exits_0(tmp_path):
    """The article's refresh (bug 7) eats the unsaved message; its sync flush (bug 4) crashes
    shutdown, which the stage explains instead of printing a traceback."""
    result = run("stage2_article_sqlite", stdin="hello\n/show_data\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Nothing stored for this chat yet." in result.stdout
    assert "bug 4" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_with_a_token_but_no_network_one_clear_error_and_no_token_in_the_output(stage, tmp_path):
    """No Telegram server is reachable here: after PTB's own error log, the bot ends with one line
    saying so. The token never shows (httpx, which logs request URLs with it, is kept below INFO)."""
    secret = "123456:TOKEN-SECRET-must-not-be-printed"
    result = run(stage, cwd=tmp_path, env={"BOT_TOKEN": secret})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Cannot reach Telegram")
    assert "TOKEN-SECRET" not in result.stdout + result.stderr


def test_stage4_form_resumes_in_the_next_run(tmp_path):
    first = run("stage4_conversation", stdin="/start\nAlice\n", cwd=tmp_path)
    assert first.returncode == 0 and "How old are you?" in first.stdout, first.stderr
    second = run("stage4_conversation", stdin="34\n", cwd=tmp_path)
    assert second.returncode == 0 and "which city" in second.stdout, second.stderr


def test_stage5_click_in_the_terminal_survives_a_restart(tmp_path):
    result = run("stage5_inline_buttons", stdin="/menu\n/click pear +6\n/restart\n/click apple +1\n/cart\n",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Your cart: 6 x pear, 1 x apple" in result.stdout.split("(the bot restarted)")[1]


def test_a_bad_data_file_in_demo_mode_and_a_missing_directory_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.sqlite3"
    bad.write_text("not a database")
    demo = run("stage3_sqlite_logger", "--demo", "--file", str(bad), cwd=tmp_path)
    assert demo.returncode == 1 and "Traceback" not in demo.stderr
    assert "cannot be used as the bot's database" in demo.stderr
    missing = run("stage1_pickle_logger", "--file", "no/such/dir/x.pickle", stdin="hello\n", cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "the directory no/such/dir does not exist" in missing.stderr
