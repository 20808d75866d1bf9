"""Every stage as a user runs it: ``python -m bots.<stage>``, offline, as a real subprocess."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from helpers import REPO, STAGES, Terminal
from helpers import run_cli as run

from bots.logs import SecretHidingFormatter


@pytest.mark.parametrize("stage", STAGES)
def test_demo_runs_offline_and_shows_a_restart(stage, tmp_path):
    result = run(stage, "--demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bot restarts" in result.stdout or "the bot stops for" in result.stdout  # stage 7: a pause
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


SECRET = "123456:TOKEN-SECRET-must-not-be-printed"


@pytest.mark.parametrize("stage", STAGES)
def test_with_a_token_but_no_network_one_clear_line_and_no_token(stage, tmp_path):
    """No Telegram server is reachable here: the bot ends with one line saying so (a machine with
    a network gets Telegram's refusal of this made-up token: one line too). PTB's retry-loop
    traceback is not shown."""
    result = run(stage, cwd=tmp_path, env={"BOT_TOKEN": SECRET})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(("Cannot reach Telegram", "Telegram refused BOT_TOKEN")), line
    assert "TOKEN-SECRET" not in result.stdout + result.stderr


def test_the_token_is_hidden_from_every_log_line_at_debug(tmp_path):
    """--debug logs everything - httpx's request URLs and PTB's tracebacks, which carry the
    token - and the token still shows nowhere."""
    result = run("stage1_pickle_logger", "--debug", cwd=tmp_path, env={"BOT_TOKEN": SECRET})
    assert result.returncode == 1
    assert "DEBUG" in result.stderr and "Traceback" in result.stderr  # PTB's traceback, at DEBUG
    assert "TOKEN-SECRET" not in result.stdout + result.stderr
    assert "<BOT_TOKEN>" in result.stderr  # the URLs were logged, with the token hidden


def test_the_log_formatter_hides_the_token_in_messages_arguments_and_tracebacks():
    formatter = SecretHidingFormatter("%(levelname)s %(message)s", [SECRET])
    try:
        raise ValueError(f"The token `{SECRET}` was rejected by the server.")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("telegram.ext", logging.ERROR, __file__, 1,
                               "calling %s", (f"https://api.telegram.org/bot{SECRET}/getMe",), exc_info)
    text = formatter.format(record)
    assert "TOKEN-SECRET" not in text
    assert text.count("<BOT_TOKEN>") == 2 and "ValueError" in text


@pytest.mark.parametrize("token", [SECRET + "\n", " " + SECRET, "not a token", "123456"])
def test_a_malformed_token_is_called_malformed_not_a_network_problem(token, tmp_path):
    result = run("stage1_pickle_logger", cwd=tmp_path, env={"BOT_TOKEN": token})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("BOT_TOKEN is malformed"), line
    assert "TOKEN-SECRET" not in line and "not a token" not in line


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


@pytest.mark.parametrize("stage", STAGES)
def test_ctrl_c_saves_and_exits_at_once(stage, tmp_path):
    """Ctrl+C in a real (pseudo-)terminal: the first press shuts the bot down, which saves, and
    the process ends - without waiting for Enter."""
    with Terminal(stage, "--file", "bot.data", cwd=tmp_path) as terminal:
        terminal.wait_for("you> ")
        terminal.type("hello")
        terminal.wait_for("you> ", count=2)
        terminal.ctrl_c()
        code = terminal.finish(timeout=60)
    assert "Traceback" not in terminal.screen
    if stage == "stage2_article_sqlite":  # its shutdown fails (the tutorial's bug 4), explained
        assert code == 0 and "bug 4" in terminal.screen
    else:
        assert code == 130, terminal.screen
        assert "(Ctrl+C: the bot stopped and saved its data)" in terminal.screen
    assert (tmp_path / "bot.data").exists()


def test_ctrl_c_keeps_what_was_said(tmp_path):
    with Terminal("stage1_pickle_logger", cwd=tmp_path) as terminal:
        terminal.wait_for("you> ")
        terminal.type("remember the milk")
        terminal.wait_for("you> ", count=2)
        terminal.ctrl_c()
        assert terminal.finish() == 130
    again = run("stage1_pickle_logger", stdin="/show_data\n", cwd=tmp_path)
    assert "remember the milk" in again.stdout, again.stderr


def test_a_file_the_bot_cannot_write_is_one_line_at_start(tmp_path):
    """Checked before the chat starts, not at every save (and not 63 lines at exit)."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    readonly = tmp_path / "readonly.pickle"
    readonly.write_bytes(b"")
    readonly.chmod(0o400)
    if os.access(locked, os.W_OK):
        pytest.skip("this user may write anywhere (root): permissions cannot stop it")
    for target in ("locked/stage1.pickle", "readonly.pickle"):
        result = run("stage1_pickle_logger", "--file", target, stdin="hello\n", cwd=tmp_path)
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"Cannot keep the bot's data in {target}: Permission denied"), line
        assert "writable" in line and result.stdout == ""
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="no /sys (sysfs) on this system")
@pytest.mark.parametrize("stage", ["stage1_pickle_logger", "stage3_sqlite_logger"])
def test_a_place_nobody_may_write_is_one_line_at_start(stage, tmp_path):
    """sysfs takes no new files, not even from root."""
    result = run(stage, "--file", "/sys/x.data", stdin="hello\n", cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Cannot keep the bot's data in /sys/x.data"), line
    assert not os.path.exists("/sys/x.data")


def test_a_file_made_with_pickle_names_the_option_that_opens_it(tmp_path):
    made = run("stage3_sqlite_logger", "--serializer", "pickle", stdin="kept in pickle\n", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    refused = run("stage3_sqlite_logger", stdin="/show_data\n", cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == "On the command line: --serializer pickle."
    opened = run("stage3_sqlite_logger", "--serializer", "pickle", stdin="/show_data\n", cwd=tmp_path)
    assert "kept in pickle" in opened.stdout, opened.stderr


def test_the_chat_says_when_the_bot_handled_a_message_without_answering(tmp_path):
    result = run("stage1_pickle_logger", stdin="hello\n/help\n/shwo_data\n/show_data\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "     (handled: the bot chose not to answer)"
    assert lines[1] == "bot> I don't know /help. My commands: /show_data, /start"
    assert lines[2] == "bot> I don't know /shwo_data. My commands: /show_data, /start"
    assert lines[4].endswith(" UTC: hello"), "times say their time zone"


def test_the_chat_says_when_no_handler_takes_a_message(tmp_path):
    result = run("stage5_inline_buttons", stdin="hello\n", cwd=tmp_path)
    assert result.stdout.splitlines() == ["     (no handler of this bot takes this message; no reply)"]


def test_cancel_outside_the_form_is_answered(tmp_path):
    result = run("stage4_conversation", stdin="/cancel\n/start\n/cancel\n", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0] == "bot> /cancel has nothing to do right now."
    assert lines[-1].startswith("bot> Sign-up cancelled")


@pytest.mark.parametrize("stage", STAGES)
def test_help_lists_the_environment_and_the_chat_commands(stage, tmp_path):
    result = run(stage, "--help", cwd=tmp_path)
    assert result.returncode == 0
    number = stage[len("stage"):].split("_")[0]
    for expected in ("BOT_TOKEN", f"STAGE{number}_FILE", "/restart", "/click LABEL", "/quit", "Ctrl+C"):
        assert expected in result.stdout, expected
