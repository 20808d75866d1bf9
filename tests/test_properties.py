"""Checked by Hypothesis, not only by examples: the exact JSON codec, the merge rule, and
``SharedSQLitePersistence`` under a real Application interleaved with another program's SQL.

The codec: any value of the supported types comes back exactly - types, order of keys, ``-0.0``,
NaN, huge ints, strings that look like tags, lone surrogates, colliding keys (``1``/``1.0``/``True``
are one key in Python; the first kept is the one stored). Anything that is not such JSON fails
with ``DatabaseFileError``, never with another exception.

The stateful test keeps a model of the documented rule (README, ``persistence/shared.py``): per
top-level key, a refresh gives the bot's live data what another program changed and the bot did
not; a save keeps another program's changes to keys the bot did not change; when both changed a
key, the bot's value wins; nothing either side wrote is otherwise lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from telegram.ext import MessageHandler, PersistenceInput, filters

from bots.offline import OfflineBotAPI, User, application_builder, message_update
from persistence import sqlite as sqlite_module
from persistence.shared import DELETE, SharedSQLitePersistence, merge, put
from persistence.sqlite import DatabaseFileError, DataNotStorableError, decode_json, encode_json

# ---- the codec --------------------------------------------------------------------------------------
TAGGY = st.sampled_from(["$tuple", "$map", "$float", "$chars", "$", "$$", "inf", "nan", '"$map"'])
TEXT = st.text(st.characters(exclude_categories=()), max_size=12) | TAGGY  # surrogates included
SCALARS = (st.none() | st.booleans() | TEXT
           | st.integers(min_value=-(10**60), max_value=10**60) | st.sampled_from([2**63, -(2**63) - 1])
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 0.0, 1.0]))
KEYS = (st.none() | st.booleans() | TEXT | st.integers(-5, 5) | st.sampled_from([1, 1.0, True, "1", -0.0])
        | st.tuples(st.integers(-3, 3), TEXT))
VALUES = st.recursive(
    SCALARS,
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                   | st.dictionaries(KEYS, inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=25)


def exact(a: Any, b: Any) -> bool:
    """Identical: types all the way down, dict key order, -0.0 vs 0.0, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return repr(a) == repr(b) if math.isnan(a) or a == 0 else a == b
    if type(a) is dict:
        return len(a) == len(b) and all(exact(ka, kb) and exact(va, vb)
                                        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(exact, a, b))
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_every_supported_value_round_trips_exactly(value):
    text = encode_json(value, "the value")
    text.encode()  # what SQLite stores: valid UTF-8
    assert exact(decode_json(text, "the value"), value)


@contextlib.contextmanager
def every_value_big():
    """Values of any size take the path of large ones: json's pure-Python encoder and scanner."""
    saved = sqlite_module._BIG_ITEMS, sqlite_module._BIG_TEXT
    sqlite_module._BIG_ITEMS = sqlite_module._BIG_TEXT = 0
    try:
        yield
    finally:
        sqlite_module._BIG_ITEMS, sqlite_module._BIG_TEXT = saved


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_large_values_take_the_python_walk_and_store_the_very_same_text(value):
    text = encode_json(value, "the value")
    with every_value_big():
        assert encode_json(value, "the value") == text
        assert exact(decode_json(text, "the value"), value)
        assert exact(decode_json(text.encode(), "the value"), value)


def test_a_value_above_the_thresholds_round_trips_and_a_late_lone_surrogate_is_tagged():
    value = {"rows": [{"n": n, "text": f"note {n} \u00e9 " + "x" * 60} for n in range(30_000)]}
    assert sqlite_module._plain_size(value) > sqlite_module._BIG_ITEMS
    text = encode_json(value, "the value")
    assert len(text) > sqlite_module._BIG_TEXT and exact(decode_json(text, "the value"), value)
    for row in (15_000, -1):  # in a middle one, and in the last, of many 4,096-chunk pieces
        value["rows"][row]["text"] = "half a pair: \ud83d"
        text = encode_json(value, "the value")
        assert '"$chars"' in text and exact(decode_json(text, "the value"), value)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=())) | st.binary().map(lambda b: b.decode("latin-1"))
       | st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5) | TAGGY,
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5) | TAGGY, inner, max_size=3)).map(json.dumps))
def test_anything_else_is_read_as_json_or_refused_as_a_database_file_error(text):
    try:
        decode_json(text, "row 1")
    except DatabaseFileError as exc:
        assert "row 1" in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(" \t\n\r{}[]\"':,.-+eE0123456789truefalsn$\\", max_size=30)
       | st.tuples(st.sampled_from(["", " ", "\n\t"]), st.recursive(
           st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
       ).map(json.dumps), st.sampled_from(["", " ", "\n", " x", "}"])).map("".join))
def test_json_without_tags_reads_as_json_loads_reads_it(text):
    """decode_json's faster path (raw_decode) accepts and refuses exactly what json.loads does."""
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(DatabaseFileError):
            decode_json(text, "row 1")
        return
    if '"$' not in text:
        assert exact(decode_json(text, "row 1"), expected) or expected != expected
        assert exact(decode_json(text.encode(), "row 1"), expected) or expected != expected


@given(st.sampled_from([{1, 2}, b"bytes", frozenset(), object(), range(3), 1j]), TEXT)
def test_unsupported_values_are_refused_by_name(bad, key):
    with pytest.raises(DataNotStorableError, match="the value"):
        encode_json({key: [bad]}, "the value")


# ---- the merge rule -----------------------------------------------------------------------------------
ROW = st.dictionaries(st.sampled_from("abcd"), st.integers(0, 2) | st.just(float("nan")), max_size=4)


@settings(max_examples=500)
@given(ROW, ROW, ROW)
def test_the_merge_takes_only_what_they_changed_and_we_did_not(ours, theirs, base):
    taken = merge(ours, theirs, base)
    final = dict(ours)
    for name, value in taken.items():
        if value is DELETE:
            final.pop(name, None)
        else:
            final[name] = value
    for name in ours.keys() | theirs.keys() | base.keys():
        mine, their, before = (d.get(name, DELETE) for d in (ours, theirs, base))
        if not exact(mine, before):  # the bot changed it: its value stays, whatever they did
            assert exact(final.get(name, DELETE), mine)
        else:  # the bot did not: the result is theirs (changed or not)
            assert exact(final.get(name, DELETE), their)


# ---- the stateful test: a real Application, refreshes, saves, and another program's SQL -----------
USERS = [User(901, "Ann"), User(902, "Ben")]
NAMES = st.sampled_from(["a", "b", "c"])
NUMBERS = st.integers(0, 3)


async def set_or_delete(update, context) -> None:
    """``set a 1`` sets a key of the user's data, ``del a`` removes it, ``look`` does nothing."""
    words = update.effective_message.text.split()
    if words[0] == "set":
        context.user_data[words[1]] = int(words[2])
    elif words[0] == "del":
        context.user_data.pop(words[1], None)


class BotAndAdmin(RuleBasedStateMachine):
    """The bot on SharedSQLitePersistence and an admin writing ``user_data`` with raw SQL."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.path = Path(self.directory.name) / "bot.sqlite3"
        self.loop = asyncio.new_event_loop()
        self.api = OfflineBotAPI()
        only_users = PersistenceInput(bot_data=False, chat_data=False, callback_data=False)
        self.app = application_builder(
            request=self.api, persistence=SharedSQLitePersistence(self.path, store_data=only_users)).build()
        self.app.add_handler(MessageHandler(filters.TEXT, set_or_delete))
        self.run(self.app.initialize())
        # the model: the stored row (None: no row), the row as the bot last saw it, the live data
        self.file: dict[int, dict | None] = {user.id: None for user in USERS}
        self.base: dict[int, dict] = {user.id: {} for user in USERS}
        self.live: dict[int, dict] = {user.id: {} for user in USERS}
        self.dirty: set[int] = set()

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self.app.shutdown())
        finally:
            self.loop.close()
            self.directory.cleanup()

    # the model of the documented rule
    def taken(self, user: int, ours: dict) -> dict:
        theirs, base = self.file[user] or {}, self.base[user]
        return {k: theirs.get(k, DELETE) for k in theirs.keys() | base.keys()
                if theirs.get(k, DELETE) != base.get(k, DELETE)
                and ours.get(k, DELETE) == base.get(k, DELETE)}

    def model_refresh(self, user: int) -> None:
        for name, value in self.taken(user, self.live[user]).items():
            put(self.live[user], name, value)
        self.base[user] = dict(self.file[user] or {})

    # the bot
    def send(self, user: User, text: str) -> None:
        self.model_refresh(user.id)
        self.run(self.app.process_update(message_update(self.app, self.api, text, user)))
        self.dirty.add(user.id)

    @rule(user=st.sampled_from(USERS), name=NAMES, number=NUMBERS)
    def bot_sets(self, user, name, number):
        self.send(user, f"set {name} {number}")
        self.live[user.id][name] = number

    @rule(user=st.sampled_from(USERS), name=NAMES)
    def bot_deletes(self, user, name):
        self.send(user, f"del {name}")
        self.live[user.id].pop(name, None)

    @rule(user=st.sampled_from(USERS))
    def bot_refreshes(self, user):
        self.send(user, "look")
        assert self.app.user_data[user.id] == self.live[user.id]

    @rule()
    def bot_saves(self):
        self.run(self.app.update_persistence())
        for user in self.dirty:
            saved = dict(self.live[user])
            for name, value in self.taken(user, saved).items():
                put(saved, name, value)
                put(self.live[user], name, value)  # reaches live data at the next refresh
            self.file[user], self.base[user] = saved, dict(saved)
        self.dirty.clear()

    # the other program
    def sql(self, statement: str, *params: Any) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute(statement, params)
        conn.close()

    @rule(user=st.sampled_from(USERS), name=NAMES, number=NUMBERS)
    def admin_sets(self, user, name, number):
        if self.file[user.id] is None:
            self.sql("INSERT INTO user_data (user_id, data) VALUES (?, json_object(?, ?))",
                     user.id, name, number)
            self.file[user.id] = {}
        else:
            self.sql("UPDATE user_data SET data = json_set(data, '$.' || ?, ?) WHERE user_id = ?",
                     name, number, user.id)
        self.file[user.id][name] = number

    @precondition(lambda self: any(row for row in self.file.values()))
    @rule(data=st.data())
    def admin_removes_a_key(self, data):
        user = data.draw(st.sampled_from([u for u, row in self.file.items() if row]))
        name = data.draw(st.sampled_from(sorted(self.file[user])))
        self.sql("UPDATE user_data SET data = json_remove(data, '$.' || ?) WHERE user_id = ?", name, user)
        del self.file[user][name]

    @precondition(lambda self: any(row is not None for row in self.file.values()))
    @rule(data=st.data())
    def admin_deletes_a_row(self, data):
        user = data.draw(st.sampled_from([u for u, row in self.file.items() if row is not None]))
        self.sql("DELETE FROM user_data WHERE user_id = ?", user)
        self.file[user] = None

    @invariant()
    def the_file_holds_what_the_model_says(self):
        with sqlite3.connect(self.path) as conn:
            stored = dict(conn.execute("SELECT user_id, data FROM user_data").fetchall())
        conn.close()
        assert {user: decode_json(data, "row") for user, data in stored.items()} == {
            user: row for user, row in self.file.items() if row is not None}


TestBotAndAdmin = BotAndAdmin.TestCase
TestBotAndAdmin.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])
