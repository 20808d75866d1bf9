"""Move a bot's data from one persistence to another: ``python -m persistence.migrate SOURCE TARGET``.

A bot that has run on ``PicklePersistence`` has real users; switching it to ``SQLitePersistence``
is one line, but that line starts on an empty database. This tool brings everything along::

    python -m persistence.migrate stage1.pickle stage3.sqlite3          # Pickle -> SQLite
    python -m persistence.migrate stage3.sqlite3 export.json            # SQLite -> JSON export
    python -m persistence.migrate export.json restored.sqlite3          # JSON export -> SQLite
    python -m persistence.migrate stage1.pickle bot.sqlite3 --serializer pickle --dry-run

Stop the bot first: the tool reads the source once and writes the target once. It needs room for
a second copy of the target next to it while it runs (``.NAME.migrate-PID``; a copy left by a
killed run is removed by the next run).

Where the data is, told by its form
-----------------------------------
``*.pickle`` / ``*.pkl``
    A ``PicklePersistence`` file (``single_file=True``, PTB's default), written by PTB 20, 21 or 22.
``PREFIX`` with ``--pickle-prefix``
    ``PicklePersistence(filepath=PREFIX, single_file=False)``: the files ``PREFIX_user_data``,
    ``PREFIX_chat_data``, ``PREFIX_bot_data``, ``PREFIX_callback_data``, ``PREFIX_conversations``.
    A source given without the option is recognised by those files.
``*.sqlite3`` / ``*.sqlite`` / ``*.db``
    A ``SQLitePersistence`` file (``persistence/sqlite.py``). A new target is made with
    ``--serializer json`` (the default: readable rows, exact for dict/list/tuple/str/int/float/bool/
    None) or ``--serializer pickle`` (any picklable value, e.g. ``datetime`` or Telegram objects).
``*.json``
    A JSON export: one object whose keys are ``DictPersistence``'s argument names
    (``user_data_json``, ``chat_data_json``, ``bot_data_json``, ``conversations_json``,
    ``callback_data_json``), each holding that kind of data in the shape ``DictPersistence`` reads,
    so ``DictPersistence(**{key: json.dumps(value) for key, value in export.items()})`` loads it.
    Each stored value (a user's data, a chat's data, bot data, a conversation state, a button's
    data) is written with ``SQLitePersistence``'s exact JSON codec: plain JSON where plain JSON says
    what it is, tagged (``{"$tuple": [...]}``, ``{"$map": [[key, value], ...]}``) where it cannot,
    so importing an export gives back exactly what was exported.
``postgresql://...``
    A ``PostgresPersistence`` database (``persistence/postgres.py``, stage 9), in the schema given by
    ``--schema`` (default ``public``); ``--serializer`` as for SQLite. Needs ``asyncpg``.

What it guarantees
------------------
* **Everything, exactly**: user, chat and bot data, callback data and every conversation (all
  names found in the source), with their types wherever the target can hold them. Ended
  conversations (state ``None``, which ``PicklePersistence`` keeps) are left out: PTB treats them
  as absent.
* **All or nothing**: a file target is written as a new file next to it (through its persistence
  class: SQLite rows are encoded by ``SQLitePersistence`` itself), and moved into place only when
  every value is in it; a PostgreSQL target is written in one transaction once every value has
  passed the encoder ``PostgresPersistence`` uses. If some values cannot be stored (a
  ``datetime`` in a JSON target), one message lists where they are (the first ten and how many)
  and the target is not touched; nor is it by a full disk or a crash. ``--dry-run`` checks
  every value without writing anything.
* **Nothing overwritten by accident**: a target that already holds data is refused unless
  ``--replace`` is given; then it is replaced at once (the new file is renamed over it; in
  PostgreSQL, the same transaction deletes what the schema held). A SQLite target that another
  program has open (the bot still running) is refused, and so is a second migration into the
  same target while one runs.
* **Checked**: after writing, the target is read back through its persistence class and compared
  with the source, value by value; the tool then prints how much of each kind it moved.

Options: ``--serializer json|pickle`` (SQLite and PostgreSQL targets), ``--dry-run`` (read and
check, write nothing), ``--replace``, ``--pickle-prefix``, ``--schema``. A progress bar
(``tqdm``) shows on a terminal.

What it relies on
-----------------
Only public methods of the persistence classes (``get_*`` to read, ``update_*``/``drop_*`` to
write), with two documented exceptions: PTB's ``PicklePersistence`` keeps what it loaded in its
attributes ``user_data``, ``chat_data``, ``bot_data``, ``callback_data`` and ``conversations``
(present, unchanged, in PTB 20 to 22); the tool reads them to find every conversation name and to
skip the deep copy each ``get_*`` makes (seconds for a big file). From a single file it loads
everything with ``get_bot_data()``, from several files with each ``get_*``. A SQLite source's conversation
names come from its ``conversations`` table (the schema documented in ``persistence/sqlite.py``;
likewise for PostgreSQL, whose ``ptb_settings`` table also tells whether a schema holds a bot's
data at all - read on a connection of the tool's own, so that reading creates nothing).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import fcntl
import gc
import glob
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from telegram import TelegramObject
from telegram.ext import DictPersistence, ExtBot, PicklePersistence
from tqdm import tqdm  # type: ignore[import-untyped]

from persistence.sqlite import (
    DatabaseFileError,
    DataNotStorableError,
    SaveFailedError,
    SQLitePersistence,
    decode_json,
    encode_json,
)

KINDS = ("user_data", "chat_data", "bot_data", "callback_data", "conversations")
PICKLE_SUFFIXES = (".pickle", ".pkl")
SQLITE_SUFFIXES = (".sqlite3", ".sqlite", ".db")
SHOWN_PROBLEMS = 10  # how many values a refusal lists


class MigrationError(Exception):
    """Something the user can fix. The message names it and the fix; the target was not changed."""


class NotStorable(Exception):
    """Raised by :meth:`Store.write` (target untouched): the values it cannot hold, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} values cannot be stored")
        self.problems = problems


# ================================================================================================
# What is moved: everything Application.initialize() would load
# ================================================================================================
@dataclass
class BotData:
    """All of a bot's persisted data, as a persistence's ``get_*`` methods return it."""

    user_data: dict[int, Any] = field(default_factory=dict)
    chat_data: dict[int, Any] = field(default_factory=dict)
    bot_data: Any = field(default_factory=dict)
    callback_data: Any = None  # None or (list of (keyboard uuid, time, {button uuid: data}), dict)
    conversations: dict[str, dict[tuple[int | str, ...], object]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.user_data or self.chat_data or self.bot_data or self.callback_data
                    or any(self.conversations.values()))

    def counts(self) -> dict[str, str]:
        """How much of each kind, in words."""
        keyboards = len(self.callback_data[0]) if self.callback_data else 0
        states = sum(len(states) for states in self.conversations.values())
        names = ", ".join(sorted(self.conversations))
        return {
            "user_data": _plural(len(self.user_data), "user"),
            "chat_data": _plural(len(self.chat_data), "chat"),
            "bot_data": _plural(len(self.bot_data) if isinstance(self.bot_data, dict) else 1, "key"),
            "callback_data": _plural(keyboards, "keyboard"),
            "conversations": f"{_plural(states, 'state')} in {_plural(len(self.conversations), 'name')}"
                             + (f" ({names})" if names else ""),
        }

    def values(self) -> Iterator[tuple[str, Any]]:
        """Every value a persistence stores on its own (a row), with the name errors give it."""
        for user_id, data in self.user_data.items():
            yield f"user_data of user {user_id}", data
        for chat_id, data in self.chat_data.items():
            yield f"chat_data of chat {chat_id}", data
        yield "bot_data", self.bot_data
        if self.callback_data is not None:
            yield "callback_data", self.callback_data
        for name, states in self.conversations.items():
            for key, state in states.items():
                yield f"conversation {name!r} key {list(key)}", state

    def size(self) -> int:
        return (len(self.user_data) + len(self.chat_data) + 1 + (self.callback_data is not None)
                + sum(len(states) for states in self.conversations.values()))


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


# ================================================================================================
# The exact JSON codec of persistence/sqlite.py (reused, never copied)
# ================================================================================================
def short_problem(error: DataNotStorableError) -> str:
    """The codec's error without its advice (a refusal lists up to ten and gives the advice once):
    ``user_data of user 1: ['seen'] is datetime.datetime``."""
    text = str(error).removeprefix("Cannot store ").split(". JSON mode stores")[0]
    text = text.replace(" as JSON: ", ": ", 1).replace(" with pickle: ", ": ", 1)
    typed = re.match(r"(.*? is [\w.]+) \(", text)  # "... is datetime.datetime (datetime.da...)"
    return typed.group(1) if typed else text


def from_plain(data: Any, what: str) -> Any:
    """A value of a JSON export (plain JSON data, tagged where plain JSON cannot say what it is)
    as it was exported."""
    return decode_json(json.dumps(data), what)


# ================================================================================================
# Where data is kept
# ================================================================================================
def stand_in_bot() -> ExtBot[None]:
    """A stand-in for the bot, shared by source and target: Telegram objects that belonged to the
    bot in the source belong to whatever bot loads the target (never used to send anything)."""
    return ExtBot("0:persistence-migrate")


class Store(abc.ABC):
    """One place a bot's data can be kept: read all of it, or replace all of it at once."""

    def __init__(self, location: str) -> None:
        self.location = location

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether there is anything at the location (a file, a table...)."""

    @abc.abstractmethod
    async def read(self, bot: ExtBot[None]) -> BotData:
        """Everything stored."""

    @abc.abstractmethod
    def problem(self, what: str, value: Any) -> str | None:
        """Why this store cannot hold ``value``, named ``what``, and where in it the culprit sits;
        ``None`` when it can."""

    advice = ""  # how to store values that :meth:`problem` refuses

    @abc.abstractmethod
    async def write(self, data: BotData, bot: ExtBot[None]) -> None:
        """Make the store hold exactly ``data``, instead of what it held: all at once or not at all."""

    def __str__(self) -> str:
        return self.location

    @contextlib.asynccontextmanager
    async def only_migration(self) -> AsyncIterator[None]:
        """Held from reading what the target holds until it is replaced: a second migration into
        the same target at the same time is refused, instead of replacing the first one's result
        without ``--replace``. (A lock file next to a file target, removed when done.)"""
        lock, handle = _lock_next_to(Path(self.location))
        try:
            yield
        finally:
            lock.unlink()  # while still held: a migration starting now locks a new file
            os.close(handle)


def _lock_next_to(path: Path) -> tuple[Path, int]:
    """``.NAME.migrate-lock`` next to ``path``, created and locked (``flock``): the lock file and
    its open descriptor. Refused when another process holds it."""
    lock = path.with_name(f".{path.name}.migrate-lock")
    while True:
        try:
            handle = os.open(lock, os.O_CREAT | os.O_WRONLY, 0o600)
        except OSError as exc:
            raise MigrationError(f"Cannot write next to {path}: {exc.strerror}. It was not changed.") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise MigrationError(f"Another migration into {path} is running. It was not changed. Wait "
                                 "for it to finish.") from None
        if lock.exists() and lock.stat().st_ino == os.fstat(handle).st_ino:
            return lock, handle
        os.close(handle)  # the other migration finished and removed the file meanwhile: again


class PickleStore(Store):
    """``PicklePersistence`` files: one, or one per kind with ``single_file=False``."""

    def __init__(self, location: str, single_file: bool) -> None:
        super().__init__(location)
        self.single_file = single_file

    def files(self, prefix: str | None = None) -> list[Path]:
        prefix = prefix or self.location
        if self.single_file:
            return [Path(prefix)]
        return [Path(f"{prefix}_{kind}") for kind in KINDS]

    def exists(self) -> bool:
        return any(path.exists() for path in self.files())

    async def read(self, bot: ExtBot[None]) -> BotData:
        persistence = PicklePersistence(self.location, single_file=self.single_file)
        persistence.set_bot(bot)
        try:  # what is loaded stays in the attributes read below (see the module docstring)
            await persistence.get_bot_data()  # one file: this loads everything (and copies bot_data)
            if not self.single_file:
                for load in (persistence.get_user_data, persistence.get_chat_data,
                             persistence.get_callback_data):
                    await load()
                await persistence.get_conversations("")
        except TypeError as exc:  # PicklePersistence says "Something went wrong unpickling ..."
            raise MigrationError(self._unreadable(exc)) from exc
        except AttributeError as exc:  # loaded, but not the dicts PicklePersistence writes
            raise MigrationError(f"{self.location} is a pickle, but not of PicklePersistence ({exc}). "
                                 "It was not changed.") from exc
        data = BotData(
            user_data=persistence.user_data or {},
            chat_data=persistence.chat_data or {},
            bot_data=persistence.bot_data if persistence.bot_data is not None else {},
            callback_data=persistence.callback_data or None,
            conversations={name: dict(states) for name, states in (persistence.conversations or {}).items()
                           if states},
        )
        if not (isinstance(data.user_data, dict) and isinstance(data.chat_data, dict)):
            raise MigrationError(f"{self.location} is a pickle, but not of PicklePersistence (its user "
                                 "or chat data is not a dict). It was not changed.")
        return data

    def _unreadable(self, exc: TypeError) -> str:
        cause = exc.__cause__
        if isinstance(cause, ModuleNotFoundError | AttributeError) and "telegram" in str(cause):
            return (f"{self.location} was written by a python-telegram-bot version whose classes this one "
                    f"(PTB 22) does not have ({type(cause).__name__}: {cause}). Files of PTB 13 and "
                    "older cannot be read by PTB 20 or newer (PTB 20 moved its classes). Read it with the "
                    "PTB version that wrote it and save what you need without Telegram objects (plain "
                    "dicts), then migrate that file. It was not changed.")
        return (f"{self.location} cannot be read as a PicklePersistence file ({exc}: {cause}). Is it the "
                "bot's data file? It was not changed.")

    def problem(self, what: str, value: Any) -> str | None:
        return None  # pickle stores any picklable object; write() reports one that is not

    async def write(self, data: BotData, bot: ExtBot[None]) -> None:
        # written into a directory next to the target, then moved into place
        scratch = _scratch_for(Path(self.location))
        scratch.mkdir()
        try:
            prefix = str(scratch / Path(self.location).name)
            persistence = PicklePersistence(prefix, single_file=self.single_file, on_flush=True)
            persistence.set_bot(bot)
            try:
                await asyncio.gather(*_write_calls(persistence, data))
                await persistence.flush()
            except Exception as exc:  # pickle raises many kinds: PicklingError, TypeError, ...
                raise MigrationError(f"Cannot write {self.location} with pickle: {exc}. It was not "
                                     "changed.") from exc
            for made, final in zip(self.files(prefix), self.files(), strict=True):
                if made.exists():
                    os.replace(made, final)
                elif final.exists():  # nothing of this kind: PicklePersistence wrote no file
                    final.unlink()
        finally:
            _remove_scratch(scratch)


class SQLiteStore(Store):
    """A ``SQLitePersistence`` file."""

    advice = "Use --serializer pickle (a SQLite file only Python reads), or convert those values."

    def __init__(self, location: str, serializer: Literal["json", "pickle"] | None) -> None:
        super().__init__(location)
        self.serializer = serializer or self._stored_serializer() or "json"  # of the file it writes
        self._codec = SQLitePersistence(location, serializer=self.serializer)  # encodes, never opens

    def exists(self) -> bool:
        path = Path(self.location)
        return path.exists() and path.stat().st_size > 0

    def _stored_serializer(self) -> Literal["json", "pickle"] | None:
        """The serializer an existing file was made with (its ``settings`` table), if readable."""
        if not self.exists():
            return None
        try:  # (not mode=ro: a read-only connection leaves the WAL files behind when it closes)
            with sqlite3.connect(self.location) as db:
                row = db.execute("SELECT value FROM settings WHERE name = 'serializer'").fetchone()
            db.close()
        except sqlite3.DatabaseError:
            return None  # not ours, or damaged: SQLitePersistence says so with the right message
        return row[0] if row and row[0] in ("json", "pickle") else None

    def _persistence(self, bot: ExtBot[None], path: Path | None = None) -> SQLitePersistence:
        """Over the target's file with the serializer it was made with, or over a new ``path``."""
        serializer = self.serializer if path else self._stored_serializer() or self.serializer
        persistence = SQLitePersistence(path or self.location, serializer=serializer)
        persistence.set_bot(bot)
        return persistence

    async def read(self, bot: ExtBot[None]) -> BotData:
        if not self.exists():
            return BotData()
        persistence = self._persistence(bot)
        try:
            return await _read_all(persistence, self._conversation_names)
        except DatabaseFileError as exc:
            raise MigrationError(str(exc)) from exc
        finally:
            await persistence.flush()

    async def _conversation_names(self) -> list[str]:
        with sqlite3.connect(self.location) as db:
            names = [name for (name,) in db.execute("SELECT DISTINCT name FROM conversations")]
        db.close()
        return names

    def problem(self, what: str, value: Any) -> str | None:
        # exactly the check SQLitePersistence makes when it writes: nothing passes here and fails there
        try:
            self._codec.encode(value, what)
        except DataNotStorableError as exc:
            return short_problem(exc)
        return None

    async def write(self, data: BotData, bot: ExtBot[None]) -> None:
        # A new file next to the target, moved into its place once complete and closed: a value
        # that cannot be stored, a full disk or a crash leaves the target as it was. Every value is
        # encoded once, by SQLitePersistence itself, while it writes (PTB's save round, done once).
        target = Path(self.location)
        scratch = _scratch_for(target)
        try:
            persistence = self._persistence(bot, scratch)
            results = await asyncio.gather(*_write_calls(persistence, data), return_exceptions=True)
            failed = [exc for exc in results if isinstance(exc, BaseException)]
            try:
                await persistence.flush()  # closes the file even when it cannot write
            except SaveFailedError as exc:
                failed.append(exc)
            refused = [short_problem(exc) for exc in failed if isinstance(exc, DataNotStorableError)]
            if refused:
                raise NotStorable(refused)
            if failed:  # a full disk, an I/O error: SaveFailedError, caused by SQLite's own error
                cause = failed[-1].__cause__ or failed[-1]
                raise MigrationError(f"Cannot write {self.location}: {type(cause).__name__}: {cause}. "
                                     "It was not changed.") from failed[-1]
            if _open_elsewhere(target):
                raise MigrationError(f"{target} is open in another program (its -wal file exists). It "
                                     "was not changed. Stop the bot (and any other program using it).")
            os.replace(scratch, target)
        except DatabaseFileError as exc:
            raise MigrationError(str(exc).replace(str(scratch), str(target))) from exc
        finally:
            _remove_scratch(scratch)


def _open_elsewhere(path: Path) -> bool:
    """Whether a program has the database open: SQLite removes its WAL files when the last
    connection closes (SQLitePersistence always closes in ``flush()``)."""
    return any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))


_SQLITE_FILES = ("", "-wal", "-shm", "-journal")  # a database and the files SQLite keeps beside it
_SCRATCH = re.compile(r"\.migrate-(\d+)(-wal|-shm|-journal)?")


def _scratch_for(path: Path) -> Path:
    """This run's name for the new copy of ``path``, next to it: ``.NAME.migrate-PID``.

    Copies that runs killed on the way left behind (their process is gone) are removed first:
    they hold users' data, and nothing else would ever delete them."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.migrate-*"):
        found = _SCRATCH.fullmatch(leftover.name[len(path.name) + 1:])
        if found and not _running(int(found.group(1))):
            _remove_scratch(leftover)
    return path.with_name(f".{path.name}.migrate-{os.getpid()}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_scratch(path: Path) -> None:
    """Remove a scratch copy: a directory (Pickle), or a file with the files SQLite keeps beside it."""
    if path.is_dir():
        shutil.rmtree(path)
    for suffix in _SQLITE_FILES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _read_all(persistence: Any, conversation_names: Callable[[], Awaitable[list[str]]]) -> BotData:
    """Everything ``persistence`` (a SQLite or PostgreSQL one) holds, through its ``get_*``; the
    names of the conversations come from the store's table (PTB asks by name)."""
    data = BotData(
        user_data=await persistence.get_user_data(),
        chat_data=await persistence.get_chat_data(),
        bot_data=await persistence.get_bot_data(),
        callback_data=await persistence.get_callback_data(),
    )
    for name in await conversation_names():
        data.conversations[name] = await persistence.get_conversations(name)
    return data


def _write_calls(persistence: Any, data: BotData, old: BotData | None = None) -> list[Any]:
    """The persistence calls that turn a store holding ``old`` (nothing by default) into one holding
    ``data``: one ``update_persistence()`` round of PTB with every id changed, plus the drops."""
    old = old or BotData()
    calls = [persistence.update_user_data(user_id, value) for user_id, value in data.user_data.items()]
    calls += [persistence.drop_user_data(user_id) for user_id in old.user_data.keys() - data.user_data.keys()]
    calls += [persistence.update_chat_data(chat_id, value) for chat_id, value in data.chat_data.items()]
    calls += [persistence.drop_chat_data(chat_id) for chat_id in old.chat_data.keys() - data.chat_data.keys()]
    calls.append(persistence.update_bot_data(data.bot_data))
    if data.callback_data is not None or old.callback_data is not None:
        calls.append(persistence.update_callback_data(data.callback_data))
    for name, states in data.conversations.items():
        calls += [persistence.update_conversation(name, key, state) for key, state in states.items()]
    for name, states in old.conversations.items():
        ended = states.keys() - data.conversations.get(name, {}).keys()
        calls += [persistence.update_conversation(name, key, None) for key in ended]
    return calls


def migration_lock_key(schema: str) -> int:
    """The PostgreSQL advisory lock a migration into ``schema`` holds (a signed 64-bit int)."""
    digest = hashlib.blake2b(f"persistence.migrate {schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresStore(Store):
    """A ``PostgresPersistence`` schema (``persistence/postgres.py``, stage 9).

    Written in one transaction: every value is checked first (the encoder ``PostgresPersistence``
    uses), then PTB's save round runs once - ``PostgresPersistence`` commits the writes started
    together as one transaction, deletions of what the target held before (``--replace``) included.
    """

    advice = "Use --serializer pickle (bytea rows only Python reads), or convert those values."

    def __init__(self, dsn: str, serializer: Literal["json", "pickle"] | None, schema: str,
                 role: str) -> None:
        super().__init__(dsn)
        self.requested = serializer
        self.schema = schema
        self.role = role
        self._codecs = {}

    def __str__(self) -> str:
        from persistence.postgres import safe_dsn  # (never print a password)

        return f"{safe_dsn(self.location)} (schema {self.schema})"

    def exists(self) -> bool:
        return True  # a server: read() says what the schema holds

    @contextlib.asynccontextmanager
    async def only_migration(self) -> AsyncIterator[None]:
        """A PostgreSQL advisory lock per schema, held on a connection of its own."""
        conn = await self._connect()
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", migration_lock_key(self.schema)):
                raise MigrationError(f"Another migration into {self} is running. It was not changed. "
                                     "Wait for it to finish.")
            yield
        finally:
            await conn.close()  # (which releases the lock)

    async def _connect(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        try:
            return await asyncpg.connect(self.location)
        except (OSError, asyncpg.PostgresError) as exc:
            raise MigrationError(f"Cannot connect to PostgreSQL at {self}: {exc}. Check that the server "
                                 "runs and the address, user, password and database are right.") from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Any] | None:
        """Rows of one query on a connection of its own (``None``: the schema has no
        PostgresPersistence tables); creates nothing, unlike opening a ``PostgresPersistence``."""
        conn = await self._connect()
        try:
            if await conn.fetchval("SELECT to_regclass($1)", f"{self.schema}.ptb_settings") is None:
                return None
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def _settings(self) -> dict[str, str] | None:
        """The schema's ``ptb_settings`` table: the serializer it was made with, among others."""
        rows = await self._fetch(f"SELECT name, value FROM {self.schema}.ptb_settings")
        return None if rows is None else {name: value for name, value in rows}

    async def _names(self) -> list[str]:
        rows = await self._fetch(f"SELECT DISTINCT name FROM {self.schema}.conversations")
        return [row[0] for row in rows or []]

    def _persistence(self, bot: ExtBot[None], serializer: str) -> Any:
        from persistence.postgres import PostgresPersistence

        persistence = PostgresPersistence(self.location, serializer=serializer,  # type: ignore[arg-type]
                                          schema=self.schema)
        persistence.set_bot(bot)
        return persistence

    async def _read_with(self, persistence: Any) -> BotData:
        from persistence.postgres import PostgresSchemaError

        try:
            data = await _read_all(persistence, self._names)
        except (PostgresSchemaError, DatabaseFileError) as exc:
            raise MigrationError(str(exc)) from exc
        return data

    async def read(self, bot: ExtBot[None]) -> BotData:
        settings = await self._settings()
        if settings is None:
            if self.role == "SOURCE":
                raise MigrationError(f"SOURCE {self} holds no PostgresPersistence tables. Check the "
                                     "address and --schema.")
            return BotData()
        self._stored = settings.get("serializer", "json")
        persistence = self._persistence(bot, self._stored)
        try:
            return await self._read_with(persistence)
        finally:
            await persistence.flush()

    _stored: str | None = None  # the serializer of the schema, once read() has seen it
    _codecs: dict[str, SQLitePersistence]

    def problem(self, what: str, value: Any) -> str | None:
        # the encoders PostgresPersistence uses: encode_json, and sqlite.py's pickler
        serializer = self.requested or self._stored or "json"
        if serializer not in self._codecs:
            self._codecs[serializer] = SQLitePersistence(os.devnull, serializer=serializer)  # type: ignore[arg-type]
        try:
            self._codecs[serializer].encode(value, what)
        except DataNotStorableError as exc:
            return short_problem(exc)
        return None

    async def write(self, data: BotData, bot: ExtBot[None]) -> None:
        settings = await self._settings()
        self._stored = settings.get("serializer", "json") if settings else None
        refused = [problem for what, value in data.values() if (problem := self.problem(what, value))]
        if refused:
            raise NotStorable(refused)
        persistence = self._persistence(bot, self.requested or self._stored or "json")
        failed: list[BaseException] = []
        try:
            old = await self._read_with(persistence)  # through the writing instance: it replaces these
            results = await asyncio.gather(*_write_calls(persistence, data, old), return_exceptions=True)
            failed = [exc for exc in results if isinstance(exc, BaseException)]
        finally:
            try:
                await persistence.flush()  # closes the pool even when it cannot write
            except SaveFailedError as exc:  # (it keeps a failed round's writes and tries them again)
                failed.append(exc)
        if failed:
            cause = failed[0].__cause__ if isinstance(failed[0], SaveFailedError) else failed[0]
            cause = cause or failed[0]
            raise MigrationError(f"Writing {self} failed, nothing was written: "
                                 f"{type(cause).__name__}: {cause}") from failed[0]


class JSONStore(Store):
    """A JSON export in ``DictPersistence``'s format, values in the exact codec."""

    advice = ("A JSON export holds what JSON can say exactly; migrate into a SQLite file with "
              "--serializer pickle instead, or convert those values.")

    def exists(self) -> bool:
        return Path(self.location).exists()

    def problem(self, what: str, value: Any) -> str | None:
        try:
            encode_json(value, what)
        except DataNotStorableError as exc:
            return short_problem(exc)
        return None

    async def read(self, bot: ExtBot[None]) -> BotData:
        if not self.exists():
            return BotData()
        try:
            with open(self.location, encoding="utf-8") as file:  # noqa: ASYNC230 (a CLI: nothing waits)
                export = json.load(file)
            if not isinstance(export, dict) or not set(export) <= {f"{kind}_json" for kind in KINDS}:
                raise ValueError(f"expected one object with the keys {', '.join(f'{k}_json' for k in KINDS)}")
            data = BotData()
            for user_id, value in export.get("user_data_json", {}).items():
                data.user_data[int(user_id)] = from_plain(value, f"user_data of user {user_id}")
            for chat_id, value in export.get("chat_data_json", {}).items():
                data.chat_data[int(chat_id)] = from_plain(value, f"chat_data of chat {chat_id}")
            data.bot_data = from_plain(export.get("bot_data_json", {}), "bot_data")
            callback = export.get("callback_data_json")
            if callback is not None:
                keyboards, queries = callback
                data.callback_data = (
                    [(uuid, float(stamp), {button: from_plain(value, f"button {button}")
                                           for button, value in buttons.items()})
                     for uuid, stamp, buttons in keyboards],
                    dict(queries))
            for name, states in export.get("conversations_json", {}).items():
                data.conversations[name] = {
                    tuple(json.loads(key)): from_plain(state, f"conversation {name!r} key {key}")
                    for key, state in states.items()}
        except (ValueError, TypeError, AttributeError, DatabaseFileError) as exc:
            raise MigrationError(f"{self.location} is not a JSON export of this tool ({exc}). It was "
                                 "not changed.") from exc
        return data

    async def write(self, data: BotData, bot: ExtBot[None]) -> None:
        refused: list[str] = []
        export = export_json(data, refused)
        if refused:
            raise NotStorable(refused)
        _replace_file(Path(self.location), json.dumps(export, ensure_ascii=False, indent=1))


def _replace_file(path: Path, text: str) -> None:
    """Write ``text`` to a new file next to ``path``, then move it into place: all or nothing."""
    scratch = _scratch_for(path)
    try:
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, path)
    except OSError as exc:  # a full disk, a directory we may not write to...
        raise MigrationError(f"Cannot write {path}: {exc.strerror or exc}. It was not changed.") from exc
    finally:
        scratch.unlink(missing_ok=True)


def export_json(data: BotData, refused: list[str] | None = None) -> dict[str, Any]:
    """``data`` as a JSON export: ``DictPersistence(**{k: json.dumps(v) for k, v in ...})`` loads it.

    A value the exact codec cannot store raises ``DataNotStorableError``; with a ``refused`` list,
    its short description is added there instead (and ``None`` exported), so one pass finds all."""
    def to_plain(value: Any, what: str) -> Any:
        try:
            return json.loads(encode_json(value, what))
        except DataNotStorableError as exc:
            if refused is None:
                raise
            refused.append(short_problem(exc))
            return None

    callback = None
    if data.callback_data is not None:
        keyboards, queries = data.callback_data
        callback = [[[uuid, stamp, {button: to_plain(value, f"button {button}")
                                    for button, value in buttons.items()}]
                     for uuid, stamp, buttons in keyboards], queries]
    return {
        "user_data_json": {str(user_id): to_plain(value, f"user_data of user {user_id}")
                           for user_id, value in data.user_data.items()},
        "chat_data_json": {str(chat_id): to_plain(value, f"chat_data of chat {chat_id}")
                           for chat_id, value in data.chat_data.items()},
        "bot_data_json": to_plain(data.bot_data, "bot_data"),
        "conversations_json": {
            name: {json.dumps(list(key)): to_plain(state, f"conversation {name!r} key {list(key)}")
                   for key, state in states.items()}
            for name, states in data.conversations.items()},
        "callback_data_json": callback,
    }


def dict_persistence(export: dict[str, Any]) -> DictPersistence:
    """PTB's ``DictPersistence`` over a JSON export (it keeps the tags of values as they are)."""
    texts = {key: json.dumps(value) for key, value in export.items()}
    return DictPersistence(**texts)  # type: ignore[arg-type]


def open_store(location: str, *, serializer: Literal["json", "pickle"] | None = None,
               pickle_prefix: bool = False, schema: str = "public", role: str = "SOURCE") -> Store:
    """The store at ``location``, told by its form (see the module docstring)."""
    lowered = location.lower()
    if lowered.startswith(("postgresql://", "postgres://")):
        return PostgresStore(location, serializer, schema, role)
    if lowered.endswith(PICKLE_SUFFIXES):
        return PickleStore(location, single_file=True)
    if lowered.endswith(SQLITE_SUFFIXES):
        return SQLiteStore(location, serializer)
    if lowered.endswith(".json"):
        return JSONStore(location)
    if pickle_prefix or PickleStore(location, single_file=False).exists():
        return PickleStore(location, single_file=False)
    raise MigrationError(
        f"{role} {location}: cannot tell what it is from its name. Use a name ending in .pickle, "
        ".sqlite3 (or .db) or .json, a postgresql:// address, or --pickle-prefix for the files of "
        "PicklePersistence(single_file=False)."
    )


# ================================================================================================
# The migration
# ================================================================================================
@dataclass
class Report:
    """What a migration did (or, with ``dry_run``, would do)."""

    source: str
    target: str
    counts: dict[str, str]
    dry_run: bool
    replaced: bool
    seconds: dict[str, float] = field(default_factory=dict)  # per phase: read, write, verify (or check)

    def __str__(self) -> str:
        verb = "Would move" if self.dry_run else "Moved"
        lines = [f"{verb} from {self.source} to {self.target}"
                 + (", replacing what it held" if self.replaced else "")
                 + ("" if self.dry_run else ", and read it back: identical") + ":"]
        lines += [f"  {kind:<14} {count}" for kind, count in self.counts.items()]
        lines.append(f"in {sum(self.seconds.values()):.2f} s ("
                     + ", ".join(f"{phase} {took:.2f} s" for phase, took in self.seconds.items()) + ")")
        if self.dry_run:
            lines.append("Dry run: nothing was written.")
        return "\n".join(lines)


def _say(show: bool | None, text: str) -> None:
    """What the tool is doing, on a terminal (``show=None``), always or never: the bar of
    :func:`_progress` can only count what the tool does value by value."""
    if show or (show is None and sys.stderr.isatty()):
        tqdm.write(text, file=sys.stderr)


def _progress(items: Iterable[Any], total: int, description: str, show: bool | None) -> Iterable[Any]:
    """``items``, with a progress bar on a terminal (``show=None``), always or never."""
    hidden = None if show is None else not show
    bar: Iterable[Any] = tqdm(items, total=total, desc=description, unit=" values", disable=hidden,
                              leave=False, mininterval=0.2)
    return bar


async def migrate(source: Store, target: Store, *, replace: bool = False, dry_run: bool = False,
                  progress: bool | None = None) -> Report:
    """Copy everything ``source`` holds into ``target``: checked first, written at once, read back.

    Raises :class:`MigrationError` (the target untouched) when the source cannot be read, a value
    cannot be stored in the target, or the target holds data and ``replace`` is false."""
    bot = stand_in_bot()
    clock = _Clock()
    _say(progress, f"reading {source} ...")
    data = await source.read(bot)
    data.conversations = _running_conversations(data.conversations)
    clock.lap("read")
    async with target.only_migration():
        old = await target.read(bot) if target.exists() else BotData()
        if not old.is_empty() and not replace:
            raise MigrationError(f"{target} already holds data ({_summary(old)}). It was not changed. "
                                 "Pass --replace to replace it, or choose a new target.")
        if dry_run:  # a real run finds these while it writes (each value is encoded once)
            problems = [problem for what, value in _progress(data.values(), data.size(), "checking", progress)
                        if (problem := target.problem(what, value)) is not None]
            if problems:
                raise MigrationError(_refusal(source, target, problems))
            clock.lap("check")
        report = Report(str(source), str(target), data.counts(), dry_run, not old.is_empty(), clock.laps)
        if dry_run:
            return report
        _say(progress, f"writing {_plural(data.size(), 'value')} to {target} ...")
        try:
            await target.write(data, bot)
        except NotStorable as exc:
            raise MigrationError(_refusal(source, target, exc.problems)) from None
        clock.lap("write")
        written = await target.read(bot)
    difference = differs(data, written, progress)
    clock.lap("verify")
    if difference:
        raise MigrationError(f"{target} was written, but reading it back does not give the source's "
                             f"data: {difference}. Keep using the source, and please report this as a bug.")
    return report


def _refusal(source: Store, target: Store, problems: list[str]) -> str:
    shown = "\n".join(f"  {line}" for line in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return (f"{target} cannot hold {_plural(len(problems), 'value')} of {source}:\n{shown}\n"
            + (f"  ... and {more:,} more\n" if more > 0 else "")
            + f"{target.advice} Nothing was written.")


class _Clock:
    """Seconds spent in each phase."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = now - self._last
        self._last = now


def _running_conversations(
    conversations: dict[str, dict[tuple[int | str, ...], object]]
) -> dict[str, dict[tuple[int | str, ...], object]]:
    """Without ended conversations: state ``None`` means ended (``ConversationHandler`` treats the
    key as absent), and ``PicklePersistence`` keeps such keys where other persistences delete them."""
    running = {name: {key: state for key, state in states.items() if state is not None}
               for name, states in conversations.items()}
    return {name: states for name, states in running.items() if states}


def _summary(data: BotData) -> str:
    counts = data.counts()
    return ", ".join(counts[kind] for kind in ("user_data", "chat_data", "conversations"))


# ================================================================================================
# Exact comparison: the read-back check
# ================================================================================================
def differs(source: BotData, target: BotData, progress: bool | None = None) -> str | None:
    """Where ``target`` differs from ``source`` (the first place found), or ``None``."""
    ids = [(kind, getattr(source, kind), getattr(target, kind)) for kind in ("user_data", "chat_data")]
    ids += [(f"conversation {name!r}", states, target.conversations.get(name, {}))
            for name, states in source.conversations.items()]
    for kind, ours, theirs in ids:
        if ours.keys() != theirs.keys():
            extra = sorted(map(str, ours.keys() ^ theirs.keys()))[:3]
            return f"{kind} has other keys ({', '.join(extra)})"
    if source.conversations.keys() != target.conversations.keys():
        return f"conversations {sorted(source.conversations)} became {sorted(target.conversations)}"
    wanted = {what: value for what, value in source.values()}
    for what, theirs in _progress(target.values(), len(wanted), "verifying", progress):
        if _same_pickle(wanted[what], theirs):
            continue
        where = value_differs(wanted[what], theirs)
        if where is not None:
            return f"{what}{where}"
    return None


def _same_pickle(a: Any, b: Any) -> bool:
    """A quick sufficient test of sameness: the same pickle means the same types and values all the
    way down (pickle runs in C: ten times faster than :func:`value_differs`). ``False`` only means
    "look closer": shared references, or a value pickle cannot take, make pickles differ."""
    try:
        return pickle.dumps(a, protocol=5) == pickle.dumps(b, protocol=5)
    except Exception:  # unpicklable (a value holding a lock, a bot...): value_differs decides
        return False


def value_differs(a: Any, b: Any, path: str = "") -> str | None:
    """Where ``b`` differs from ``a``, as a path like ``['messages'][3]``, or ``None`` when they
    are the same: equal, with the same types all the way down (``1``, ``1.0`` and ``True`` differ;
    a Telegram object by all its fields; another object by its attributes when it has no ``==``)."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} became {type(b).__name__}"
    if type(a) in (str, int, bool, bytes) or a is None:
        return None if a == b else f"{path}: {a!r:.40} became {b!r:.40}"
    if type(a) is float:
        return None if a == b or (math.isnan(a) and math.isnan(b)) else f"{path}: {a!r} became {b!r}"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {list(a)!r:.60} became {list(b)!r:.60}"
        return _first(value_differs(a[key], b[key], f"{path}[{key!r}]") for key in a)
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{path}: {len(a)} items became {len(b)}"
        return _first(value_differs(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))
    if isinstance(a, TelegramObject):
        return value_differs(a.to_dict(), b.to_dict(), path)
    if type(a).__eq__ is object.__eq__ and hasattr(a, "__dict__"):  # type: ignore[comparison-overlap]
        return value_differs(vars(a), vars(b), path)
    return None if a == b else f"{path}: {a!r:.40} became {b!r:.40}"


def _first(found: Iterable[str | None]) -> str | None:
    return next((where for where in found if where is not None), None)


# ================================================================================================
# The command line
# ================================================================================================
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m persistence.migrate",
        description="Move a python-telegram-bot's persisted data between PicklePersistence, "
                    "SQLitePersistence, PostgresPersistence and a JSON export: everything, checked, "
                    "or nothing. Stop the bot first.",
        epilog="Examples: python -m persistence.migrate stage1.pickle stage3.sqlite3 | "
               "... stage3.sqlite3 backup.json | ... stage3.sqlite3 postgresql://bot@db/bot --schema bot",
    )
    where = "*.pickle, *.sqlite3 (*.db), *.json, postgresql://..., or a --pickle-prefix"
    parser.add_argument("source", metavar="SOURCE", help=where)
    parser.add_argument("target", metavar="TARGET", help=where)
    parser.add_argument("--serializer", choices=("json", "pickle"),
                        help="for a SQLite or PostgreSQL target: json (readable, plain data only; the "
                             "default for a new one) or pickle (any picklable value); an existing "
                             "target keeps its own unless --replace makes a new SQLite file")
    parser.add_argument("--dry-run", action="store_true", help="read and check everything, write nothing")
    parser.add_argument("--replace", action="store_true", help="replace the data a target already holds")
    parser.add_argument("--schema", default="public",
                        help="the PostgreSQL schema of a postgresql:// SOURCE or TARGET (default public)")
    parser.add_argument("--pickle-prefix", action="store_true",
                        help="SOURCE/TARGET names without a known suffix are PicklePersistence("
                             "single_file=False) prefixes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        source = open_store(args.source, pickle_prefix=args.pickle_prefix, schema=args.schema)
        if not source.exists():
            raise MigrationError(f"SOURCE {args.source} does not exist. Check the path (the bot's "
                                 "--file or STAGEn_FILE).")
        target = open_store(args.target, serializer=args.serializer, role="TARGET",
                            pickle_prefix=args.pickle_prefix, schema=args.schema)
        if os.path.abspath(args.source) == os.path.abspath(args.target):
            raise MigrationError("SOURCE and TARGET are the same file.")
        # A one-shot process whose data holds no reference cycles: Python's cycle collector would
        # only walk the whole source again and again while the write allocates (seconds for
        # 100,000 chats). Memory is still freed as usual (reference counting).
        gc.disable()
        report = asyncio.run(migrate(source, target, replace=args.replace, dry_run=args.dry_run))
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["BotData", "JSONStore", "MigrationError", "PickleStore", "Report", "SQLiteStore", "Store",
           "dict_persistence", "export_json", "from_plain", "main", "migrate", "open_store",
           "value_differs"]
