"""Adversarial review of this session's changes to persistence/sqlite.py (review 3).

Attacks on: the ``PRAGMA data_version`` fast path of the save, the large-value JSON paths, the
start-up reads on their own connection, the WAL scrub after a drop, and ``_write``/``_submit``
returning futures. The attacks that broke the code (comments "Broke before ...") were fixed in
285ac7a; all of them are regression tests now.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from telegram.ext import Application
from test_attacks_checkpoint_and_merge import files_holding, started_bot

from persistence import SharedSQLitePersistence, SQLitePersistence
from persistence.sqlite import (
    _BIG_TEXT,
    DatabaseFileError,
    DataNotStorableError,
    decode_json,
    encode_json,
)

CLASSES = [SQLitePersistence, SharedSQLitePersistence]


def another_program_sets(db: Path, user_id: int, data: dict[str, Any]) -> None:
    """An admin tool writes a user's row with a connection of its own, and commits."""
    with closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("UPDATE user_data SET data = ? WHERE user_id = ?", (json.dumps(data), user_id))


def stored(db: Path, user_id: int) -> dict[str, Any]:
    with closing(sqlite3.connect(db)) as reader:
        [(data,)] = reader.execute("SELECT data FROM user_data WHERE user_id = ?", (user_id,))
    return json.loads(data)


async def save(app: Application, **users: dict[str, Any]) -> list[warnings.WarningMessage]:
    """The bot changes users (``u1=...``) and saves; the RuntimeWarnings the save gave."""
    for name, changes in users.items():
        app.user_data[int(name[1:])].update(changes)
        app.mark_data_for_update_persistence(user_ids=int(name[1:]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await app.update_persistence()
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


def assert_noticed(cls: type, db: Path, caught: list[warnings.WarningMessage], user_id: int,
                   merged: dict[str, Any], warning: str = "") -> None:
    """Another program's change to the user's row was merged (``SharedSQLitePersistence``: the row
    is ``merged``) or warned about (``SQLitePersistence``: a warning naming the row or ``warning``)."""
    if cls is SharedSQLitePersistence:
        assert stored(db, user_id) == merged
    else:
        names = (f"user_data of user {user_id}", *([warning] if warning else []))
        assert [w for w in caught if any(name in str(w.message) for name in names)]


# ---- 1. PRAGMA data_version -------------------------------------------------------------------------
# Broke before the fixes of 285ac7a: sqlite.py _schema_changed/_changed_rows: _others_wrote is per
# save round, but another program's commit may change a row that this round does not write; the next
# round that writes it sees an unchanged data_version and trusts the row's stale version


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
async def test_another_programs_change_to_a_row_written_one_round_later_is_noticed(db, cls):
    app, errors = await started_bot(cls(db))
    try:
        assert await save(app, u1={"visits": 1}, u2={"visits": 1}) == []
        # an admin tool changes user 2, then the bot saves user 1 only (that round sees the new
        # data_version, but checks user 1 alone) ...
        another_program_sets(db, 2, {"visits": 1, "note": "from the admin panel"})
        assert await save(app, u1={"visits": 2}) == []
        # ... and then saves user 2 (a broadcast handler changed it; no refresh of user 2)
        caught = await save(app, u2={"visits": 2})
        assert errors == []
        assert_noticed(cls, db, caught, 2, {"visits": 2, "note": "from the admin panel"})
    finally:
        await app.shutdown()


async def test_a_save_round_failing_after_it_read_data_version_still_checks_the_row_at_its_retry(db):
    """A round refused by another program's lock is written again at the next save, which still
    notices the change another program made to its row before."""
    app, errors = await started_bot(SQLitePersistence(db, busy_timeout=0))
    try:
        assert await save(app, u1={"visits": 1}) == []
        another_program_sets(db, 1, {"visits": 1, "note": "from the admin panel"})
        # the round is refused before it reads anything: another program holds the write lock
        with closing(sqlite3.connect(db, isolation_level=None)) as locker:
            locker.execute("BEGIN IMMEDIATE")
            assert await save(app, u1={"visits": 2}) == []
            assert len(errors) == 1
        caught = await save(app, u3={"visits": 1})  # the retry (it waits for user 3's commit)
        assert len(errors) == 1
        assert [w for w in caught if "user_data of user 1" in str(w.message)]
        assert stored(db, 1) == {"visits": 2}
    finally:
        await app.shutdown()


# ---- 5. a cancelled caller ------------------------------------------------------------------------
# Broke before the fixes of 285ac7a: shared.py _other_writers (and postgres.py _write_batch) call
# write.done.set_exception() without checking write.done.done(): when PTB's save task was cancelled
# (its future is cancelled), a row that fails alone raises InvalidStateError, the whole round fails
# and is retried with that row forever: no later save is written


async def cancelled_save(persistence: Any, user_id: int, data: Any) -> None:
    """PTB's save of one user, cancelled (a shutdown under a timeout) once its write is queued."""
    task = asyncio.create_task(persistence.update_user_data(user_id, data))
    await asyncio.sleep(0)  # (one step of the event loop: the write is queued)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_row_failing_alone_after_its_caller_was_cancelled_fails_alone(db):
    persistence = SharedSQLitePersistence(db)
    app, errors = await started_bot(persistence)
    try:
        assert await save(app, u1={"visits": 1}, u2={"visits": 1}) == []
        with closing(sqlite3.connect(db, isolation_level=None)) as other:  # an unreadable row
            other.execute("UPDATE user_data SET data = 'not JSON' WHERE user_id = 2")
        # one save round: user 1's write, and user 2's, whose caller is cancelled once it is queued
        kept = asyncio.create_task(persistence.update_user_data(1, {"visits": 2}))
        await cancelled_save(persistence, 2, {"visits": 2})
        await kept  # user 1's write is not touched by user 2's unreadable row
        assert stored(db, 1) == {"visits": 2}
        with closing(sqlite3.connect(db)) as reader:  # and that row is left for a human to fix
            assert reader.execute("SELECT data FROM user_data WHERE user_id = 2").fetchone() == (
                "not JSON",)
        assert errors == []
    finally:
        await app.shutdown()


async def test_a_refused_value_after_its_caller_was_cancelled_does_not_block_later_saves(db):
    persistence = SQLitePersistence(db)
    app, errors = await started_bot(persistence)
    try:
        await cancelled_save(persistence, 2, {"when": object()})
        await save(app, u1={"visits": 2})
        assert errors == []
        assert stored(db, 1) == {"visits": 2}
    finally:
        await app.shutdown()


async def test_a_bad_id_is_refused_when_called_not_queued(db):
    persistence = SQLitePersistence(db)
    app, errors = await started_bot(persistence)
    try:
        for bad in (2**63, "7", 1.0, True):
            with pytest.raises(Exception) as caught:
                await persistence.update_user_data(bad, {"a": 1})
            assert type(caught.value).__name__ == "DataNotStorableError"
        await save(app, u1={"visits": 1})
        assert errors == [] and stored(db, 1) == {"visits": 1}
    finally:
        await app.shutdown()


# ---- 2. large values and decode_json ---------------------------------------------------------------
# Broke before the fixes of 285ac7a: sqlite.py decode_json: str.lstrip()/str.isspace() take any
# Unicode whitespace (\x1c, \xa0, \u2028...) around the value, json.loads only ' \t\n\r';
# bytes are decoded as strict UTF-8, json.loads also reads a UTF-8 BOM and UTF-16/32
# (json.detect_encoding)


def json_loads_outcome(text: str | bytes) -> tuple[str, Any]:
    try:
        return "read", json.loads(text)
    except ValueError:
        return "refused", None


def decode_json_outcome(text: str | bytes) -> tuple[str, Any]:
    try:
        return "read", decode_json(text, "row 1")
    except DatabaseFileError:
        return "refused", None


@pytest.mark.parametrize("text", [
    '\x1c{"a": 1}', '{"a": 1}\x1c', "\xa0[1]", "[1]\u2028", "\x85 1", " 1 \u3000",
    b'\xef\xbb\xbf{"a": 1}', '{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-32-le"),
])
def test_decode_json_reads_and_refuses_what_json_loads_does_around_the_value(text):
    assert decode_json_outcome(text) == json_loads_outcome(text)


BIG = _BIG_TEXT + 10


@pytest.mark.parametrize("text", [
    " " + json.dumps(["x" * BIG]) + "\n", json.dumps({"k": "y" * BIG}) + " 1", json.dumps(["z" * BIG])[:-1],
    json.dumps({"$x": "w" * BIG}), json.dumps({"$tuple": ["v" * BIG, 1]}), "[" * 1_000_000 + "]" * 1_000_000,
    json.dumps(["a" * BIG, "NaN-as-text", float("nan"), -0.0, 1e308, 10**300]),
    json.dumps(["\ud83d\ude00", "\\ud83d", "b" * BIG]), "\t" + json.dumps([1] * (BIG // 2)),
])
def test_decode_json_of_a_big_text_reads_and_refuses_as_the_small_path(text):
    """Above _BIG_TEXT, decode_json takes json's pure-Python scanner: same answers, and a refusal is
    a DatabaseFileError, never another exception."""
    assert len(text) >= _BIG_TEXT
    outcome = decode_json_outcome(text)
    if "$" in text:  # tags: compare with json.loads and the codec's own object hook
        assert outcome[0] == ("read" if "$tuple" in text else "refused")
        if outcome[0] == "read":
            assert outcome[1] == ("v" * BIG, 1)
        return
    expected = json_loads_outcome(text) if not text.startswith("[[[[") else ("refused", None)
    assert outcome[0] == expected[0]
    if outcome[0] == "read":
        assert json.dumps(outcome[1]) == json.dumps(expected[1])


@pytest.mark.parametrize("value", [
    {"s": ["\ud83d"] + ["x"] * 60_000},  # a lone surrogate far from the first piece
    {"s": ["x"] * 60_000 + ["\udc00"]},  # ... in the last piece
    [["x"] * 4095 + ["\ud83d\ude00"], "\ud800"],
    {"k": list(range(70_000)), "$k": 1, 3: (1, 2)},
    [float("inf")] + [0.5] * 60_000,
    {"deep": [[[["y"] * 20_000] * 3]]},
])
def test_a_big_value_round_trips_exactly_as_a_small_one_would(value):
    text = encode_json(value, "user_data of user 1")
    assert text.encode()  # UTF-8 storable
    back = decode_json(text, "row")
    assert repr(back) == repr(value)


def test_a_big_value_that_cannot_be_stored_raises_only_data_not_storable():
    for bad in ([1] * 60_000 + [10**5000], [0] * 60_000 + [object()], {"k": [1] * 60_000, 1.5: {2}}):
        with pytest.raises(DataNotStorableError):
            encode_json(bad, "user_data of user 1")


# ---- 3. start-up reads on their own connection ------------------------------------------------------
async def run_bot_once(path: Path | str, visits: int) -> dict[int, Any]:
    """Start a bot over ``path``, see what it loaded, store ``visits`` for user 1, stop it."""
    app, errors = await started_bot(SQLitePersistence(path))
    try:
        loaded = copy.deepcopy(dict(app.user_data))
        app.user_data[1]["visits"] = visits
        app.mark_data_for_update_persistence(user_ids=1)
    finally:
        await app.shutdown()
    assert errors == []
    return loaded


@pytest.mark.parametrize("name", [
    "a?b.sqlite3", "a#b.sqlite3", "100%.sqlite3", "a%3Fb.sqlite3", "with space.sqlite3",
    "ünï cödé ✓.sqlite3", "a&mode=ro.sqlite3", "semi;colon.sqlite3",
])
async def test_start_up_reads_find_the_file_whatever_its_name(tmp_path, name):
    directory = tmp_path / name.replace(".sqlite3", " dir?#%")
    directory.mkdir()
    assert await run_bot_once(directory / name, 1) == {}
    assert await run_bot_once(directory / name, 2) == {1: {"visits": 1}}
    assert sorted(p.name for p in directory.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [name]


async def test_start_up_reads_through_a_symlink_and_a_relative_path(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert await run_bot_once(Path("link") / "bot.sqlite3", 1) == {}
    assert await run_bot_once("real/bot.sqlite3", 2) == {1: {"visits": 1}}
    (tmp_path / "file-link.sqlite3").symlink_to(real / "bot.sqlite3")
    assert await run_bot_once("file-link.sqlite3", 3) == {1: {"visits": 2}}
    assert await run_bot_once(real / "bot.sqlite3", 4) == {1: {"visits": 3}}


async def test_a_file_deleted_after_the_schema_check_is_named_not_created_again(db):
    await run_bot_once(db, 1)
    persistence = SQLitePersistence(db)
    assert await persistence.get_user_data() == {1: {"visits": 1}}  # the schema is checked here
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    with pytest.raises(DatabaseFileError) as caught:
        await persistence.get_conversations("talk")  # (initialize() reads these next)
    assert str(db) in str(caught.value) and "cannot be opened" in str(caught.value)
    assert "damaged" not in str(caught.value)
    assert not db.exists()


async def test_a_file_replaced_after_the_schema_check_is_refused_and_left_untouched(db, tmp_path):
    await run_bot_once(db, 1)
    persistence = SQLitePersistence(db)
    assert await persistence.get_user_data() == {1: {"visits": 1}}
    other = tmp_path / "other.sqlite3"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE notes (text)")
        conn.commit()
    before = other.read_bytes()
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    other.rename(db)
    with pytest.raises(DatabaseFileError) as caught:
        await persistence.get_conversations("talk")
    assert str(db) in str(caught.value)
    assert db.read_bytes() == before


async def test_flush_then_reuse_checks_the_file_again(db, tmp_path):
    persistence = SQLitePersistence(db)
    app, errors = await started_bot(persistence)
    app.user_data[1]["visits"] = 1
    app.mark_data_for_update_persistence(user_ids=1)
    await app.shutdown()  # flush(): closed
    assert errors == []
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    with closing(sqlite3.connect(db)) as conn:  # another program's database took its place
        conn.execute("CREATE TABLE notes (text)")
        conn.commit()
    with pytest.raises(DatabaseFileError, match="another program"):
        await persistence.get_user_data()


# ---- 1b. a table rebuilt by another program (its triggers gone, a change keeping its version) --------
# Broke before the fixes of 285ac7a: sqlite.py _schema_changed: the first save of a connection
# (after start-up, whose reads use their own connections, or after _drop_connection) takes the
# schema as it finds it (first=True), so a table rebuilt without triggers between the load and that
# save is not noticed and a change that kept its version is overwritten without warning or merge


def another_program_rebuilds_user_data_and_sets(db: Path, user_id: int, data: dict[str, Any]) -> None:
    """An admin tool rebuilds user_data (its triggers go with the old table), then changes a row
    without touching its version."""
    with closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.executescript(f"""
            BEGIN;
            CREATE TABLE rebuilt (user_id INTEGER PRIMARY KEY, data NOT NULL,
                                  version INTEGER NOT NULL DEFAULT (random()));
            INSERT INTO rebuilt SELECT user_id, data, version FROM user_data;
            DROP TABLE user_data;
            ALTER TABLE rebuilt RENAME TO user_data;
            UPDATE user_data SET data = '{json.dumps(data)}' WHERE user_id = {user_id};
            COMMIT;""")


async def first_bot_run(db: Path) -> None:
    app, errors = await started_bot(SQLitePersistence(db))
    await save(app, u1={"visits": 1}, u2={"visits": 1})
    await app.shutdown()
    assert errors == []


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
async def test_a_table_rebuilt_after_the_bots_first_save_is_noticed(db, cls):
    await first_bot_run(db)
    app, errors = await started_bot(cls(db))
    try:
        await save(app, u1={"visits": 2})  # the bot's connection knows the schema now
        another_program_rebuilds_user_data_and_sets(db, 2, {"visits": 1, "note": "from the panel"})
        caught = await save(app, u2={"visits": 2})
        assert errors == []
        assert_noticed(cls, db, caught, 2, {"visits": 2, "note": "from the panel"}, "schema")
    finally:
        await app.shutdown()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
async def test_a_table_rebuilt_between_start_up_and_the_first_save_is_noticed(db, cls):
    await first_bot_run(db)
    app, errors = await started_bot(cls(db))  # loads every row and its version
    try:
        another_program_rebuilds_user_data_and_sets(db, 2, {"visits": 1, "note": "from the panel"})
        caught = await save(app, u2={"visits": 2})
        assert errors == []
        assert_noticed(cls, db, caught, 2, {"visits": 2, "note": "from the panel"}, "schema")
    finally:
        await app.shutdown()


# ---- 4. the WAL scrub after a drop -------------------------------------------------------------------
async def drop_while_a_reader_reads(app: Application, db: Path, reader: sqlite3.Connection,
                                    marker: str) -> None:
    """User 1 (holding ``marker``) is saved, another program starts a read, user 1 is dropped."""
    await save(app, u1={"diary": marker}, u2={"visits": 1})
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM user_data").fetchone()
    app.drop_user_data(1)
    await app.update_persistence()
    assert files_holding(db, marker) != []  # the reader pins it


async def stopped_during_a_blocked_drop(persistence: Any, db: Path, reader: sqlite3.Connection,
                                        marker: str) -> list:
    """A bot over ``persistence`` drops user 1 (whose data holds ``marker``) while ``reader`` reads,
    and stops while it still reads. The errors its error handler got."""
    app, errors = await started_bot(persistence)
    try:
        await drop_while_a_reader_reads(app, db, reader, marker)
    finally:
        await app.shutdown()
    return errors


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
async def test_a_drop_blocked_by_a_reader_at_shutdown_is_gone_at_the_next_runs_first_save(db, cls):
    """(The reader's program closing its connection, the last one, empties the WAL: SQLite.)"""
    marker = "QUOKKA-77-forget-me"
    with closing(sqlite3.connect(db, isolation_level=None)) as reader:
        errors = await stopped_during_a_blocked_drop(cls(db), db, reader, marker)
        reader.execute("ROLLBACK")
    assert errors == []
    app, errors = await started_bot(cls(db))  # the next run of the bot
    try:
        assert 1 not in app.user_data
        await save(app, u2={"visits": 2})
        assert errors == []
        assert files_holding(db, marker) == []
    finally:
        await app.shutdown()


# Broke before the fixes of 285ac7a: sqlite.py _scrub_wal lives in memory: a drop whose WAL scrub a
# reader blocked until the bot stopped leaves the dropped row's bytes in the -wal file for the whole
# next run (no save of that run tries wal_checkpoint(TRUNCATE), the reader having let go or not)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
async def test_a_drop_blocked_by_a_reader_across_a_restart_is_scrubbed_once_it_lets_go(db, cls):
    marker = "WOMBAT-31-forget-me"
    with closing(sqlite3.connect(db, isolation_level=None)) as reader:
        errors = await stopped_during_a_blocked_drop(cls(db), db, reader, marker)
        app, errors2 = await started_bot(cls(db))  # the next run starts: the reader still reads
        try:
            await save(app, u2={"visits": 2})
            assert files_holding(db, marker) != []
            reader.execute("ROLLBACK")
            await save(app, u2={"visits": 3})  # the first save after it let go
            assert errors == errors2 == []
            assert files_holding(db, marker) == []
        finally:
            await app.shutdown()


@pytest.mark.slow
async def test_postgres_a_refused_value_after_its_caller_was_cancelled_does_not_block_later_saves():
    from postgres_server import database_url, fresh_schema

    from persistence.postgres import PostgresPersistence

    schema = fresh_schema("review3")
    persistence = PostgresPersistence(database_url(), schema=schema)
    app, errors = await started_bot(persistence)
    try:
        await cancelled_save(persistence, 2, {"when": object()})
        await save(app, u1={"visits": 2})
        assert errors == []
    finally:
        await app.shutdown()
    fresh = PostgresPersistence(database_url(), schema=schema)
    try:
        assert await fresh.get_user_data() == {1: {"visits": 2}}
    finally:
        await fresh.flush()


# ---- 1c. more sequences around PRAGMA data_version ----------------------------------------------------
# (the same bug, a round that read data_version then failed: its retry trusted every version)


async def test_a_round_with_an_unreadable_row_of_a_never_loaded_user_still_checks_its_other_rows(db):
    """Review 3 first attacked a round that failed whole (this unreadable row) after reading
    data_version: its retry trusted every version. Since then such a row fails its write alone,
    and the round's other rows are checked as always."""
    app, errors = await started_bot(SQLitePersistence(db, lazy=True))
    try:
        assert await save(app, u1={"visits": 1}) == []
        another_program_sets(db, 1, {"visits": 100})  # an admin tool changes user 1's key
        with closing(sqlite3.connect(db, isolation_level=None)) as other:  # a user never loaded
            other.execute("INSERT INTO user_data (user_id, data) VALUES (3, 'not JSON')")
        caught = await save(app, u1={"visits": 2}, u3={"visits": 1})
        assert len(errors) == 1  # user 3's write, alone
        assert stored(db, 1) == {"visits": 2}
        assert [w for w in caught if "user_data of user 1" in str(w.message)]
    finally:
        await app.shutdown()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
async def test_a_second_instance_in_the_same_process_is_another_writer(db, cls):
    app, errors = await started_bot(cls(db))
    admin = SQLitePersistence(db)  # e.g. an admin command's own instance over the bot's file
    try:
        assert await save(app, u1={"visits": 1}) == []
        with pytest.warns(RuntimeWarning, match="user_data of user 1"):  # (the bot wrote it first)
            await admin.update_user_data(1, {"visits": 1, "note": "from the admin instance"})
        caught = await save(app, u1={"visits": 2})
        assert errors == []
        assert_noticed(cls, db, caught, 1, {"visits": 2, "note": "from the admin instance"})
    finally:
        await admin.flush()
        await app.shutdown()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
async def test_a_change_made_while_the_instance_was_flushed_is_noticed_when_it_is_reused(db, cls):
    persistence = cls(db)
    app, errors = await started_bot(persistence)
    try:
        assert await save(app, u1={"visits": 1}) == []
        await persistence.flush()  # closed; the next call reopens the file
        another_program_sets(db, 1, {"visits": 1, "note": "while closed"})
        caught = await save(app, u1={"visits": 2})
        assert errors == []
        assert_noticed(cls, db, caught, 1, {"visits": 2, "note": "while closed"})
    finally:
        await app.shutdown()


# ---- 1d. (after 285ac7a) a flush(), a table rebuilt, a reuse that reloads only some data ---------------
# Broke 285ac7a, fixed by 8243932: sqlite.py _load_table set _schema_version to the schema of any
# first load after flush(), though row versions of tables it did not reload (user_data here) dated
# from before a rebuild: a change that kept its version was overwritten without warning


async def test_a_reused_instance_that_reloads_only_bot_data_still_notices_a_rebuilt_table(db):
    persistence = SQLitePersistence(db)  # a script, not a bot: it uses the class directly
    await persistence.update_user_data(2, {"visits": 1})
    await persistence.flush()
    another_program_rebuilds_user_data_and_sets(db, 2, {"visits": 1, "note": "from the panel"})
    await persistence.get_bot_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await persistence.update_user_data(2, {"visits": 2})
    await persistence.flush()
    assert_noticed(SQLitePersistence, db, caught, 2, {}, "schema")
