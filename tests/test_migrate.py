"""Stage 8: ``python -m persistence.migrate`` moves everything, exactly, or nothing at all."""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import json
import os
import pickle
import pty
import re
import resource
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import REPO
from postgres_server import database_url, fresh_schema
from telegram.ext import PicklePersistence

from bots import stage1_pickle_logger as stage1
from bots import stage3_sqlite_logger as stage3
from bots.offline import OfflineBotAPI, OfflineChat, application_builder
from persistence.migrate import (
    BotData,
    MigrationError,
    SQLiteStore,
    dict_persistence,
    differs,
    export_json,
    migrate,
    migration_lock_key,
    open_store,
    stand_in_bot,
    value_differs,
)
from persistence.postgres import PostgresPersistence
from persistence.sqlite import SQLitePersistence

DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("make_old_pickles", DATA / "make_old_pickles.py")
assert _spec and _spec.loader
old_pickles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(old_pickles)

OLD_FILES = [(f"ptb{v}.pickle", False) for v in (20, 21, 22)]
OLD_FILES += [(f"ptb{v}_multi", True) for v in (20, 21, 22)]


async def run(source: Path | str, target: Path | str, *, serializer: Any = None, prefix: bool = False,
              **options: Any) -> Any:
    return await migrate(open_store(str(source), pickle_prefix=prefix),
                         open_store(str(target), serializer=serializer, pickle_prefix=prefix), **options)


async def read_all(location: Path | str, prefix: bool = False) -> BotData:
    return await open_store(str(location), pickle_prefix=prefix).read(stand_in_bot())


def plain_data() -> BotData:
    """Data JSON holds exactly - with what plain JSON cannot say (tuples, int keys, inf)."""
    return BotData(
        user_data={1001: {"name": "Alice", "scores": {1: 10, 2: 7.5}, "last": (3, "apple"), "ok": True}},
        chat_data={-4001: {"messages": [{"message": "hi", "message_ts": 1700000000.0}]},
                   1001: {"limit": float("inf"), "$weird": {"$tuple": [1]}}},
        bot_data={"forms": 2, 7: "seven"},
        callback_data=([("kb-1", 1700000100.0, {"btn-1": ("apple", 2)})], {"q-1": "kb-1"}),
        conversations={"signup": {(-4001, 1001): 1, (1002, 1002): "CITY"}, "inline": {("AgAA",): 0}},
    )


async def write_sqlite(path: Path, data: BotData, serializer: str = "json") -> None:
    await SQLiteStore(str(path), serializer).write(data, stand_in_bot())  # type: ignore[arg-type]


def file_state(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


# ---- old PTB versions ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "multi"), OLD_FILES)
async def test_pickles_of_ptb_20_21_22_arrive_whole_in_a_real_application(tmp_path, name, multi):
    target = tmp_path / "bot.sqlite3"
    report = await run(DATA / name, target, serializer="pickle", prefix=multi)
    assert report.counts["user_data"] == "2 users"
    expected = old_pickles.sample_data()  # Telegram objects compare by id here
    # exactly what PTB's own PicklePersistence loads (old Telegram objects keep that era's fields)
    source = PicklePersistence(DATA / name, single_file=not multi)
    source.set_bot(application_builder().build().bot)

    app = application_builder(request=OfflineBotAPI(), persistence=SQLitePersistence(
        target, serializer="pickle")).arbitrary_callback_data(True).build()
    async with app:
        assert app.user_data == expected["user_data"] and app.chat_data == expected["chat_data"]
        assert value_differs(await source.get_user_data(), dict(app.user_data)) is None
        assert value_differs(await source.get_chat_data(), dict(app.chat_data)) is None
        assert value_differs(expected["bot_data"], app.bot_data) is None
        assert app.bot.callback_data_cache.persistence_data == expected["callback_data"]
        for conversation, states in expected["conversations"].items():
            assert await app.persistence.get_conversations(conversation) == states
        me = app.user_data[1001]["me"]
        assert me.get_bot() is app.bot  # Telegram objects belong to the bot that loads them
        assert app.user_data[1001]["joined"] == datetime(2024, 5, 17, 9, 30, tzinfo=UTC)


async def test_a_ptb_13_pickle_is_refused_naming_the_version_problem(tmp_path):
    target = tmp_path / "bot.sqlite3"
    with pytest.raises(MigrationError) as caught:
        await run(DATA / "ptb13.pickle", target, serializer="pickle")
    message = str(caught.value)
    assert "ptb13.pickle" in message and "PTB 13" in message and "telegram.user" in message
    assert not target.exists()


async def test_ended_conversations_that_picklepersistence_keeps_are_left_out(tmp_path):
    source = tmp_path / "bot.pickle"
    persistence = PicklePersistence(source, on_flush=True)
    persistence.set_bot(application_builder().build().bot)
    await persistence.update_conversation("signup", (1, 1), 2)
    await persistence.update_conversation("signup", (2, 2), 1)
    await persistence.update_conversation("signup", (2, 2), None)  # ended: PTB treats it as absent
    await persistence.update_conversation("old", (3, 3), None)
    await persistence.flush()
    report = await run(source, tmp_path / "bot.sqlite3")
    assert report.counts["conversations"] == "1 state in 1 name (signup)"
    assert (await read_all(tmp_path / "bot.sqlite3")).conversations == {"signup": {(1, 1): 2}}


# ---- stage 1 to stage 3: the logger keeps its history -----------------------------------------------
async def test_stage1_pickle_moved_to_stage3_sqlite_keeps_the_loggers_history(tmp_path):
    pickle_file, sqlite_file = tmp_path / "stage1.pickle", tmp_path / "stage3.sqlite3"
    async with OfflineChat(stage1.build_application, lambda: stage1.make_persistence(pickle_file)) as chat:
        await chat.send("remember the milk")
        await chat.send("and the eggs")
        [before] = await chat.send("/show_data")
    report = await run(pickle_file, sqlite_file)
    assert report.counts["chat_data"] == "1 chat"
    async with OfflineChat(stage3.build_application, lambda: stage3.make_persistence(sqlite_file)) as chat:
        [after] = await chat.send("/show_data")
    assert after == before and "2 stored message(s)" in after and "and the eggs" in after


# ---- all or nothing ---------------------------------------------------------------------------------
async def test_values_a_json_target_cannot_hold_are_listed_and_nothing_is_written(tmp_path):
    source = tmp_path / "bot.pickle"
    persistence = PicklePersistence(source, on_flush=True)
    persistence.set_bot(application_builder().build().bot)
    when = datetime(2025, 1, 1, tzinfo=UTC)
    for user_id in range(1, 26):  # 25 users with a datetime, and one without
        await persistence.update_user_data(user_id, {"seen": when, "n": user_id})
    await persistence.update_user_data(99, {"n": 99})
    await persistence.flush()
    for target in (tmp_path / "bot.sqlite3", tmp_path / "export.json"):
        with pytest.raises(MigrationError) as caught:
            await run(source, target)
        message = str(caught.value)
        assert "25 values" in message and "... and 15 more" in message
        assert message.count("['seen'] is datetime.datetime") == 10
        assert "user_data of user 1:" in message and "user_data of user 99" not in message
        assert "--serializer pickle" in message
        assert not target.exists()
    report = await run(source, tmp_path / "bot.sqlite3", serializer="pickle")
    assert report.counts["user_data"] == "26 users"


async def test_a_target_holding_data_is_refused_untouched_without_replace(tmp_path):
    target = tmp_path / "bot.sqlite3"
    await write_sqlite(target, BotData(user_data={5: {"old": True}}))
    before = file_state(target)
    source = tmp_path / "export.json"
    source.write_text(json.dumps(export_json(plain_data())))
    with pytest.raises(MigrationError, match=r"already holds data .*--replace"):
        await run(source, target)
    assert file_state(target) == before
    with pytest.raises(MigrationError, match="already holds data"):
        await run(source, target, dry_run=True)


async def test_replace_leaves_exactly_the_source(tmp_path):
    target = tmp_path / "bot.sqlite3"
    await write_sqlite(target, BotData(
        user_data={5: {"old": True}, 1001: {"stale": 1}}, chat_data={-9: {"x": 1}}, bot_data={"old": 1},
        callback_data=([("kb-old", 1.0, {})], {}),
        conversations={"signup": {(5, 5): 2}, "gone": {(1,): "A"}}))
    source = tmp_path / "export.json"
    source.write_text(json.dumps(export_json(plain_data())))
    report = await run(source, target, replace=True)
    assert report.replaced
    assert value_differs_all(plain_data(), await read_all(target)) is None


def value_differs_all(a: BotData, b: BotData) -> str | None:
    return differs(a, b)


async def test_replace_refused_for_a_bad_value_leaves_the_old_data_whole(tmp_path):
    target = tmp_path / "bot.sqlite3"
    await write_sqlite(target, BotData(user_data={5: {"old": True}}, conversations={"signup": {(5, 5): 2}}))
    before = file_state(target)
    with pytest.raises(MigrationError, match="cannot hold 2 values"):
        await run(DATA / "ptb22.pickle", target, replace=True)
    assert file_state(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.sqlite3"]  # no scratch file left


async def test_a_target_another_program_has_open_is_refused_untouched(tmp_path):
    """Replacing the file under a running bot would cut it off from its data: stop it first."""
    target = tmp_path / "bot.sqlite3"
    await write_sqlite(target, BotData(user_data={5: {"old": True}}))
    before = file_state(target)
    bot = sqlite3.connect(target)  # the "bot": holds the file open, with its WAL
    try:
        bot.execute("SELECT count(*) FROM user_data").fetchall()
        with pytest.raises(MigrationError, match=r"open in another program .*Stop the bot"):
            await run(DATA / "ptb22.pickle", target, serializer="pickle", replace=True)
        assert bot.execute("SELECT count(*) FROM user_data").fetchone() == (1,)
    finally:
        bot.close()
    assert file_state(target) == before


async def test_a_value_only_the_encoder_refuses_is_caught_before_writing(tmp_path):
    """A 5,000-digit int is a JSON type, but too long for ``str()``: the check is the encoder's own."""
    source = tmp_path / "export.json"
    source.write_text(json.dumps(export_json(plain_data())))
    sqlite_file = tmp_path / "bot.sqlite3"
    await write_sqlite(sqlite_file, BotData(user_data={1: {"n": 10**4999}}, chat_data={2: {"ok": 1}}),
                       serializer="pickle")
    for target in (tmp_path / "new.sqlite3", tmp_path / "new.json"):
        with pytest.raises(MigrationError, match=r"1 value .*\n.*user_data of user 1.*digits"):
            await run(sqlite_file, target)
        assert not target.exists()


async def test_dry_run_checks_everything_and_writes_nothing(tmp_path):
    target = tmp_path / "bot.sqlite3"
    report = await run(DATA / "ptb22.pickle", target, serializer="pickle", dry_run=True)
    assert "Would move" in str(report) and "nothing was written" in str(report)
    assert not target.exists()
    with pytest.raises(MigrationError, match="cannot hold 2 values"):
        await run(DATA / "ptb22.pickle", target, dry_run=True)


# ---- JSON export and DictPersistence ----------------------------------------------------------------
async def test_json_export_round_trips_exactly_and_dictpersistence_loads_it(tmp_path):
    sqlite_file, export, back = tmp_path / "bot.sqlite3", tmp_path / "export.json", tmp_path / "back.sqlite3"
    await write_sqlite(sqlite_file, plain_data())
    await run(sqlite_file, export)
    await run(export, back)
    assert value_differs_all(plain_data(), await read_all(back)) is None

    document = json.loads(export.read_text())
    assert set(document) == {"user_data_json", "chat_data_json", "bot_data_json", "conversations_json",
                             "callback_data_json"}
    dict_p = dict_persistence(document)
    user_data = await dict_p.get_user_data()
    assert list(user_data) == [1001]  # top-level int keys survive DictPersistence
    assert user_data[1001]["last"] == {"$tuple": [3, "apple"]}  # values keep the codec's tags
    assert (await dict_p.get_conversations("signup"))[(-4001, 1001)] == 1
    cache = await dict_p.get_callback_data()
    assert cache is not None and cache[1] == {"q-1": "kb-1"}


async def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"users": []}')
    with pytest.raises(MigrationError, match=r"notes\.json is not a JSON export"):
        await run(bad, tmp_path / "bot.sqlite3")


async def test_pickle_and_multi_file_targets_round_trip(tmp_path):
    single, multi = tmp_path / "bot.pickle", tmp_path / "bot"
    await run(DATA / "ptb22.pickle", single)
    await run(single, multi, prefix=True)
    original = await read_all(DATA / "ptb22.pickle")
    assert value_differs_all(original, await read_all(multi, prefix=True)) is None
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["bot.pickle", "bot_bot_data", "bot_callback_data", "bot_chat_data", "bot_conversations",
                     "bot_user_data"]


def test_exact_comparison_sees_types_and_places():
    assert value_differs({"a": [1, (2, 3)]}, {"a": [1, (2, 3)]}) is None
    assert value_differs({"a": [1, 2]}, {"a": [1, 2.0]}) == "['a'][1]: int became float"
    assert value_differs({"a": (1,)}, {"a": [1]}) == "['a']: tuple became list"
    assert value_differs({1: True}, {1: 1}) == "[1]: bool became int"
    assert value_differs(float("nan"), float("nan")) is None


# ---- the command line -------------------------------------------------------------------------------
def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "persistence.migrate", *args], capture_output=True,
                          text=True, cwd=cwd, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_cli_moves_a_pickle_and_prints_counts(tmp_path):
    shutil.copy(DATA / "ptb21.pickle", tmp_path / "stage1.pickle")
    done = cli("stage1.pickle", "stage3.sqlite3", "--serializer", "pickle", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Moved from stage1.pickle to stage3.sqlite3, and read it back: identical" in done.stdout
    assert "conversations  3 states in 2 names (inline_poll, signup)" in done.stdout
    assert done.stderr == ""  # no progress bar when not on a terminal


@pytest.mark.parametrize(("args", "message"), [
    (("missing.pickle", "bot.sqlite3"), "SOURCE missing.pickle does not exist"),
    (("bot.pickle", "postgresql://bot:secret@127.0.0.1:1/bot"),  # no server there; password hidden
     "Cannot connect to PostgreSQL at postgresql://bot:***@127.0.0.1:1/bot (schema public)"),
    (("bot.pickle", "bot.txt"), "TARGET bot.txt: cannot tell what it is"),
    (("bot.pickle", "bot.sqlite3"), "cannot hold 2 values"),
])
def test_cli_errors_are_one_clear_message(tmp_path, args, message):
    shutil.copy(DATA / "ptb22.pickle", tmp_path / "bot.pickle")
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and message in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.pickle"]


# ---- the benchmark, smoke-tested (its timings are never asserted) ----------------------------------
async def test_the_migration_benchmark_runs():
    from benchmarks import bench_migrate

    text = await bench_migrate.main_async(chats=50, rounds=1, write=False)
    assert "| `python -m persistence.migrate big.pickle new.sqlite3`" in text and "floor" in text


@pytest.mark.parametrize("target_name", ["bot.sqlite3", "bot.json", "bot.pickle"])
def test_a_full_disk_leaves_no_target_and_no_scratch_file(tmp_path, target_name):
    """The tool's process may write at most 64 KB per file (RLIMIT_FSIZE, as a full disk would
    stop it): the 300-chat target cannot be completed, and nothing is left behind."""
    source = tmp_path / "export.json"
    chats = {chat_id: {"messages": [{"message": f"note {n} in chat {chat_id}"} for n in range(20)]}
             for chat_id in range(300)}
    source.write_text(json.dumps(export_json(BotData(chat_data=chats))))
    target = tmp_path / target_name

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    done = subprocess.run([sys.executable, "-m", "persistence.migrate", source.name, target.name],
                          capture_output=True, text=True, cwd=tmp_path, preexec_fn=limit_file_size,
                          # no .pyc written under the limit: a cut one would break later imports
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                               "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: Cannot write {target_name}") and "Traceback" not in done.stderr
    assert "It was not changed" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json"]


# ---- attacks: garbage, a kill mid-write, a terminal ----------------------------------------------
@pytest.mark.parametrize(("name", "content", "message"), [
    ("half.pickle", (DATA / "ptb22.pickle").read_bytes()[:600], "pickle data was truncated"),
    ("notes.pickle", b"remember the milk\n", "cannot be read as a PicklePersistence file"),
    ("list.pickle", pickle.dumps([1, 2, 3]), "cannot be read as a PicklePersistence file"),
    ("notes.sqlite3", b"remember the milk\n", "file is not a database"),
    ("cut.json", b'{"user_data_json": {"1": ', "is not a JSON export"),
])
async def test_a_source_that_is_not_a_bots_data_is_refused_untouched(tmp_path, name, content, message):
    source = tmp_path / name
    source.write_bytes(content)
    with pytest.raises(MigrationError, match=re.escape(message)) as caught:
        await run(source, tmp_path / "bot.sqlite3")
    assert name in str(caught.value) and "It was not changed" in str(caught.value)
    assert source.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_run_killed_while_writing_leaves_the_old_target_or_the_new_one(tmp_path):
    """SIGKILL while the tool writes: the target is never half of each, and the next run removes
    the copy the killed one left (it holds users' data)."""
    source, target = tmp_path / "export.json", tmp_path / "bot.sqlite3"
    new = BotData(chat_data={chat_id: {"messages": [f"note {n}" for n in range(20)]}
                             for chat_id in range(20_000)})
    source.write_text(json.dumps(export_json(new)))
    old = BotData(user_data={5: {"old": True}})
    asyncio.run(write_sqlite(target, old))
    command = [sys.executable, "-m", "persistence.migrate", source.name, target.name, "--replace"]
    tool = subprocess.Popen(command, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scratch = tmp_path / f".bot.sqlite3.migrate-{tool.pid}"
    deadline = time.monotonic() + 60
    while not scratch.exists() and tool.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the event (the copy appears), not for a duration
    tool.kill()
    tool.communicate()
    found = asyncio.run(read_all(target))
    assert value_differs_all(old, found) is None or value_differs_all(new, found) is None

    asyncio.run(run(DATA / "ptb22.pickle", tmp_path / "other.sqlite3", serializer="pickle"))
    assert not list(tmp_path.glob(".other*"))
    done = cli(source.name, target.name, "--replace", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.sqlite3", "export.json", "other.sqlite3"]
    assert value_differs_all(new, asyncio.run(read_all(target))) is None


def test_a_progress_bar_shows_on_a_terminal(tmp_path):
    """tqdm draws on stderr when it is a terminal (here a pseudo-terminal), and never otherwise."""
    shutil.copy(DATA / "ptb21.pickle", tmp_path / "bot.pickle")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        done = subprocess.run([sys.executable, "-m", "persistence.migrate", "bot.pickle", "bot.sqlite3",
                               "--serializer", "pickle"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=follower, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        os.close(follower)
        drawn = b""
        while chunk := _read_pty(leader):
            drawn += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert b"reading bot.pickle ..." in drawn and b"writing 9 values to bot.sqlite3 ..." in drawn
    assert b"verifying:" in drawn and b"values/s" in drawn


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other side is closed and everything was read
        return b""


# ---- PostgreSQL (stage 9's PostgresPersistence), on the tests' own server ---------------------------
def pg_store(schema: str, role: str = "TARGET", serializer: Any = None) -> Any:
    return open_store(database_url(), serializer=serializer, schema=schema, role=role)


async def pg_execute(sql: str) -> None:
    connection = await asyncpg.connect(database_url())
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.mark.slow
async def test_pickle_to_postgresql_and_back_to_sqlite_keeps_everything(tmp_path):
    schema = fresh_schema("migrate")
    target = pg_store(schema, serializer="pickle")
    await migrate(open_store(str(DATA / "ptb21.pickle")), target, progress=False)
    app = application_builder(request=OfflineBotAPI(), persistence=PostgresPersistence(
        database_url(), schema=schema, serializer="pickle")).arbitrary_callback_data(True).build()
    async with app:
        assert app.user_data == old_pickles.sample_data()["user_data"]
        assert app.user_data[1001]["me"].get_bot() is app.bot
    back = tmp_path / "back.sqlite3"
    await migrate(pg_store(schema, "SOURCE"), open_store(str(back), serializer="pickle"), progress=False)
    assert value_differs_all(await read_all(DATA / "ptb21.pickle"), await read_all(back)) is None


@pytest.mark.slow
async def test_postgresql_all_or_nothing(tmp_path):
    schema = fresh_schema("migrate")
    with pytest.raises(MigrationError, match="cannot hold 2 values"):  # JSON rows: no datetime
        await migrate(open_store(str(DATA / "ptb22.pickle")), pg_store(schema), progress=False)
    assert await pg_store(schema)._settings() is None  # nothing was created
    with pytest.raises(MigrationError, match="holds no PostgresPersistence tables"):
        await migrate(pg_store(schema, "SOURCE"), open_store(str(tmp_path / "x.sqlite3")), progress=False)

    old = BotData(user_data={5: {"old": True}}, chat_data={-9: {"x": 1}},
                  conversations={"signup": {(5, 5): 2}})
    source = tmp_path / "old.json"
    source.write_text(json.dumps(export_json(old)))
    await migrate(open_store(str(source)), pg_store(schema), progress=False)
    # one transaction: the database refuses one row (as a full disk would), nothing else changes
    await pg_execute(f"""
        CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.chat_id = 1001 THEN RAISE EXCEPTION 'no room for chat 1001'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON {schema}.chat_data
        FOR EACH ROW EXECUTE FUNCTION {schema}.refuse()""")
    new = tmp_path / "new.json"
    new.write_text(json.dumps(export_json(plain_data())))
    with pytest.raises(MigrationError, match="already holds data"):
        await migrate(open_store(str(new)), pg_store(schema), progress=False)
    with pytest.raises(MigrationError, match="no room for chat 1001"):
        await migrate(open_store(str(new)), pg_store(schema), replace=True, progress=False)
    assert value_differs_all(old, await pg_store(schema, "SOURCE").read(stand_in_bot())) is None

    await pg_execute(f"DROP TRIGGER refuse ON {schema}.chat_data")
    report = await migrate(open_store(str(new)), pg_store(schema), replace=True, progress=False)
    assert report.replaced
    assert value_differs_all(plain_data(), await pg_store(schema, "SOURCE").read(stand_in_bot())) is None


def test_a_second_migration_into_the_same_file_at_once_is_refused(tmp_path):
    """While one migration runs (here: its lock, held by this test), another into the same target
    is refused instead of replacing the first one's result without --replace."""
    shutil.copy(DATA / "ptb22.pickle", tmp_path / "bot.pickle")
    lock = tmp_path / ".bot.sqlite3.migrate-lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = cli("bot.pickle", "bot.sqlite3", "--serializer", "pickle", cwd=tmp_path)
    assert done.returncode == 1 and "Another migration into bot.sqlite3 is running" in done.stderr
    assert not (tmp_path / "bot.sqlite3").exists()
    lock.unlink()
    done = cli("bot.pickle", "bot.sqlite3", "--serializer", "pickle", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.pickle", "bot.sqlite3"]


@pytest.mark.slow
async def test_a_second_migration_into_the_same_postgresql_schema_at_once_is_refused(tmp_path):
    schema = fresh_schema("migrate")
    source = tmp_path / "new.json"
    source.write_text(json.dumps(export_json(plain_data())))
    other = await asyncpg.connect(database_url())  # the first migration, as far as the lock goes
    try:
        await other.execute("SELECT pg_advisory_lock($1)", migration_lock_key(schema))
        with pytest.raises(MigrationError, match=r"Another migration into .* is running"):
            await migrate(open_store(str(source)), pg_store(schema), progress=False)
    finally:
        await other.close()
    assert await pg_store(schema)._settings() is None
    await migrate(open_store(str(source)), pg_store(schema), progress=False)
