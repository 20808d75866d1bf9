"""SharedSQLitePersistence: SQLitePersistence for a file other programs write while the bot runs.

An admin tool, a web panel or a script may change a user's or chat's data (or bot data) in the
bot's file at any moment. ``SQLitePersistence`` alone would overwrite such a change at its next
save of that row (with a warning); this class merges it instead. Copy this file next to
``sqlite.py`` (and change the import below to where you put that file)::

    from shared_persistence import SharedSQLitePersistence

    app = ApplicationBuilder().token(TOKEN).persistence(SharedSQLitePersistence("bot.sqlite3")).build()

The file format is the same: a file can switch between the two classes without migration.

The merge rule
--------------
Rows merge top-level key by top-level key, against the row as this instance last read or wrote it
(the *base*):

* ``refresh_*`` (called by PTB when a handler matches an update, for its chat, user and bot data)
  gives the live data the keys another program changed since the base and the bot did not - all of
  them when the bot has no unsaved change, and never one the bot changed;
* a save does the same inside its transaction, so another program's write that lands just before it
  is kept too, and reaches the bot's live data at the next refresh;
* a top-level key that *both* changed keeps the bot's value.

This keeps each row's base (its stored form, compressed) in memory: ~0.1x the data's memory.

The storage-independent half - :func:`merge` (what changed, who wins) and :class:`MergeBook` (the
bookkeeping) - knows nothing about SQLite: ``postgres.py`` uses it too.
"""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import zlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import aiosqlite
from telegram.ext import ContextTypes, PersistenceInput

from persistence.sqlite import (
    DELETE,
    KEY_COLUMN,
    LAZY,
    DataNotStorableError,
    SQLitePersistence,
    Write,
    describe_row,
)

MERGED = ("user_data", "chat_data", "bot_data")  # the tables PTB refreshes
Row = tuple[Any, Any]  # (version, stored form) of a row as this instance last read or wrote it


# ------------------------------------------------------------------------------------------------
# the merge: storage-independent
# ------------------------------------------------------------------------------------------------
def same(a: Any, b: Any) -> bool:
    """``a == b`` with the same types all the way down: a change from 1 to 1.0 or True is one,
    and a NaN (or, in pickle mode, an object without value equality) left alone is no change."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is float and a != a:  # NaN: equal to another NaN here
        return bool(b != b)
    if bool(a == b):
        return True
    if type(a).__eq__ is object.__eq__:  # type: ignore[comparison-overlap]  # pickle mode: no ==
        try:
            return pickle.dumps(a) == pickle.dumps(b)
        except Exception:  # cannot tell: count it as a change
            return False
    return False


def merge(ours: dict[Any, Any], theirs: dict[Any, Any], base: dict[Any, Any]) -> dict[Any, Any]:
    """Three-way merge of one row, top-level key by top-level key: what to take from ``theirs``.

    ``base`` is the row as this instance last read or wrote it, ``theirs`` what another program
    has written since (``{}`` if it deleted the row), ``ours`` this instance's version. Returns the
    keys only they changed, with their new values (:data:`DELETE` for a removed key). Every other
    key keeps ours: when both sides changed a key, ours wins."""
    return {name: value for name, value in their_changes(theirs, base).items()
            if same(ours.get(name, DELETE), base.get(name, DELETE))}


def their_changes(theirs: dict[Any, Any], base: dict[Any, Any]) -> dict[Any, Any]:
    """The top-level keys another program changed (the costly half of :func:`merge`: it reads
    only the two decoded rows, so it may run in a worker thread)."""
    changed = {}
    for name in theirs.keys() | base.keys():
        now = theirs.get(name, DELETE)
        if not same(now, base.get(name, DELETE)):
            changed[name] = now
    return changed


@dataclass
class Taken:
    """A top-level key taken from another program: its new value, the bot's values it replaces,
    and PTB's live dict once that has it (``None``: only a saved row has it yet)."""

    name: Hashable
    value: Any
    replaces: tuple[Any, ...]  # what the bot had, then what earlier changes of this key replaced
    live: dict[Any, Any] | None

    def apply_to(self, data: dict[Any, Any]) -> None:
        """Give ``data`` the other program's value, unless the bot has changed the key since."""
        if any(same(data.get(self.name, DELETE), old) for old in self.replaces):
            put(data, self.name, self.value)


def put(data: dict[Any, Any], name: Hashable, value: Any) -> None:
    """``data[name] = value``, or remove ``name`` when ``value`` is :data:`DELETE`."""
    if value is DELETE:
        data.pop(name, None)
    else:
        data[name] = value


class MergeBook:
    """The bookkeeping of the merge, for any storage. Rows are named ``(table, key)``.

    For each row: its base (``(version, stored form)`` as this instance last read or wrote it), and
    the other programs' changes merged into one side - PTB's live data (by a refresh) or a row being
    saved - that the other side has not got yet. Usage, for one row ``("bot_data", 0)``::

        book = MergeBook()
        book.seen("bot_data", 0, version, stored)          # loaded at start-up
        # refresh: before a handler
        book.catch_up("bot_data", 0, live)
        base = book.base("bot_data", 0)                    # read the row if its version differs
        book.merge_into_live("bot_data", 0, live, theirs, decoded_base, (new_version, stored))
        # save: inside the write transaction
        value, handed = book.hand_over("bot_data", 0, value)
        taken = merge(value, theirs, decoded_base)         # if the stored version differs
        # ... write value with their keys (taken) too; then, after COMMIT:
        book.took_into_save("bot_data", 0, value, taken)
        book.saved("bot_data", 0, (new_version, stored_value), handed)
    """

    def __init__(self) -> None:
        self._base: dict[tuple[str, Any], Row] = {}
        self._taken: dict[tuple[str, Any], dict[Hashable, Taken]] = {}

    def seen(self, table: str, key: Any, version: Any, stored: Any) -> None:
        """The row was read (at start-up): it is the base of the next merges."""
        self._base[table, key] = (version, stored)

    def base(self, table: str, key: Any) -> Row | None:
        """``(version, stored form)`` of the row as last read or written, or ``None``. The same
        object until the row is read or written again (compare with ``is`` after an ``await``)."""
        return self._base.get((table, key))

    def forget(self, table: str, key: Any) -> None:
        """The row was deleted by this instance."""
        self._base.pop((table, key), None)
        self._taken.pop((table, key), None)

    def forget_table(self, table: str) -> None:
        """Before the table is loaded again (a restart on the same instance): all of it is stale."""
        for row in [row for row in [*self._base, *self._taken] if row[0] == table]:
            self.forget(*row)

    # ---- refresh ----------------------------------------------------------------------------------
    def catch_up(self, table: str, key: Any, live: dict[Any, Any]) -> None:
        """Give ``live`` what a save merged into the stored row since the last refresh."""
        for change in self._taken.get((table, key), {}).values():
            if change.live is None:
                change.apply_to(live)
                change.live = live

    def merge_into_live(self, table: str, key: Any, live: dict[Any, Any], theirs: Any,
                        base: Any, row: Row | None, changes: dict[Any, Any] | None = None) -> None:
        """A refresh read ``row`` (``None``: the row is gone), decoded as ``theirs`` (``{}`` if
        gone), with ``base`` the decoded base: take their changes into ``live``, in place.
        ``changes``: :func:`their_changes` of the two, if already computed (in a worker thread)."""
        if not (isinstance(theirs, dict) and isinstance(base, dict)):
            return  # no keys to merge: the base stays, so the next save of the row warns
        if changes is None:
            changes = their_changes(theirs, base)
        for name, value in changes.items():
            if same(live.get(name, DELETE), base.get(name, DELETE)):
                self._take(table, key, name, value, live, live)
        if row is None:
            self._base.pop((table, key), None)
        else:
            self._base[table, key] = row

    # ---- save -------------------------------------------------------------------------------------
    def hand_over(self, table: str, key: Any, value: Any) -> tuple[Any, list[Taken]]:
        """Before a save: put the changes a refresh merged into live data into ``value`` too (PTB
        may have copied the data for this save before that refresh). Returns the value to write
        (a new dict if it changed, else ``value``) and the changes both sides have once saved."""
        taken = self._taken.get((table, key))
        if not taken or not isinstance(value, dict):
            return value, []
        new = copy.copy(value)  # (of the value's own class: a dict subclass stays one)
        handed = []
        for change in taken.values():
            if change.live is None:  # only a saved row has it: give it unless the bot changed it
                change.apply_to(new)
                continue
            handed.append(change)
            if same(change.live.get(change.name, DELETE), change.value):  # kept since the refresh
                put(new, change.name, change.value)
        return (value if same(new, value) else new), handed

    def took_into_save(self, table: str, key: Any, value: dict[Any, Any],
                       taken: dict[Any, Any]) -> None:
        """A save wrote ``value`` with ``taken`` (from :func:`merge`) and was committed: ``value``
        takes them, in place, and PTB's live data gets them at the next refresh. (Not before
        COMMIT: a failed round's retry must merge again, with the base the row still has.)"""
        for name, new in taken.items():
            self._take(table, key, name, new, value, None)

    def saved(self, table: str, key: Any, row: Row, handed: Iterable[Taken]) -> None:
        """After COMMIT: ``row`` is the base now, and the ``handed`` changes are on both sides."""
        self._base[table, key] = row
        pending = self._taken.get((table, key), {})
        for change in handed:
            if pending.get(change.name) is change:
                del pending[change.name]

    def _take(self, table: str, key: Any, name: Hashable, value: Any, data: dict[Any, Any],
              live: dict[Any, Any] | None) -> None:
        """Give ``data`` another program's ``value`` for ``name`` and remember it. Live data may
        still hold what an earlier pending change of ``name`` replaced."""
        pending = self._taken.setdefault((table, key), {})
        previous = pending.get(name)
        replaces = (data.get(name, DELETE), *(previous.replaces if previous else ()))
        pending[name] = Taken(name, value, replaces, live)
        put(data, name, value)


# ------------------------------------------------------------------------------------------------
# the persistence
# ------------------------------------------------------------------------------------------------
class SharedSQLitePersistence(SQLitePersistence):
    """A :class:`SQLitePersistence` for a file that other programs write while the bot runs:
    refreshes and saves merge their changes (see the module docstring for the rule).

    Args: the same as :class:`SQLitePersistence`, ``lazy`` included: with ``lazy=True`` an
    id's first refresh merges its whole stored row into the live data (its base is ``{}``).
    """

    def __init__(
        self,
        filepath: str | os.PathLike[str] = "bot.sqlite3",
        *,
        store_data: PersistenceInput | None = None,
        update_interval: float = 60,
        serializer: Literal["json", "pickle"] = "json",
        busy_timeout: float = 5.0,
        context_types: ContextTypes[Any, Any, Any, Any] | None = None,
        lazy: bool = False,
    ) -> None:
        super().__init__(filepath, store_data=store_data, update_interval=update_interval,
                         serializer=serializer, busy_timeout=busy_timeout,
                         context_types=context_types, lazy=lazy)
        self._book = MergeBook()
        self._handed: dict[Write, list[Taken]] = {}  # per write of the save round being written
        self._took: dict[Write, dict[Any, Any]] = {}  # per write: keys its merge took from the row
        self._packed: dict[Write, tuple[Any, bytes]] = {}  # (stored form, packed) per write

    # ---- what this instance knows of each row --------------------------------------------------------
    # The base of each row's merges is kept compressed (zlib): a fraction of the data's memory.
    @staticmethod
    def _pack(table: str, stored: str | bytes) -> bytes | None:
        if table not in MERGED:
            return None  # callback_data is not merged: its version is enough
        return zlib.compress(stored.encode() if isinstance(stored, str) else stored, 1)

    def _prepare(self, batch: list[Write]) -> list[tuple[Write, DataNotStorableError]]:
        failed = super()._prepare(batch)  # (in a worker thread: packing there too)
        refused = {write for write, _ in failed}
        for write in batch:
            if write.table in MERGED and write.value is not DELETE and write not in refused:
                self._packed[write] = (write.params[1], self._pack(write.table, write.params[1]) or b"")
        return failed

    def _forget_table(self, table: str) -> None:
        super()._forget_table(table)
        self._book.forget_table(table)

    def _remember(self, table: str, key: Any, version: int, data: Any) -> None:
        self._book.seen(table, key, version, self._pack(table, data))

    def _known_version(self, table: str, key: Any) -> int | None:
        row = self._book.base(table, key)
        return None if row is None else int(row[0])

    def _committed(self, batch: list[Write]) -> None:
        for write in batch:
            if write.table not in KEY_COLUMN:
                continue
            if write.value is DELETE:
                self._book.forget(write.table, write.key)
            else:
                stored, packed = self._packed.pop(write, (None, None))
                if stored is not write.params[1]:  # encoded again by a merge (rare), or not merged
                    packed = self._pack(write.table, write.params[1])
                taken = self._took.pop(write, None)
                if taken:
                    self._book.took_into_save(write.table, write.key, write.value, taken)
                self._book.saved(write.table, write.key, (write.params[2], packed),
                                 self._handed.pop(write, []))

    # ---- refresh ------------------------------------------------------------------------------------
    async def _refresh(self, table: str, key: int, live: dict[Any, Any]) -> None:
        """Bring ``live`` (the dict a handler is about to use) up to date with the file, in place."""
        if self.lazy and table in LAZY:
            self._live_ids[table].add(key)  # (reloaded if the Application starts again)
        self._book.catch_up(table, key, live)
        before = self._book.base(table, key)
        db = await self._connection()
        async with self._busy:  # no statement stays open between two calls
            rows = await db.execute_fetchall(
                f"SELECT version, CASE WHEN version IS ? THEN NULL ELSE data END FROM {table}"
                f" WHERE {KEY_COLUMN[table]} = ?", (before[0] if before else None, key))
        row = next(iter(rows), None)
        if (row is not None and row[1] is None) or (row is None and before is None):
            return  # unchanged, or nothing stored and nothing known
        what = describe_row(table, key)
        theirs, base, changes, packed = await asyncio.to_thread(
            self._decode_and_compare, table, row, before, what)
        if self._book.base(table, key) is not before:
            return  # a save wrote this row meanwhile: what was read is not news
        self._last_saved.pop(table, None)  # (bot_data: the stored row is not what this instance saved)
        seen = None if row is None else (row[0], packed)
        self._book.merge_into_live(table, key, live, theirs, base, seen, changes)
        if before is None and self.lazy and table in LAZY and changes:  # a first load
            self._gave(table, key, live, {name: value for name, value in changes.items()
                                          if live.get(name, DELETE) is value})

    def _decode_and_compare(self, table: str, row: Any, base: Row | None,
                            what: str) -> tuple[Any, Any, Any, bytes | None]:
        """In a worker thread: both rows decoded, the keys the other program changed, and the
        row packed as the next base."""
        theirs, decoded_base = self._decode_both(row, base, what)
        packed = None if row is None else self._pack(table, row[1])
        if isinstance(theirs, dict) and isinstance(decoded_base, dict):
            return theirs, decoded_base, their_changes(theirs, decoded_base), packed
        return theirs, decoded_base, None, packed

    def _decode_both(self, row: Any, base: Row | None, what: str) -> tuple[Any, Any]:
        """The stored row (``{}`` if gone) and the base (``{}`` if none), decoded."""
        theirs = {} if row is None else self.decode(row[1], what)
        if base is None or base[1] is None:
            return theirs, {}
        return theirs, self.decode(zlib.decompress(base[1]), what)

    async def refresh_user_data(self, user_id: int, user_data: Any) -> None:
        """Before a handler: merge another program's change to this user, if any."""
        await self._refresh("user_data", user_id, user_data)

    async def refresh_chat_data(self, chat_id: int, chat_data: Any) -> None:
        """Before a handler: merge another program's change to this chat, if any."""
        await self._refresh("chat_data", chat_id, chat_data)

    async def refresh_bot_data(self, bot_data: Any) -> None:
        """Before a handler: merge another program's change to bot data, if any."""
        await self._refresh("bot_data", 0, bot_data)

    # ---- save ---------------------------------------------------------------------------------------
    async def _keep_stored_keys(self, db: aiosqlite.Connection, batch: list[Write]) -> None:
        """lazy=True needs nothing more here: the merge of :meth:`_other_writers` keeps the stored
        keys of an id PTB has not loaded (its base is ``{}``), and a refresh loads an id."""

    async def _other_writers(self, db: aiosqlite.Connection, batch: list[Write], every_row: bool) -> None:
        """Inside the save's transaction: keep what refreshes merged into live data, and merge
        another program's changes to the rows being written into them."""
        self._handed, self._took = {}, {}
        stale = []  # writes whose value changed since it was encoded: encoded again at the end
        for write in batch:  # one instant, no await: what refreshes merged in so far
            if write.table in MERGED and write.value is not DELETE:
                value, self._handed[write] = self._book.hand_over(write.table, write.key, write.value)
                if value is not write.value:
                    write.value = value
                    stale.append(write)
        bases = {write: self._book.base(write.table, write.key) for write in batch}
        for table, changed in await self._changed_rows(db, batch, True, every_row):
            writes = {w.key: w for w in batch if w.table == table and w.value is not DELETE}
            for key, data in changed:
                write = writes[key]
                if table not in MERGED or not isinstance(write.value, dict):
                    self._warn_overwrite(table, key)
                    continue
                try:
                    taken = await asyncio.to_thread(self._merge_into_save, write, data, bases[write])
                except Exception as exc:  # an unreadable row fails alone: the others are written
                    self._fail(write, exc)
                    batch.remove(write)
                    continue
                if taken is None:  # their row is no dict: nothing to merge into
                    self._warn_overwrite(table, key)
                elif taken:  # written with their keys; noted once committed (_committed)
                    self._took[write] = taken
                    stale.append(write)
        for write in dict.fromkeys(stale):  # (once each, in order)
            if write in batch:  # (a write whose merge failed has left it)
                await asyncio.to_thread(self._encode_again, write)

    def _encode_again(self, write: Write) -> None:
        """In a worker thread (a row may be large): ``write``'s value with the keys taken from
        another program encoded, and packed. ``write.value`` itself stays as it was: if the round
        fails, its retry merges again with whatever the row holds then."""
        value = write.value
        if write in self._took:
            value = copy.copy(value)  # (of the value's own class)
            for name, new in self._took[write].items():
                put(value, name, new)
        stored = self.encode(value, write.what)
        self._packed[write] = (stored, self._pack(write.table, stored) or b"")
        write.params = (write.key, stored, write.params[2])

    def _merge_into_save(self, write: Write, data: Any, base: Row | None) -> dict[Any, Any] | None:
        """In a worker thread: the keys to take from another program's row (``data``); ``None``
        if that row is not a dict (then the save overwrites it, with a warning)."""
        theirs, decoded_base = self._decode_both(None if data is None else (None, data), base, write.what)
        if not isinstance(theirs, dict):
            return None
        return merge(write.value, theirs, decoded_base if isinstance(decoded_base, dict) else {})

