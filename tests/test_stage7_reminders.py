"""Stage 7: reminders and a form timeout that survive restarts, on Pickle, SQLite and PostgreSQL.

Real Applications with their real JobQueue, over real files, with short durations. Tests wait for
what the bot sends (``OfflineChat.wait_for_messages``, with a time limit); where a test needs the
bot to be *down* while a reminder comes due, it waits until that moment has passed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from postgres_server import make_postgres_persistence
from telegram.error import Forbidden
from telegram.ext import (
    Application,
    BasePersistence,
    ContextTypes,
    ExtBot,
    PersistenceInput,
    PicklePersistence,
)

from bots import jobs
from bots import stage7_reminders as stage7
from bots.offline import (
    ALICE,
    BOB,
    OFFLINE_TOKEN,
    OfflineBotAPI,
    OfflineChat,
    group_chat,
    migration_updates,
    supergroup_chat,
)
from persistence.sqlite import SQLitePersistence

REPO = Path(__file__).resolve().parent.parent
CHAT = ALICE.id  # Alice's private chat

PERSISTENCES: dict[str, Callable[[Path], BasePersistence]] = {
    "pickle": lambda folder: PicklePersistence(folder / "stage7.pickle"),
    "sqlite": lambda folder: SQLitePersistence(folder / "stage7.sqlite3"),
    "postgres": make_postgres_persistence,  # a schema of its own per test, on the tests' server
}
"""Every persistence the jobs layer must work on: it uses only what all of them offer."""


@pytest.fixture(params=sorted(PERSISTENCES))
def make_persistence(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], BasePersistence]:
    return functools.partial(PERSISTENCES[request.param], tmp_path)


def offline_bot(make_persistence: Callable[[], BasePersistence], errors: list[BaseException],
                form_timeout: float = stage7.FORM_TIMEOUT) -> OfflineChat:
    """The reminder bot, offline; every error a handler or job raises lands in ``errors``."""

    def build(**kwargs) -> Application:
        app = stage7.build_application(form_timeout=form_timeout, **kwargs)

        async def record(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
            errors.append(context.error)

        app.add_error_handler(record)
        return app

    return OfflineChat(build, make_persistence)


@pytest.fixture
async def chat(make_persistence):
    errors: list[BaseException] = []
    async with offline_bot(make_persistence, errors) as chat:
        yield chat
    assert errors == []


async def crash(chat: OfflineChat) -> None:
    """What ``kill -9`` leaves behind: the bot stops at once and saves nothing more. (Its
    persistence is closed, so no file stays open; it rewrites only what it had been given.)"""
    app, persistence = chat.app, chat.persistence
    assert app is not None and persistence is not None
    await app.stop()
    await persistence.flush()
    chat.discard()


async def until(moment: float) -> None:
    """Let the wall clock pass ``moment`` - for tests whose bot must be down when a run comes due."""
    await asyncio.sleep(max(0.0, moment - time.time()) + 0.05)


async def stored_chat_data(make_persistence: Callable[[], BasePersistence]) -> dict:
    """This chat's data as a fresh persistence loads it from the file. (It gets a bot, as in an
    Application: a PicklePersistence without one rewrites every ``None`` as a bot when flushed.)"""
    persistence = make_persistence()
    persistence.set_bot(ExtBot(OFFLINE_TOKEN))
    try:
        return (await persistence.get_chat_data()).get(CHAT, {})
    finally:
        await persistence.flush()


def reminder_jobs(chat: OfflineChat) -> list[str]:
    return sorted(job.name for job in chat.app.job_queue.jobs() if job.name.startswith("reminder "))


def only_reminder(chat: OfflineChat) -> dict:
    [reminder] = chat.app.chat_data[CHAT][jobs.REMINDERS]
    return reminder


# --------------------------------------------------------------------------------------------
# Durations and bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("2s", 2), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("1d2h3m4s", 93784), ("90s", 90),
    (" 5M ", 300),
])
def test_durations_are_read(text, seconds):
    assert jobs.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "0s", "5", "m", "", "1m1h", "5 m", "1.5h", "367d"])
def test_other_durations_are_refused(text):
    with pytest.raises(ValueError, match="not"):
        jobs.parse_duration(text)


@given(st.integers(min_value=1, max_value=jobs.MAX_DURATION))
def test_format_duration_writes_what_parse_reads(seconds):
    assert jobs.parse_duration(jobs.format_duration(seconds)) == seconds


@given(st.text())
def test_parse_duration_answers_any_text_with_seconds_or_a_value_error(text):
    try:
        seconds = jobs.parse_duration(text)
    except ValueError as exc:
        assert "not" in str(exc)
    else:
        assert 1 <= seconds <= jobs.MAX_DURATION


@pytest.mark.parametrize(("command", "right_form"), [
    ("/remind soon", "/remind <duration> <text>"),
    ("/remind -5m x", "/remind <duration> <text>"),
    ("/remind 5m", "/remind <duration> <text>"),
    ("/remind", "/remind <duration> <text>"),
    ("/every 0s x", "/every <duration> <text>"),
    ("/cancel 99", "/cancel <number>"),
    ("/cancel", "/cancel <number>"),
    ("/cancel first", "/cancel <number>"),
])
async def test_bad_input_gets_one_line_showing_the_right_form(chat, command, right_form):
    [answer] = await chat.send(command)
    assert right_form in answer and "\n" not in answer
    assert reminder_jobs(chat) == [] and not chat.app.chat_data[CHAT].get(jobs.REMINDERS)


def test_a_persistence_without_chat_data_is_refused_with_the_fix(tmp_path):
    persistence = PicklePersistence(tmp_path / "x.pickle", store_data=PersistenceInput(chat_data=False))
    with pytest.raises(ValueError, match=r"chat_data.*PersistenceInput\(chat_data=True\)"):
        stage7.build_application(persistence=persistence)


# --------------------------------------------------------------------------------------------
# Reminders
# --------------------------------------------------------------------------------------------
async def test_a_reminder_fires_on_time_and_is_then_gone(chat, make_persistence):
    [answer] = await chat.send("/remind 1s stretch")
    assert answer.startswith("Reminder 1 set, once, in 1s")
    assert reminder_jobs(chat) == [f"reminder {CHAT}:1"]
    due = only_reminder(chat)["due"]
    assert await chat.wait_for_messages(1) == ["⏰ stretch"]
    assert time.time() >= due, "not early (how late depends on the machine's load: not tested)"
    await chat.save()
    assert (await stored_chat_data(make_persistence)).get(jobs.REMINDERS) == []
    assert await chat.send("/reminders") == [stage7.NONE_YET]


async def test_reminders_lists_them_numbered_with_the_next_time(chat):
    await chat.send("/remind 10m stretch")
    await chat.send("/every 1h30m drink water")
    [listing] = await chat.send("/reminders")
    lines = listing.splitlines()
    assert lines[1].startswith("1. in 10m (") and lines[1].endswith("UTC): stretch")
    assert lines[2].startswith("2. every 1h30m, next in 1h30m (") and lines[2].endswith(": drink water")


async def test_a_reminder_survives_a_restart(chat):
    await chat.send("/remind 2s stretch")
    await chat.restart()
    assert reminder_jobs(chat) == [f"reminder {CHAT}:1"] or chat.unprompted_messages()
    [message] = await chat.wait_for_messages(1)
    assert message.startswith("⏰ stretch")
    for _ in range(3):
        await chat.restart()
    assert chat.unprompted_messages() == [] and reminder_jobs(chat) == []


async def test_missed_while_down_it_is_sent_once_at_start_up_marked_late(chat):
    await chat.send("/remind 1s stretch")
    due = only_reminder(chat)["due"]
    await chat.shutdown()
    await until(due)
    await chat.start()
    [message] = chat.unprompted_messages()  # sent in post_init, before any update is handled
    assert message.startswith("⏰ stretch (sent ")
    assert message.endswith(" late: it came due while the bot was offline)")
    for _ in range(3):
        await chat.restart()
    assert chat.unprompted_messages() == []
    sent = [call for call in chat.api.calls if call.params.get("text", "").startswith("⏰")]
    assert len(sent) == 1


@pytest.mark.slow
async def test_a_repeating_reminder_skips_missed_runs_without_a_burst(chat, make_persistence):
    await chat.send("/every 1s tick")
    due = only_reminder(chat)["due"]
    await chat.shutdown()
    await until(due + 2)  # the runs at due, due + 1 and due + 2 are missed
    await chat.start()
    assert chat.unprompted_messages() == [], "no catch-up burst at start-up"
    reminder = only_reminder(chat)
    assert reminder["skipped"] >= 3 and reminder["due"] > time.time() - 1
    assert (reminder["due"] - due) % 1 == 0, "it stays on its schedule"
    [message] = await chat.wait_for_messages(1)
    assert message.startswith("⏰ tick (") and message.endswith(" runs skipped while the bot was offline)")
    [message] = await chat.wait_for_messages(1)
    assert message == "⏰ tick"
    await chat.send("/cancel 1")


async def test_a_cancelled_reminder_stays_cancelled_even_after_a_crash(chat, make_persistence):
    await chat.send("/every 1s tick")
    await chat.send("/remind 1h stretch")
    assert await chat.send("/cancel 1") == ["Reminder 1 cancelled: tick"]
    await crash(chat)  # no save after the cancel but the one /cancel made itself
    stored = await stored_chat_data(make_persistence)
    assert [reminder["id"] for reminder in stored[jobs.REMINDERS]] == [2]
    await chat.start()
    assert reminder_jobs(chat) == [f"reminder {CHAT}:2"]
    assert await chat.send("/cancel 1") == [f"There is no reminder 1 here. {stage7.CANCEL_USAGE}"]


async def test_a_new_reminder_survives_a_crash(chat):
    await chat.send("/remind 1h stretch")
    await crash(chat)
    await chat.start()
    assert reminder_jobs(chat) == [f"reminder {CHAT}:1"]


async def test_no_duplicates_after_three_restarts(chat):
    await chat.send("/remind 1h stretch")
    await chat.send("/every 1h drink water")
    for _ in range(3):
        await chat.restart()
    assert reminder_jobs(chat) == [f"reminder {CHAT}:1", f"reminder {CHAT}:2"]
    [listing] = await chat.send("/reminders")
    assert len([line for line in listing.splitlines() if line[0].isdigit()]) == 2
    [answer] = await chat.send("/remind 1h three")
    assert answer.startswith("Reminder 3 set"), "numbers go on after restarts, never reused"


async def test_a_run_is_never_sent_twice_even_if_the_bot_dies_right_after_sending(chat, caplog):
    await chat.send("/remind 1s stretch")
    assert await chat.wait_for_messages(1) == ["⏰ stretch"]
    await crash(chat)  # the claim was saved before sending; that the run is done was not
    with caplog.at_level(logging.WARNING, logger="bots.jobs"):
        await chat.start()
    assert chat.unprompted_messages() == []
    assert "was being sent when the bot stopped" in caplog.text
    await chat.restart()
    assert chat.unprompted_messages() == [] and reminder_jobs(chat) == []


# --------------------------------------------------------------------------------------------
# The /new form and its timeout
# --------------------------------------------------------------------------------------------
def form_deadline(chat: OfflineChat) -> float:
    [entry] = chat.app.chat_data[CHAT][jobs.DEADLINES][stage7.FORM].values()
    return entry["last_seen"]


async def test_the_form_sets_a_reminder(chat):
    assert await chat.send("/new") == [stage7.ASK_WHAT]
    assert await chat.send("stretch") == [stage7.ASK_WHEN]
    assert await chat.send("soonish") == [stage7.BAD_WHEN.format(text="soonish")]
    [answer] = await chat.send("10m")
    assert answer.startswith("Reminder 1 set, once, in 10m")
    assert jobs.DEADLINES not in chat.app.chat_data[CHAT]


async def test_the_form_times_out_while_running(make_persistence):
    errors: list[BaseException] = []
    async with offline_bot(make_persistence, errors, form_timeout=1) as chat:
        await chat.send("/new")
        assert await chat.wait_for_messages(1) == [stage7.TIMED_OUT.format(timeout="1s")]
        assert await chat.send("stretch") == [], "the form is over: not an answer any more"
        await chat.restart()
        assert chat.unprompted_messages() == []
        assert jobs.DEADLINES not in chat.app.chat_data[CHAT]
    assert errors == []


async def test_a_restart_keeps_the_form_deadline(make_persistence):
    errors: list[BaseException] = []
    async with offline_bot(make_persistence, errors, form_timeout=6) as chat:
        await chat.send("/new")
        await chat.send("stretch")
        last_seen = form_deadline(chat)
        await chat.restart()
        if at_start := chat.unprompted_messages():
            # a machine so loaded that the restart itself took 6 s: the deadline passed while the
            # bot was down, so the form must have ended at start-up, through its timeout handler
            assert at_start == [stage7.TIMED_OUT.format(timeout="6s")]
        else:
            [job] = [job for job in chat.app.job_queue.jobs() if job.name.startswith("deadline ")]
            assert job.next_t.timestamp() == pytest.approx(last_seen + 6, abs=0.01), \
                "the deadline is the one set before the restart, not 6 s after it"
            assert await chat.wait_for_messages(1) == [stage7.TIMED_OUT.format(timeout="6s")]
        assert await chat.send("10m") == [], "the form is over"
    assert errors == []


async def test_a_form_deadline_that_passed_while_down_ends_it_at_start_up(make_persistence):
    errors: list[BaseException] = []
    async with offline_bot(make_persistence, errors, form_timeout=1) as chat:
        await chat.send("/new")
        last_seen = form_deadline(chat)
        await chat.shutdown()
        await until(last_seen + 1)
        await chat.start()
        assert chat.unprompted_messages() == [stage7.TIMED_OUT.format(timeout="1s")]
        assert await chat.send("stretch") == [], "the form is over"
        await chat.restart()
        assert chat.unprompted_messages() == []
    assert errors == []


async def test_answering_after_a_restart_moves_the_deadline_on(make_persistence):
    errors: list[BaseException] = []
    async with offline_bot(make_persistence, errors, form_timeout=60) as chat:
        await chat.send("/new")
        await chat.restart()
        assert await chat.send("stretch") == [stage7.ASK_WHEN]
        [answer] = await chat.send("10m")
        assert answer.startswith("Reminder 1 set")
        await chat.restart()
        assert not [job for job in chat.app.job_queue.jobs() if job.name.startswith("deadline ")]
    assert errors == []


# --------------------------------------------------------------------------------------------
# The terminal, as a user would use it
# --------------------------------------------------------------------------------------------
def run_terminal(data_file: Path, text: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "BOT_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "bots.stage7_reminders", "--file", str(data_file)],
        input=text, capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=True,
    )


def test_the_terminal_shows_a_reminder_missed_while_down_once(tmp_path):
    data_file = tmp_path / "reminders.sqlite3"
    first = run_terminal(data_file, "/remind 2s stretch\n")
    assert "bot> Reminder 1 set, once, in 2s" in first.stdout
    time.sleep(3)  # the bot is down while the reminder comes due: the point of the test
    second = run_terminal(data_file, "")
    assert second.stdout.count("⏰ stretch") == 1
    assert "late: it came due while the bot was offline" in second.stdout
    third = run_terminal(data_file, "/reminders\n")
    assert "⏰" not in third.stdout and stage7.NONE_YET in third.stdout


class LogEvent(logging.Handler):
    """An asyncio.Event set when a log record containing ``text`` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_a_run_whose_claim_cannot_be_saved_is_not_sent_but_tried_again(tmp_path):
    """Another program holds the SQLite file locked when the reminder comes due: the claim cannot
    be written, so nothing is sent (it could be sent again after a crash), and the run is kept
    and tried again ``RETRY_AFTER`` seconds later."""
    path = tmp_path / "stage7.sqlite3"
    errors: list[BaseException] = []
    async with offline_bot(lambda: SQLitePersistence(path, busy_timeout=0.2), errors) as chat:
        await chat.send("/remind 1s stretch")
        before = dict(only_reminder(chat))
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            failed = LogEvent("could not save that it is being sent")
            logging.getLogger("bots.jobs").addHandler(failed)
            try:
                async with asyncio.timeout(10):
                    await failed.event.wait()
            finally:
                logging.getLogger("bots.jobs").removeHandler(failed)
            assert chat.unprompted_messages() == []
            assert only_reminder(chat) == before, "the run is not claimed: it is still to be sent"
            [job] = chat.app.job_queue.get_jobs_by_name(f"reminder {CHAT}:1")
            assert job.next_t.timestamp() == pytest.approx(time.time() + jobs.RETRY_AFTER, abs=2)
            undone = LogEvent("the undone claim of reminder 1 could not be saved at once")
            logging.getLogger("bots.jobs").addHandler(undone)
            try:
                async with asyncio.timeout(10):
                    await undone.event.wait()
            finally:
                logging.getLogger("bots.jobs").removeHandler(undone)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        # The persistence kept the writes it could not make. Another chat's save writes them now,
        # and then the bot dies: what is on disk for Alice must be the unclaimed reminder.
        await chat.send("/remind 1h other", user=BOB)
        await crash(chat)
        stored = await stored_chat_data(lambda: SQLitePersistence(path))
        assert stored[jobs.REMINDERS] == [before], "a claim that failed is never left on disk"
    assert errors == []


def test_kill_9_right_after_a_reminder_arrives_never_sends_it_again(tmp_path):
    """The real thing: the terminal bot is killed with SIGKILL as soon as the reminder is shown.
    The next start does not send it a second time, and says so in its log."""
    data_file = tmp_path / "reminders.sqlite3"
    env = {key: value for key, value in os.environ.items() if key != "BOT_TOKEN"}
    bot = subprocess.Popen(
        [sys.executable, "-m", "bots.stage7_reminders", "--file", str(data_file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=REPO, env=env,
    )
    watchdog = threading.Timer(60, bot.kill)  # should the reminder never come, stop reading
    watchdog.start()
    try:
        bot.stdin.write("/remind 1s stretch\n")
        bot.stdin.flush()
        seen = []
        for line in bot.stdout:
            seen.append(line)
            if line.startswith("bot> ⏰ stretch"):
                break
        assert seen and seen[-1].startswith("bot> ⏰ stretch"), seen
    finally:
        watchdog.cancel()
        bot.kill()
        bot.wait(timeout=30)
        bot.stdin.close()
        bot.stdout.close()
    again = subprocess.run(
        [sys.executable, "-m", "bots.stage7_reminders", "--file", str(data_file)],
        input="/reminders\n", capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=True,
    )
    assert "⏰" not in again.stdout and stage7.NONE_YET in again.stdout
    assert "was being sent when the bot stopped" in again.stderr


async def test_deadlines_of_a_form_that_no_longer_has_a_timeout_do_not_stop_the_bot(make_persistence, caplog):
    errors: list[BaseException] = []
    async with offline_bot(make_persistence, errors) as chat:
        await chat.send("/new")
    async with offline_bot(make_persistence, errors, form_timeout=0) as chat:  # timeout removed
        assert "has no conversation_timeout in this bot; they are dropped" in caplog.text
        assert jobs.DEADLINES not in chat.app.chat_data[CHAT]
        assert await chat.send("stretch") == [stage7.ASK_WHEN], "the form itself goes on"
    assert errors == []


class BlockingAPI(OfflineBotAPI):
    """The offline Bot API, answering ``sendMessage`` the way Telegram does once the user has
    blocked the bot, when ``blocked`` is set."""

    blocked = False

    async def do_request(self, url: str, method: str, request_data=None, **timeouts) -> tuple[int, bytes]:
        if self.blocked and url.endswith("/sendMessage"):
            body = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
            return 403, json.dumps(body).encode()
        return await super().do_request(url, method, request_data, **timeouts)


async def test_a_send_that_fails_is_reported_and_not_retried(make_persistence):
    errors: list[BaseException] = []
    chat = offline_bot(make_persistence, errors)
    chat.api = api = BlockingAPI()
    async with chat:
        await chat.send("/remind 1s stretch")
        api.blocked = True
        failed = LogEvent("in job 'reminder 1001:1' (chat 1001)")
        logging.getLogger("bots").addHandler(failed)
        try:
            async with asyncio.timeout(10):
                await failed.event.wait()
        finally:
            logging.getLogger("bots").removeHandler(failed)
        api.blocked = False
        assert [type(error) for error in errors] == [Forbidden]
        assert chat.app.chat_data[CHAT][jobs.REMINDERS] == [], "the run is over: at most once"
        await chat.restart()
        assert chat.unprompted_messages() == [] and reminder_jobs(chat) == []


async def test_reminders_move_with_a_group_that_becomes_a_supergroup(make_persistence):
    errors: list[BaseException] = []
    group, supergroup = group_chat(), supergroup_chat()
    async with offline_bot(make_persistence, errors) as chat:
        await chat.send("/every 1h drink water", chat=group)
        for update in migration_updates(chat.app, chat.api, group, supergroup):
            await chat.feed(update)
        assert [job.name for job in chat.app.job_queue.jobs()] == [f"reminder {supergroup.id}:1"]
        await chat.restart()
        assert [job.name for job in chat.app.job_queue.jobs()] == [f"reminder {supergroup.id}:1"]
        [listing] = await chat.send("/reminders", chat=supergroup)
        assert "1. every 1h, next in " in listing
    assert errors == []


async def test_a_chat_holds_at_most_max_reminders_and_texts_have_a_limit(chat, monkeypatch):
    monkeypatch.setattr(stage7, "MAX_REMINDERS", 2)
    await chat.send("/remind 1h one")
    await chat.send("/remind 1h two")
    [answer] = await chat.send("/remind 1h three")
    assert answer.startswith("This chat has 2 reminders, the most it can have.")
    [answer] = await chat.send("/remind 1h " + "x" * (stage7.MAX_TEXT + 1))
    assert answer.startswith(f"That text has {stage7.MAX_TEXT + 1} characters")
    assert len(reminder_jobs(chat)) == 2


async def test_a_reminder_set_while_the_file_is_locked_is_confirmed_and_saved_later(tmp_path, caplog):
    path = tmp_path / "stage7.sqlite3"
    errors: list[BaseException] = []
    make = functools.partial(SQLitePersistence, path, busy_timeout=0.2)
    async with offline_bot(make, errors) as chat:
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            with caplog.at_level(logging.ERROR, logger="bots.jobs"):
                [answer] = await chat.send("/remind 1h stretch")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert answer.startswith("Reminder 1 set")
        assert "the new reminder 1 could not be saved at once; it is kept" in caplog.text
        assert reminder_jobs(chat) == [f"reminder {CHAT}:1"]
        await chat.save()
        stored = await stored_chat_data(make)
        assert [reminder["text"] for reminder in stored[jobs.REMINDERS]] == ["stretch"]
    assert errors == []


async def test_the_form_refuses_a_text_too_long(chat):
    await chat.send("/new")
    [answer] = await chat.send("x" * (stage7.MAX_TEXT + 1))
    assert answer == f"{stage7.TOO_LONG.format(length=stage7.MAX_TEXT + 1)} {stage7.ASK_WHAT}"
    assert await chat.send("stretch") == [stage7.ASK_WHEN]


async def test_a_missed_reminder_that_cannot_be_sent_at_start_up_does_not_stop_the_bot(
        make_persistence, caplog):
    errors: list[BaseException] = []
    chat = offline_bot(make_persistence, errors)
    chat.api = api = BlockingAPI()
    async with chat:
        await chat.send("/remind 1s stretch")
        due = only_reminder(chat)["due"]
        await chat.shutdown()
        await until(due)
        api.blocked = True
        with caplog.at_level(logging.ERROR, logger="bots.jobs"):
            await chat.start()  # would raise if post_init let the Forbidden through
        api.blocked = False
        assert "could not be sent at start-up; it is not sent again" in caplog.text
        assert chat.app.chat_data[CHAT][jobs.REMINDERS] == []
        assert await chat.send("/reminders") == [stage7.NONE_YET], "the bot runs"
        await chat.restart()
        assert chat.unprompted_messages() == []
    assert errors == []


async def test_two_people_s_forms_in_one_group_keep_their_own_deadlines(make_persistence):
    errors: list[BaseException] = []
    group = group_chat()
    async with offline_bot(make_persistence, errors, form_timeout=1) as chat:
        await chat.send("/new", user=ALICE, chat=group)
        await chat.send("/new", user=BOB, chat=group)
        await chat.send("stretch", user=BOB, chat=group)
        deadlines = chat.app.chat_data[group.id][jobs.DEADLINES][stage7.FORM]
        assert sorted(deadlines) == [str(ALICE.id), str(BOB.id)]
        last = max(entry["last_seen"] for entry in deadlines.values())
        await chat.shutdown()
        await until(last + 1)
        await chat.start()
        assert chat.unprompted_messages() == [stage7.TIMED_OUT.format(timeout="1s")] * 2
        assert jobs.DEADLINES not in chat.app.chat_data[group.id]
        assert await chat.send("10m", user=BOB, chat=group) == [], "Bob's form is over too"
    assert errors == []
