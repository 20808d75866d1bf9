"""SQLitePersistence: keep a python-telegram-bot (v22) bot's data in one SQLite file.

Copy this file into your project; it needs only ``python-telegram-bot`` and ``aiosqlite``::

    from sqlite_persistence import SQLitePersistence   # wherever you put this file

    persistence = SQLitePersistence("bot.sqlite3")
    app = ApplicationBuilder().token(TOKEN).persistence(persistence).build()

Your handlers keep using ``context.user_data``, ``context.chat_data`` and ``context.bot_data``;
``ConversationHandler(..., persistent=True, name="...")`` states and, with
``arbitrary_callback_data=True``, inline-button data are kept too. PTB loads everything once at
start-up and writes what changed every ``update_interval`` seconds and at shutdown. For a bot with
very many users, ``lazy=True`` loads each user's and chat's data when it is first needed instead
(see the class docstring: what it changes for broadcasts).

This class is for a file that **one bot process** owns. If other programs (an admin tool, a web
panel, a script) write the file while the bot runs, use ``SharedSQLitePersistence`` from
``shared.py`` instead: same file format, plus merging of their changes. This class notices such a
change when it saves the row, and warns, naming the row.

The schema (``sqlite3 bot.sqlite3 .schema``)
--------------------------------------------
One row per user, per chat, per (conversation name, key); one row each for bot and callback data::

    user_data(user_id INTEGER PRIMARY KEY, data, version)
    chat_data(chat_id INTEGER PRIMARY KEY, data, version)
    bot_data(id INTEGER PRIMARY KEY CHECK (id = 0), data, version)
    callback_data(id INTEGER PRIMARY KEY CHECK (id = 0), data, version)
    conversations(name TEXT, key TEXT, state, PRIMARY KEY (name, key))
    settings(name TEXT PRIMARY KEY, value TEXT)        -- the serializer the file was made with

``data`` and ``state`` are JSON text (or pickle bytes); a conversation ``key`` is the JSON list of
PTB's key tuple, e.g. ``[-4001, 1001]`` for (chat id, user id). JSON mode writes plain JSON where it
can, so ``SELECT json_extract(data, '$.messages[0].message') FROM chat_data`` works; what plain
JSON cannot say is tagged: ``{"$tuple": [...]}``, ``{"$map": [[key, value], ...]}`` for a dict
whose keys are not all strings (or start with ``$``), ``{"$float": "inf"}``, and
``{"$chars": [55357, ...]}`` for a string with lone surrogate halves (UTF-8 cannot hold them).

``version`` changes with every write, also by other programs (a trigger bumps it), which is how
a row changed behind this instance's back is noticed. The file's ``PRAGMA user_version`` is the
schema version; a file from a newer version of this class, a SQLite file of another program, or a
file that is not SQLite at all is refused with a :class:`DatabaseFileError` naming it, untouched.

Behaviour worth knowing
-----------------------
* Everything is ``async`` on ``aiosqlite``: no database call blocks the event loop. Encoding runs
  in a worker thread too. (json's C code holds the interpreter for a whole value, thread or not, so
  a value of more than ~50,000 items goes through json's pure-Python walk, which lets the bot run
  every few ms: saving a 96 MB row stalls it for ~40 ms instead of ~0.7 s. pickle has no such
  walk: in pickle mode a huge value holds the bot while it is pickled.)
* A save round (PTB runs all its ``update_*`` calls at once) is written as one transaction with
  ``executemany``; a row is only ever committed whole.
* ``refresh_*`` do nothing: the bot's memory is the truth, as with ``PicklePersistence``
  (with ``lazy=True``, ``refresh_user_data``/``refresh_chat_data`` load an id the first time).
* ``flush()`` (PTB's last call, in ``shutdown()``) commits and closes; the instance reopens the file
  if it is used again.
* The file uses WAL mode: a reader never blocks the bot and a crash never corrupts the file.
* Deleting is for real (``PRAGMA secure_delete``, and the WAL file is emptied after a drop): once
  ``drop_user_data``/``drop_chat_data`` are saved, the data is in no byte of the files - at once,
  or, while another program holds a read open on the file, at the first save after it lets go.
  This holds for what this class wrote. A program that rewrites a row with ``secure_delete`` off
  (SQLite's default) leaves that row's old bytes in free space until a ``VACUUM``: give such
  programs ``PRAGMA secure_delete = ON``. Beyond SQLite's reach: backups, copies, and blocks the
  file system or SSD keeps.
"""

from __future__ import annotations

import asyncio
import copyreg
import io
import json
import json.scanner
import math
import os
import pickle
import random
import sqlite3
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiosqlite
from telegram import Bot, TelegramObject
from telegram.ext import BasePersistence, ContextTypes, PersistenceInput

SCHEMA_VERSION = 1
APPLICATION_ID = 0x50544243  # "PTBC" in PRAGMA application_id marks a file as ours

_SCHEMA = [
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
    "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE conversations (name TEXT NOT NULL, key TEXT NOT NULL, state NOT NULL,"
    " PRIMARY KEY (name, key))",
]
# user_data, chat_data, bot_data and callback_data share one shape: an id, the data, a version
KEY_COLUMN = {"user_data": "user_id", "chat_data": "chat_id", "bot_data": "id", "callback_data": "id"}
_TRIGGERS = []  # made at every start if missing (a program may rebuild a table without them)
for _table, _column in KEY_COLUMN.items():
    _check = f" CHECK ({_column} = 0)" if _column == "id" else ""
    _SCHEMA.append(f"CREATE TABLE {_table} ({_column} INTEGER PRIMARY KEY{_check}, data NOT NULL,"
                   " version INTEGER NOT NULL DEFAULT (random()))")
    _bump = f"UPDATE {_table} SET version = random() WHERE {_column} = NEW.{_column}; END"
    _TRIGGERS += [
        # a program that updates `data` without a new version still bumps it, so it is noticed
        f"CREATE TRIGGER IF NOT EXISTS {_table}_version AFTER UPDATE OF data ON {_table}"
        f" WHEN NEW.version = OLD.version BEGIN {_bump}",
        # and so does one that inserts a row (INSERT OR REPLACE of a row it read earlier...)
        f"CREATE TRIGGER IF NOT EXISTS {_table}_insert AFTER INSERT ON {_table} BEGIN {_bump}",
    ]

_SAVED_EVERY_ROUND = ("bot_data", "callback_data")  # PTB writes these at every save, changed or not
LAZY = ("user_data", "chat_data")  # the tables lazy=True loads one id at a time

# what error messages call a row of each table
_WHAT = {"user_data": "user_data of user {}", "chat_data": "chat_data of chat {}",
         "bot_data": "bot_data", "callback_data": "callback_data"}


def describe_row(table: str, key: Any) -> str:
    """What errors call a row: ``describe_row("chat_data", 42)`` is ``'chat_data of chat 42'``."""
    return _WHAT[table].format(key)


class DatabaseFileError(RuntimeError):
    """The database file cannot be used: not SQLite, damaged, another program's, or too new.

    The message names the file and what to do; the file is left as it was."""


class DataNotStorableError(TypeError):
    """Data handed to the persistence cannot be stored with the chosen serializer.

    The message names the data (e.g. ``chat_data of chat 42``) and where the bad value sits."""


class SaveFailedError(RuntimeError):
    """A save round could not be written (the file locked by another program for longer than
    ``busy_timeout``, a full disk, an I/O error). Nothing is lost: its writes are kept and written
    again at the next save and at ``flush()``; from ``flush()``, the message names what is unsaved."""


def check_lazy(stored: Any, value: Any, what: str) -> None:
    """``lazy=True`` merges a user's or chat's data with its stored row key by key: both must be
    dicts. Raises :class:`DataNotStorableError` naming ``what`` if not."""
    if not (isinstance(stored, dict) and isinstance(value, dict)):
        raise DataNotStorableError(
            f"lazy=True merges {what} key by key, so it must be a dict, not "
            f"{type(value).__name__} (stored: {type(stored).__name__}). Use lazy=False.")


def _explain(exc: BaseException | None, busy_timeout: float) -> str | None:
    """What is wrong, in words, when SQLite could not read or write for a reason outside the file's
    contents; ``None`` when it is not such a reason (then the file itself may be damaged)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"another program held the file locked for longer than busy_timeout ({busy_timeout} s)"
    if name.startswith("SQLITE_FULL"):
        return "the disk is full"
    if name.startswith("SQLITE_IOERR"):
        return f"an I/O error ({exc})"
    if name.startswith("SQLITE_READONLY"):
        return "the file cannot be written (read-only permissions, or a read-only file system)"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return f"the file cannot be opened ({exc}): check the permissions of the file and its directory"
    return None


# ------------------------------------------------------------------------------------------------
# JSON: exact round trips of dict/list/tuple/str/int/float/bool/None, readable where possible
# ------------------------------------------------------------------------------------------------
class _NotJSON(Exception):
    """Raised inside the encoder; turned into a DataNotStorableError with the value's location."""


def _plain_size(value: Any, tags: bool = False) -> int:
    """How many items (dict entries, list elements) ``value`` holds at any depth if
    ``json.dumps(value)`` already says exactly what it is - the common case: then no tagged copy
    is needed - else -1 (``tags``: keys starting with ``$`` are fine). Allocates nothing (plain
    loops, leaves checked inline: this runs for every value of every save). Lone surrogates are
    caught by the caller."""
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str or (key[:1] == "$" and not tags):
                return -1
        items: Iterable[Any] = value.values()
    elif kind is list:
        items = value
    else:
        return 0 if kind in _LEAVES or (kind is float and value - value == 0.0) else -1
    size = len(value)
    for item in items:
        kind = type(item)
        if kind is float:
            if item - item != 0.0:  # inf or nan
                return -1
        elif kind not in _LEAVES:
            inner = _plain_size(item, tags)
            if inner < 0:
                return -1
            size += inner
    return size


_LEAVES = frozenset({str, int, bool, type(None)})
# one encoder for every save (json.dumps with arguments builds a new one per call); a cycle is
# caught as RecursionError by _plain_size and _to_json before it gets here
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False,
                            allow_nan=False)
# json's C encoder and decoder hold the interpreter (the GIL) for a whole value, worker thread or
# not: 0.6 s for 90 MB, with the event loop frozen. Values above these sizes go through json's
# pure-Python walk instead - slower, but other threads (the event loop) run every few ms.
_BIG_ITEMS, _BIG_TEXT = 50_000, 2_000_000  # items of a value to encode; characters of a text


def _dumps(value: Any, size: int) -> str | None:
    """JSON text of ``value`` (of plain JSON types, ``size`` items), or ``None`` if it holds a
    lone surrogate (plain JSON would rejoin a pair)."""
    if size < _BIG_ITEMS:
        text = _ENCODER.encode(value)
        return text if _utf8(text) else None
    pieces, chunks = [], []
    for chunk in _ENCODER.iterencode(value):  # (the Python walk: see _BIG_ITEMS)
        chunks.append(chunk)
        if len(chunks) == 4096:
            pieces.append("".join(chunks))
            chunks.clear()
            if not _utf8(pieces[-1]):
                return None
    pieces.append("".join(chunks))
    return "".join(pieces) if _utf8(pieces[-1]) else None


def _utf8(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (it has no lone surrogate halves)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _to_json(value: Any) -> Any:
    """``value`` as plain JSON types, with tags for what JSON cannot say. Exact types only."""
    kind = type(value)
    if kind is str:
        return value if _utf8(value) else {"$chars": [ord(char) for char in value]}
    if kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if kind is list:
        return [_to_json(item) for item in value]
    if kind is dict:
        if all(type(key) is str and not key.startswith("$") and _utf8(key) for key in value):
            return {key: _to_json(item) for key, item in value.items()}
        return {"$map": [[_to_json(key), _to_json(item)] for key, item in value.items()]}
    if kind is tuple:
        return {"$tuple": [_to_json(item) for item in value]}
    raise _NotJSON


def _from_json_object(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: undo the tags of :func:`_to_json` (inner objects come first).
    The encoder never writes a plain key starting with ``$``: such an object must be one tag."""
    if not any(key.startswith("$") for key in obj):
        return obj
    if len(obj) == 1:
        [(tag, inner)] = obj.items()
        if tag == "$tuple" and type(inner) is list:
            return tuple(inner)
        if tag == "$map" and type(inner) is list and all(type(p) is list and len(p) == 2 for p in inner):
            return {key: item for key, item in inner}
        if tag == "$float" and inner in ("inf", "-inf", "nan"):
            return float(inner)
        if tag == "$chars" and type(inner) is list and all(type(c) is int for c in inner):
            return "".join(map(chr, inner))
    raise ValueError(f"an object with the keys {sorted(obj)} is not a tag this codec wrote "
                     "(tags are one key: $tuple, $map, $float or $chars)")


_PLAIN, _TAGGED = json.JSONDecoder(), json.JSONDecoder(object_hook=_from_json_object)
_JSON_SPACE = " \t\n\r"  # the whitespace JSON allows around a value (str.isspace() takes more)


def _where_not_json(value: Any, path: str = "") -> tuple[str, Any] | None:
    """The first place in ``value`` that :func:`_to_json` refuses, as ``(path, bad value)``."""
    kind = type(value)
    if kind in (str, int, bool, float) or value is None:
        return None
    if kind in (list, tuple):
        for index, item in enumerate(value):
            found = _where_not_json(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if kind is dict:
        for key, item in value.items():
            found = _where_not_json(key, f"a key of {path or 'the top level'}")
            found = found or _where_not_json(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return path or "the top level", value


def encode_json(value: Any, what: str) -> str:
    """``value`` as the exact JSON text this file stores; ``what`` names it in errors.

    Raises :class:`DataNotStorableError` naming ``what`` and where the bad value sits. Use it to
    check that a value can be stored before writing it."""
    try:
        size = _plain_size(value)
        text = _dumps(value, size) if size >= 0 else None
        if text is None:  # tags needed: a copy with them
            tagged = _to_json(value)
            text = _dumps(tagged, _plain_size(tagged, tags=True))
        assert text is not None  # (the tagged copy has no lone surrogates: they became $chars)
        return text
    except ValueError as exc:  # an int too long for str(), see sys.set_int_max_str_digits
        raise DataNotStorableError(f"Cannot store {what} as JSON: {exc}") from None
    except RecursionError:
        raise DataNotStorableError(f"Cannot store {what}: it nests too deeply or contains "
                                   "itself (a cycle).") from None
    except _NotJSON:
        path, bad = _where_not_json(value) or ("the top level", value)
        raise DataNotStorableError(
            f"Cannot store {what} as JSON: {path} is {type(bad).__module__}."
            f"{type(bad).__qualname__} ({bad!r:.60}). JSON mode stores dict, list, tuple, "
            "str, int, float, bool and None; convert it, or use serializer='pickle'."
        ) from None


def decode_json(text: str | bytes, what: str) -> Any:
    """The value :func:`encode_json` made ``text`` from. Raises :class:`DatabaseFileError`
    naming ``what`` (say which file it is in) if ``text`` is not such JSON."""
    try:
        if isinstance(text, bytes):  # (as json.loads reads bytes: UTF-8, -16 or -32)
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        tags = ("$" in text and '"$' in text) or ("\\" in text and "\\u0024" in text)  # $ escaped
        decoder = _TAGGED if tags else _PLAIN  # (only tags need the hook; one memchr, mostly)
        if len(text) >= _BIG_TEXT:
            decoder = json.JSONDecoder(object_hook=decoder.object_hook)
            # json's pure-Python scanner (in the stdlib since 2.6, not in typeshed): see _BIG_TEXT
            decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
        # raw_decode: json.loads's two whitespace regexes cost more than a small row's decoding
        if text[:1] in _JSON_SPACE:
            text = text.lstrip(_JSON_SPACE)
        value, end = decoder.raw_decode(text)
        if text[end:].strip(_JSON_SPACE):
            raise ValueError(f"more after the JSON value, at character {end}")
        return value
    except (ValueError, TypeError, RecursionError) as exc:
        raise DatabaseFileError(f"{what} cannot be read back ({type(exc).__name__}: {exc}). "
                                "Fix or delete that row, or restore a backup.") from None


# ------------------------------------------------------------------------------------------------
# pickle: any object; the Bot inside Telegram objects is swapped for the current bot on load
# ------------------------------------------------------------------------------------------------
_CURRENT_BOT, _OTHER_BOT = "current bot", "another bot"


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, bot: Bot | None) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._bot = bot

    def reducer_override(self, obj: Any) -> Any:
        # Telegram objects drop their bot when pickled; keep it as a reference (see persistent_id).
        # Only stdlib and telegram names end up in the row, none of this file (copied, renamed...)
        if isinstance(obj, TelegramObject):
            try:
                bot = obj.get_bot()
            except RuntimeError:
                bot = None
            state = {**obj.__getstate__(), "_bot": bot}
            return copyreg.__newobj__, (type(obj),), state  # type: ignore[attr-defined]
        return NotImplemented

    def persistent_id(self, obj: Any) -> str | None:
        if isinstance(obj, Bot):
            if obj is self._bot:
                return _CURRENT_BOT
            if self._bot is not None:  # (a script without an application has no bot of its own)
                warnings.warn("A Telegram object holds a bot other than the application's; it is "
                              "stored without it and comes back without a bot (as with "
                              "PicklePersistence).", RuntimeWarning, stacklevel=1)
            return _OTHER_BOT
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, bot: Bot | None) -> None:
        super().__init__(file)
        self._bot = bot

    def persistent_load(self, pid: Any) -> Bot | None:
        if pid == _CURRENT_BOT:
            return self._bot
        if pid == _OTHER_BOT:
            return None
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


# ------------------------------------------------------------------------------------------------
# the persistence
# ------------------------------------------------------------------------------------------------
DELETE: Any = object()  # the value of a queued write that deletes its row


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False, slots=True)
class Write:
    """One queued write: ``table``/``key`` with a value to store, or :data:`DELETE`.
    ``params`` is the row as SQL parameters once encoded."""

    table: str
    key: Any
    value: Any
    what: str
    done: asyncio.Future[None] = field(default_factory=_new_future)
    params: tuple[Any, ...] = ()


class SaveRounds:
    """The save rounds of a persistence that never loses a write (``postgres.py`` uses it too).

    PTB starts all writes of a save round at once: the first starts a writer task, the others join
    its queue before it runs, and :meth:`_write_batch` (the subclass's) writes them together. A
    round that fails keeps its writes in ``_unsaved``; they go with the next round and ``flush()``.
    A write is anything with ``table``, ``key``, ``what`` and a ``done`` future."""

    _queue: list[Any]
    _unsaved: dict[tuple[str, Any], Any]
    _last_error: BaseException | None
    _writer: asyncio.Task[None] | None

    def _init_save_rounds(self) -> None:
        self._queue = []
        self._unsaved = {}  # (table, key) -> the write of a failed round, kept
        self._last_error = None  # why the last failed round failed
        self._writer = None

    async def _write_batch(self, batch: list[Any]) -> None:
        raise NotImplementedError

    def _save_failure(self, rows: int) -> str:
        """``Could not save N rows to WHERE: WHY`` for the last failed round."""
        raise NotImplementedError

    @staticmethod
    def _fail(write: Any, exc: BaseException) -> None:
        """``write`` failed: its caller gets ``exc`` - unless it was cancelled meanwhile (PTB's
        save task stopped at shutdown), when there is no one to tell."""
        if not write.done.done():
            write.done.set_exception(exc)

    def _submit(self, write: Any) -> asyncio.Future[None]:
        """Queue ``write``; await the returned future to wait until it is committed (or has
        failed). (Not a coroutine: a save round of 500 writes makes 1,000 fewer objects.)"""
        self._queue.append(write)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queue())
        return write.done  # type: ignore[no-any-return]

    async def _write_queue(self) -> None:
        await asyncio.sleep(0)  # let the other writes of this round join the queue
        while self._queue:
            batch, self._queue = self._queue, []
            await self._write_round(batch)

    async def _write_round(self, batch: list[Any]) -> None:
        """Write ``batch`` together with what earlier rounds could not write (older first; a newer
        write of the same row replaces an older one). If the round fails, all are kept again."""
        if self._unsaved:
            fresh = {(write.table, write.key) for write in batch}
            batch = [write for row, write in self._unsaved.items() if row not in fresh] + batch
            self._unsaved = {}
        if not batch:
            return
        try:
            await self._write_batch(batch)
        except BaseException as exc:
            for write in batch:  # (writes that failed alone have left the batch)
                self._unsaved[write.table, write.key] = write
            self._last_error = exc
            error = SaveFailedError(f"{self._save_failure(len(batch))}. Nothing is lost: they are "
                                    "written again at the next save and at flush().")
            error.__cause__ = exc
            for write in batch:
                self._fail(write, error)
            if not isinstance(exc, Exception):
                raise


class SQLitePersistence(SaveRounds, BasePersistence[Any, Any, Any]):
    """A :class:`telegram.ext.BasePersistence` that keeps every kind of bot data in one SQLite
    file, for a bot whose process owns the file. See the module docstring for the schema.

    Args:
        filepath (:obj:`str` | :obj:`os.PathLike`): The database file. Created on first use,
            readable by its owner only (it holds your users' data), with the schema. Nothing to
            set up by hand. Defaults to ``"bot.sqlite3"``.
        store_data (:class:`telegram.ext.PersistenceInput`, optional): Kinds of data to switch
            off (all are stored by default).
        update_interval (:obj:`int` | :obj:`float`, optional): Seconds between saves (default 60).
            A crash loses at most this much; a clean shutdown nothing.
        serializer (:obj:`str`, optional): ``"json"`` (default): rows are readable JSON text.
            Exactly these round-trip, at any depth, with their types: ``dict`` (any of these as
            keys, e.g. int user ids), ``list``, ``tuple``, ``str``, ``int`` (up to 4,300 digits,
            Python's limit for ``str(int)``), ``float``, ``bool``, ``None``. Anything else (a
            ``datetime``, a set, your own class, a subclass such as ``defaultdict`` or an
            ``IntEnum``) is refused at save time with a :class:`DataNotStorableError` naming the
            data, its id and where the value sits; that id keeps what was stored before and the
            other ids of the same save are written.
            ``"pickle"``: any picklable object; Telegram objects are stored without their ``Bot``
            and get the current bot back when loaded, as ``PicklePersistence`` does. Not readable
            outside Python, and only ever load a file you trust: unpickling runs code.
        busy_timeout (:obj:`float`, optional): Seconds to wait when another program is writing
            the file at the same moment (default 5).
        context_types (:class:`telegram.ext.ContextTypes`, optional): Pass the application's, if
            it has a ``bot_data`` class of its own: a new file then starts with an instance of it.
        lazy (:obj:`bool`, optional): ``True``: load a user's or chat's data only when PTB first
            refreshes it (an update or a job of that user or chat), not all of it at start-up, so
            start-up time and memory do not grow with the number of stored users. Default
            ``False``. User and chat data must then be dicts; bot data, callback data and
            conversations are loaded at start-up as always.

            Data PTB hands over for an id it has not loaded (a job writing
            ``application.user_data[some_id]``, ``mark_data_for_update_persistence``) is merged
            with the stored row, top-level key by key, never written over it: the stored keys it
            lacks are kept, and reach the live data at that id's first refresh.

            What sees only loaded ids: iterating ``application.user_data`` / ``chat_data`` (a
            broadcast), their ``len()``, and ``migrate_chat_data`` of a chat not loaded: its data
            would not move, and PTB's drop of the old id deletes the stored row. In a handler of
            the message with ``migrate_to_chat_id`` (sent in the old group) the old chat is loaded;
            elsewhere (the ``migrate_from_chat_id`` message, a job), first ``await
            persistence.refresh_chat_data(old_id, application.chat_data[old_id])``.
            ``application.drop_user_data`` of a user not loaded: if a message of theirs comes
            before the drop is saved, their stored row is loaded for it; the save's drop takes back
            the keys the bot has not changed since, but a value it changed (a count, a list it
            appended to) keeps what came from the row. Save right after a drop (``await
            application.update_persistence()``) to leave no such window.
            The right way to reach every stored user::

                async def broadcast(context: ContextTypes.DEFAULT_TYPE) -> None:
                    persistence = context.application.persistence
                    for user_id in await persistence.stored_ids("user_data"):
                        data = context.application.user_data[user_id]
                        await persistence.refresh_user_data(user_id, data)   # loads it
                        ...  # read and change data, send the message
                        context.application.mark_data_for_update_persistence(user_ids=user_id)
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
        super().__init__(store_data=store_data, update_interval=update_interval)
        if serializer not in ("json", "pickle"):
            raise ValueError(f"serializer must be 'json' or 'pickle', not {serializer!r}")
        if str(filepath) in ("", ":memory:") or str(filepath).startswith("file:"):
            raise ValueError(f"SQLitePersistence needs the path of a file, not {str(filepath)!r}: "
                             "an in-memory database would lose every save when the bot stops.")
        self.filepath = Path(filepath)
        self.context_types = context_types or ContextTypes()
        self.serializer = serializer
        self.busy_timeout = busy_timeout
        self._db: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()
        # one statement or one write transaction at a time on the shared connection: a read must
        # neither see a save's uncommitted rows nor hold a snapshot while a save begins
        self._busy = asyncio.Lock()
        # each row's version as this instance last read or wrote it: {table: {key: version}}
        self._versions: dict[str, dict[Any, int]] = {table: {} for table in KEY_COLUMN}
        # rows this connection committed since any other connection last committed (PRAGMA
        # data_version had not moved): no one else can have changed them, no need to look
        self._fresh: dict[str, set[Any]] = {table: set() for table in KEY_COLUMN}
        self._data_version: int | None = None
        self._init_save_rounds()
        self._checked = False  # whether the file's schema was checked since the last flush()
        # PRAGMA schema_version when the row versions this instance knows were read or written:
        # a change of it (a table rebuilt, maybe without its triggers) makes them untrustworthy
        self._schema_version: int | None = None
        self._last_saved: dict[str, Any] = {}  # bot_data and callback_data as last written
        self._scrub_wal = False  # a dropped row may still be in the WAL file
        self._loaded: set[str] = set()  # tables PTB loaded since the last flush (its live data)
        self.lazy = lazy
        # lazy: ids whose stored row PTB's live data has got (by a refresh), per table
        self._in_live: dict[str, set[int]] = {table: set() for table in LAZY}
        # lazy: ids PTB's live data holds a dict for (refreshed, or handed to a save), per table:
        # loaded again if the same Application starts again (see _load_table)
        self._live_ids: dict[str, set[int]] = {table: set() for table in LAZY}
        # lazy: stored keys a save kept for an id not in live data yet: {(table, key): {name: value}}
        self._kept: dict[tuple[str, int], dict[Any, Any]] = {}
        # lazy: PTB's live dict and the stored keys a first refresh gave it, until the next save
        self._given: dict[tuple[str, int], tuple[dict[Any, Any], dict[Any, Any]]] = {}

    # ---- the connection ---------------------------------------------------------------------------
    async def _connection(self) -> aiosqlite.Connection:
        """The open connection; the first call (again after ``flush()``) opens the file."""
        if self._db is None:
            async with self._opening:
                if self._db is None:
                    self._db = await self._open()
                    # a drop's scrub that a reader blocked until the last run ended is still due
                    self._scrub_wal = True
        return self._db

    async def _open(self) -> aiosqlite.Connection:
        """Open the file, and check (or create) its schema."""
        path = self.filepath
        try:
            # owner-only from the first byte: SQLite gives its -wal/-shm files the same mode
            # (a symlink to a file that does not exist yet: create that file, owner-only too)
            os.close(os.open(path.resolve(), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass  # an existing file is checked below, never recreated
        except OSError as exc:
            if not path.resolve().parent.exists():
                raise DatabaseFileError(f"Cannot create the database file {path}: the directory "
                                        f"{path.resolve().parent} does not exist. Create it, or "
                                        "choose another path.") from exc
            raise DatabaseFileError(
                f"Cannot create the database file {path}: {exc.strerror}. "
                "Choose a path in a directory this user can write to."
            ) from exc
        try:
            db = await aiosqlite.connect(path, isolation_level=None)  # we say BEGIN/COMMIT ourselves
        except sqlite3.DatabaseError as exc:
            raise self._file_error(exc) from exc
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not (self._checked and await self._still_ours(db)):  # (the check takes the write
                await self._check_schema(db)  # lock: not for the file this instance checked)
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash never corrupts the file
            await db.execute("PRAGMA secure_delete = ON")  # deleted data is overwritten, not left
            self._checked = True
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._file_error(exc) from exc
            raise
        return db

    def _file_error(self, exc: sqlite3.DatabaseError) -> Exception:
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return exc  # another program held the file longer than busy_timeout: try again
        problem = _explain(exc, self.busy_timeout)
        if problem:  # the file is fine: say what is actually wrong
            return DatabaseFileError(f"{self.filepath} cannot be used: {problem}. It was not changed; "
                                     "fix that and start the bot again.")
        return DatabaseFileError(
            f"{self.filepath} cannot be used as the bot's database ({exc}). It was not changed. "
            "If it is not the bot's database, point the bot at another file; if it is damaged, "
            "restore a backup or move it away to start fresh."
        )

    async def _check_schema(self, db: aiosqlite.Connection) -> None:
        """Create the schema in a new file; refuse files that are not ours or are too new."""
        await db.execute("BEGIN IMMEDIATE")  # two processes starting at once: one creates
        try:
            app_id = await self._scalar(db, "PRAGMA application_id")
            version = await self._scalar(db, "PRAGMA user_version")
            tables = await self._scalar(db, "SELECT count(*) FROM sqlite_schema")
            if app_id == 0 and version == 0 and tables == 0:
                for statement in _SCHEMA:
                    await db.execute(statement)
                await db.execute("INSERT INTO settings VALUES ('serializer', ?)", (self.serializer,))
            elif app_id != APPLICATION_ID:
                raise DatabaseFileError(
                    f"{self.filepath} is a SQLite database of another program, not one made by "
                    "SQLitePersistence. It was not changed. Point the bot at another file."
                )
            elif version > SCHEMA_VERSION:
                raise DatabaseFileError(
                    f"{self.filepath} has schema version {version}, made by a newer "
                    f"SQLitePersistence (this one knows version {SCHEMA_VERSION}). It was not "
                    "changed. Update persistence/sqlite.py to the newer version to open it."
                )
            stored = await self._scalar(db, "SELECT value FROM settings WHERE name = 'serializer'")
            if stored != self.serializer:
                raise DatabaseFileError(
                    f"{self.filepath} stores its data with serializer={stored!r}, but this "
                    f"{type(self).__name__} was created with serializer={self.serializer!r}. "
                    f"It was not changed. Pass serializer={stored!r}."
                )
            for statement in _TRIGGERS:  # a table rebuilt without them gets them back
                await db.execute(statement)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def _still_ours(self, db: aiosqlite.Connection) -> bool:
        """Whether the file is still the one checked at start-up: ours, this schema version, this
        serializer (it may have been deleted, or replaced by another file, since)."""
        try:
            rows = list(await db.execute_fetchall(
                "SELECT (SELECT application_id FROM pragma_application_id),"
                " (SELECT user_version FROM pragma_user_version),"
                " (SELECT value FROM settings WHERE name = 'serializer')"))
        except sqlite3.OperationalError:  # no settings table: not ours (any more)
            return False
        return bool(rows) and tuple(rows[0]) == (APPLICATION_ID, SCHEMA_VERSION, self.serializer)

    @staticmethod
    async def _scalar(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = list(await db.execute_fetchall(sql, tuple(params)))
        return rows[0][0] if rows else None

    async def _read_at_start(self, sql: str, params: Iterable[Any] = ()) -> tuple[list[Any], int]:
        """A read of ``Application.initialize()``, and the schema version it read at: in a worker
        thread, on a connection of its own closed at once (when initialize() fails, PTB never
        calls flush(), and a connection left open - a non-daemon thread - would keep the process
        from exiting). The first read of an instance checks (or creates) the file's schema first."""
        if not self._checked:
            await (await self._open()).close()
        try:
            return await asyncio.to_thread(self._read_now, sql, tuple(params))
        except sqlite3.DatabaseError as exc:
            raise self._file_error(exc) from exc

    def _read_now(self, sql: str, params: tuple[Any, ...]) -> tuple[list[Any], int]:
        db = sqlite3.connect(f"{self.filepath.resolve().as_uri()}?mode=rw", uri=True,
                             isolation_level=None)
        try:  # (mode=rw: a file deleted since the check is an error, not created anew)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            db.execute("BEGIN")  # one snapshot for both
            rows = db.execute(sql, params).fetchall()
            [(schema,)] = db.execute("PRAGMA schema_version").fetchall()
            db.execute("COMMIT")
            return rows, schema
        finally:
            db.close()

    # ---- encoding -----------------------------------------------------------------------------------
    def encode(self, value: Any, what: str) -> str | bytes:
        """``value`` as stored in a row with this instance's serializer; ``what`` names it in
        errors (e.g. ``'chat_data of chat 7'``). Raises :class:`DataNotStorableError`."""
        if self.serializer == "json":
            return encode_json(value, what)
        buffer = io.BytesIO()
        try:
            _Pickler(buffer, self.bot).dump(value)
        except Exception as exc:  # pickle raises many kinds: PicklingError, TypeError, ValueError...
            raise DataNotStorableError(f"Cannot store {what} with pickle: {exc}") from exc
        return buffer.getvalue()

    def decode(self, stored: str | bytes, what: str) -> Any:
        """The value a row holds; raises :class:`DatabaseFileError` naming ``what`` and the file."""
        if self.serializer == "json":
            return decode_json(stored, f"{what} in {self.filepath}")
        try:
            return _Unpickler(io.BytesIO(stored if isinstance(stored, bytes) else stored.encode()),
                              self.bot).load()
        except Exception as exc:  # damaged bytes raise anything: MemoryError, OverflowError...
            raise DatabaseFileError(
                f"{what} in {self.filepath} cannot be read back ({type(exc).__name__}: {exc}). "
                "Fix or delete that row (sqlite3), or restore a backup."
            ) from exc

    # ---- writing: every write of a save round goes into one transaction ----------------------------
    def _write(self, table: str, key: Any, value: Any, what: str | None = None) -> asyncio.Future[None]:
        """Queue one row's write (``DELETE``: its deletion); await the result to wait until it is
        committed (or has failed). ``what`` names it in errors.

        PTB starts all writes of a save round at once; :class:`SaveRounds` commits them together."""
        what = what or describe_row(table, key)
        if value is not DELETE:
            self._given.pop((table, key), None)  # (see _gave)
        if self.lazy and table in LAZY and type(key) is int and value is DELETE:
            self._live_ids[table].discard(key)
        elif self.lazy and table in LAZY and type(key) is int:
            self._live_ids[table].add(key)
        if table in KEY_COLUMN and (type(key) is not int or not -(2**63) <= key < 2**63):
            raise DataNotStorableError(f"Cannot store {what}: the id {key!r} is not an int in "
                                       "SQLite's 64-bit range.")
        return self._submit(Write(table, key, value, what))

    def _save_failure(self, rows: int) -> str:
        return f"Could not save {rows} rows to {self.filepath}: {self._problem()}"

    def _prepare(self, batch: list[Write]) -> list[tuple[Write, DataNotStorableError]]:
        """Encode every write's row (run in a worker thread). Returns the writes that cannot be
        encoded, with their errors: they fail alone, the others are written."""
        failed = []
        for write in batch:
            if write.params:  # kept from a failed round: encoded already
                continue
            try:
                if write.value is DELETE:
                    write.params = write.key if write.table == "conversations" else (write.key,)
                elif write.table == "conversations":
                    write.params = (*write.key, self.encode(write.value, write.what))
                else:
                    version = random.getrandbits(63)
                    write.params = (write.key, self.encode(write.value, write.what), version)
            except DataNotStorableError as exc:
                failed.append((write, exc))
        return failed

    async def _write_batch(self, batch: list[Write]) -> None:
        failed = await asyncio.to_thread(self._prepare, batch)
        for write, exc in failed:
            self._fail(write, exc)
            batch.remove(write)
        for write in [w for w in batch if w.table in _SAVED_EVERY_ROUND and w.value is not DELETE
                      and self._last_saved.get(w.table) == w.params[1]]:
            if not write.done.done():  # PTB saves these at every round: write them only if changed
                write.done.set_result(None)
            batch.remove(write)
        if not batch:
            return
        db = await self._connection()
        async with self._busy:
            await db.execute("BEGIN IMMEDIATE")
            try:
                every_row = await self._schema_changed(db)
                if self.lazy:
                    await self._keep_stored_keys(db, batch)
                await self._other_writers(db, batch, every_row)
                new = [w for w in batch if w.table in KEY_COLUMN and w.value is not DELETE
                       and self._known_version(w.table, w.key) is None]
                for sql, rows in _runs(batch):
                    await db.executemany(sql, rows)
                if new:
                    await self._read_back_versions(db, new)
                await db.execute("COMMIT")
            except BaseException:
                await self._roll_back(db)
                raise
            self._after_commit(batch)
            if self._scrub_wal or any(w.value is DELETE and w.table in KEY_COLUMN for w in batch):
                self._scrub_wal = not await self._empty_wal(db)  # (raises nothing)
        for write in batch:
            if not write.done.done():
                write.done.set_result(None)

    def _after_commit(self, batch: list[Write]) -> None:
        """What this instance knows once ``batch`` is committed: the rows as written, and fresh
        (this connection's own commits do not move its ``data_version``)."""
        self._last_saved.update({w.table: w.params[1] for w in batch
                                 if w.table in _SAVED_EVERY_ROUND and w.value is not DELETE})
        self._committed(batch)
        for write in batch:
            if write.table in KEY_COLUMN and write.value is DELETE:
                self._fresh[write.table].discard(write.key)
            elif write.table in KEY_COLUMN:
                self._fresh[write.table].add(write.key)

    async def _roll_back(self, db: aiosqlite.Connection) -> None:
        """After a failed statement of a save. SQLite may have rolled back already (a full disk,
        an I/O error); if even ROLLBACK fails, the connection is dropped and the file reopened."""
        try:
            if db.in_transaction:
                await db.execute("ROLLBACK")
        except sqlite3.Error:
            await self._drop_connection(db)

    async def _drop_connection(self, db: aiosqlite.Connection) -> None:
        """Give up a connection that cannot be trusted any more: the next call opens the file."""
        self._db, self._data_version = None, None
        try:
            await db.close()
        except sqlite3.Error as exc:
            warnings.warn(f"Closing {self.filepath} failed ({exc}); it is opened again.",
                          RuntimeWarning, stacklevel=1)

    async def _schema_changed(self, db: aiosqlite.Connection) -> bool:
        """Whether another program changed the schema since this connection saw it last (rebuilt
        a table, say, maybe without its triggers: then a change may have kept its version). The
        triggers are made again; this round must not trust versions. Also forgets which rows are
        fresh if another connection committed anything since this one last looked."""
        [(schema, data_version)] = await db.execute_fetchall(
            "SELECT (SELECT schema_version FROM pragma_schema_version),"
            " (SELECT data_version FROM pragma_data_version)")
        if data_version != self._data_version:
            self._data_version = data_version
            for rows in self._fresh.values():
                rows.clear()
        if schema == self._schema_version:
            return False
        first = self._schema_version is None
        for statement in _TRIGGERS:
            await db.execute(statement)
        self._schema_version = await self._scalar(db, "PRAGMA schema_version")
        return not first

    async def _read_back_versions(self, db: aiosqlite.Connection, writes: list[Write]) -> None:
        """Rows this round inserted got their version from the insert trigger: note it."""
        for table in {write.table for write in writes}:
            column = KEY_COLUMN[table]
            mine = [write for write in writes if write.table == table]
            versions: dict[int, int] = {key: version for key, version in await db.execute_fetchall(
                f"SELECT {column}, version FROM {table} WHERE {column} IN"
                " (SELECT value FROM json_each(?))", (json.dumps([write.key for write in mine]),))}
            for write in mine:
                write.params = (*write.params[:2], versions[write.key])

    async def _empty_wal(self, db: aiosqlite.Connection) -> bool:
        """After a drop is committed: a forgotten user's old rows may still sit in the WAL file.
        Move it into the database (where secure_delete zeroed them) and empty it. A reader of
        another program can prevent that: do not wait for it. Returns whether it was emptied; if
        not, the next save tries again. The committed round stays committed whatever happens."""
        try:
            await db.execute("PRAGMA busy_timeout = 0")
            emptied = bool(await self._scalar(db, "PRAGMA wal_checkpoint(TRUNCATE)") == 0)
        except sqlite3.Error:
            emptied = False
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except sqlite3.Error:  # never keep a connection that would not wait for other programs
            await self._drop_connection(db)
        return emptied

    async def _other_writers(self, db: aiosqlite.Connection, batch: list[Write], every_row: bool) -> None:
        """Inside the save's transaction: warn about each row being written that another program
        changed since this instance read or wrote it (it is overwritten); with ``every_row``,
        versions cannot be trusted. ``SharedSQLitePersistence`` merges instead."""
        if every_row:
            warnings.warn(
                f"Another program changed the schema of {self.filepath} (rebuilt a table?): rows it "
                "changed meanwhile may be overwritten by this save without notice. If other programs "
                "write the file while the bot runs, use SharedSQLitePersistence.", RuntimeWarning,
                stacklevel=1)
            return
        for table, changed in await self._changed_rows(db, batch, with_data=False):
            for key, _ in changed:
                self._warn_overwrite(table, key)

    def _warn_overwrite(self, table: str, key: Any) -> None:
        warnings.warn(
            f"{describe_row(table, key)} in {self.filepath} was changed by another program since "
            f"this {type(self).__name__} read or wrote it; this save overwrites that change. If "
            "other programs write the file while the bot runs, use SharedSQLitePersistence "
            "(persistence/shared.py), which merges their changes.", RuntimeWarning, stacklevel=1)

    async def _changed_rows(
        self, db: aiosqlite.Connection, batch: list[Write], with_data: bool, every_row: bool = False
    ) -> list[tuple[str, list[tuple[Any, Any]]]]:
        """Per table, the rows about to be written (not deleted) whose version differs from the
        one this instance knows (``every_row``: all of them), as ``(key, data)`` (``data`` is
        ``None`` for a deleted row, or when not ``with_data``). Fresh rows are not looked up."""
        result = []
        for table in KEY_COLUMN:
            fresh = set() if every_row else self._fresh[table]
            mine = {str(w.key): self._known_version(table, w.key) for w in batch
                    if w.table == table and w.value is not DELETE and w.key not in fresh}
            if not mine:
                continue
            column = KEY_COLUMN[table]
            changed = await db.execute_fetchall(
                f"SELECT CAST(mine.key AS INTEGER), {'t.data' if with_data else 'NULL'}"
                f" FROM json_each(?) AS mine LEFT JOIN {table} AS t"
                f" ON t.{column} = CAST(mine.key AS INTEGER)"
                f" WHERE {'1' if every_row else 't.version IS NOT mine.value'}",
                (json.dumps(mine),))
            if changed:
                result.append((table, [(key, data) for key, data in changed]))
        return result

    def _known_version(self, table: str, key: Any) -> int | None:
        return self._versions[table].get(key)

    def _committed(self, batch: list[Write]) -> None:
        """After a save's COMMIT: the written rows' versions are the ones this instance knows."""
        for write in batch:
            if write.table not in KEY_COLUMN:
                continue
            if write.value is DELETE:
                self._versions[write.table].pop(write.key, None)
            else:
                self._versions[write.table][write.key] = write.params[2]

    # ---- reading ------------------------------------------------------------------------------------
    async def _load_table(self, table: str) -> dict[int, Any]:
        """A table as ``Application.initialize()`` loads it (the first call since a ``flush()``:
        it becomes PTB's live data), or as a later caller (a ``/stats`` command) reads it."""
        first = table not in self._loaded
        self._loaded.add(table)
        sql, params = f"SELECT {KEY_COLUMN[table]}, data, version FROM {table}", ""
        lazy = self.lazy and table in LAZY
        if lazy:  # start-up loads nothing; refresh_* loads an id. But an Application started
            # again keeps its live dicts, and only update()s them with what this returns: the ids
            # it had loaded are loaded again, so that changes made while it was stopped reach it
            again = sorted(self._live_ids[table]) if first else []
            if first:
                self._in_live[table].clear()
                self._kept = {row: kept for row, kept in self._kept.items() if row[0] != table}
                self._given = {row: given for row, given in self._given.items() if row[0] != table}
            sql += f" WHERE {KEY_COLUMN[table]} IN (SELECT value FROM json_each(?))"
            params = json.dumps(again)
        rows, schema = await self._read_at_start(sql, (params,) if lazy else ())
        if self._schema_version is None:  # (versions known from before stay this schema's: a
            self._schema_version = schema  # change since shows at the next save, _schema_changed)
        if first:
            self._forget_table(table)  # knowledge from before a flush() may be stale
        loaded = await asyncio.to_thread(self._decode_rows, table, rows)
        if first:  # a later call says nothing about the live data
            for key, data, version in rows:
                self._remember(table, key, version, data)
            if lazy:  # (an id whose row is gone gets a new, empty dict: nothing to load)
                empty = self.context_types.user_data if table == "user_data" else self.context_types.chat_data
                loaded = {**{key: empty() for key in again}, **loaded}
                self._in_live[table].update(again)  # (and _live_ids still holds them)
        return loaded

    def _decode_rows(self, table: str, rows: list[Any]) -> dict[int, Any]:
        return {key: self.decode(data, describe_row(table, key)) for key, data, _ in rows}

    def _forget_table(self, table: str) -> None:
        self._versions[table].clear()
        self._fresh[table].clear()
        self._last_saved.pop(table, None)

    def _remember(self, table: str, key: Any, version: int, data: Any) -> None:
        """A row PTB's live data was loaded from."""
        self._versions[table][key] = version

    # ---- lazy=True ---------------------------------------------------------------------------------
    async def stored_ids(self, table: Literal["user_data", "chat_data"]) -> list[int]:
        """The ids of every stored user (``"user_data"``) or chat (``"chat_data"``), loaded or
        not: what a broadcast iterates over when ``lazy=True`` (see the class docstring)."""
        if table not in LAZY:
            raise ValueError(f"stored_ids() takes 'user_data' or 'chat_data', not {table!r}")
        db = await self._connection()
        async with self._busy:
            rows = await db.execute_fetchall(f"SELECT {KEY_COLUMN[table]} FROM {table}")
        return [key for key, in rows]

    async def _load_id(self, table: str, key: int, live: Any) -> None:
        """lazy: give ``live`` (PTB's dict for this id) the stored keys it lacks, the first time."""
        if key in self._in_live[table]:
            return
        db = await self._connection()
        async with self._busy:
            if self._schema_version is None:  # (first: a change of the schema after it shows)
                self._schema_version = await self._scalar(db, "PRAGMA schema_version")
            rows = list(await db.execute_fetchall(
                f"SELECT data, version FROM {table} WHERE {KEY_COLUMN[table]} = ?", (key,)))
        if key in self._in_live[table]:  # another refresh of this id got there first
            return
        what = describe_row(table, key)
        stored = await asyncio.to_thread(self.decode, rows[0][0], what) if rows else {}
        check_lazy(stored, live, what)
        given = {name: value for name, value in {**stored, **self._kept.pop((table, key), {})}.items()
                 if name not in live}
        live.update(given)
        self._gave(table, key, live, given)
        self._in_live[table].add(key)
        self._live_ids[table].add(key)
        if rows:
            self._versions[table].setdefault(key, rows[0][1])

    async def _keep_stored_keys(self, db: aiosqlite.Connection, batch: list[Write]) -> None:
        """lazy, inside a save's transaction: data of an id PTB has not loaded gets the stored
        keys it lacks, so that the save does not write over them; they are kept in memory until
        the id's first refresh hands them to the live data."""
        for table in LAZY:
            writes = {w.key: w for w in batch if w.table == table and w.value is not DELETE
                      and w.key not in self._in_live[table]}
            unread = [key for key in writes if (table, key) not in self._kept]
            if unread:
                column = KEY_COLUMN[table]
                for key, data, version in await db.execute_fetchall(
                        f"SELECT {column}, data, version FROM {table} WHERE {column} IN"
                        " (SELECT value FROM json_each(?))", (json.dumps(unread),)):
                    try:
                        kept = await asyncio.to_thread(self.decode, data, writes[key].what)
                    except DatabaseFileError as exc:  # an unreadable row fails its write alone
                        unreadable = writes.pop(key)
                        self._fail(unreadable, exc)
                        batch.remove(unreadable)
                        continue
                    self._kept[table, key] = kept
                    self._versions[table].setdefault(key, version)
            for key, write in writes.items():
                kept = self._kept.get((table, key))
                if not kept:
                    continue
                try:
                    check_lazy(kept, write.value, write.what)
                except DataNotStorableError as exc:
                    self._fail(write, exc)
                    batch.remove(write)
                    continue
                # write.value stays PTB's data (a retry of this write merges again)
                missing = {name: value for name, value in kept.items() if name not in write.value}
                self._kept[table, key] = missing  # what the live data still lacks
                if missing:
                    merged = {**write.value, **missing}
                    stored = await asyncio.to_thread(self.encode, merged, write.what)
                    write.params = (key, stored, write.params[2])

    # ---- the 16 methods PTB calls --------------------------------------------------------------------
    async def get_user_data(self) -> dict[int, Any]:
        """All users' data, loaded once by ``Application.initialize()``."""
        return await self._load_table("user_data")

    async def get_chat_data(self) -> dict[int, Any]:
        """All chats' data, loaded once by ``Application.initialize()``."""
        return await self._load_table("chat_data")

    async def get_bot_data(self) -> Any:
        """The bot's data (a new ``context_types.bot_data`` if none is stored)."""
        stored = await self._load_table("bot_data")
        return stored[0] if 0 in stored else self.context_types.bot_data()

    async def get_callback_data(self) -> Any:
        """The callback data cache as PTB stored it - ``(list of (uuid, time, {uuid: data}),
        {query id: uuid})`` - or ``None``."""
        return (await self._load_table("callback_data")).get(0)

    async def get_conversations(self, name: str) -> dict[tuple[int | str, ...], object]:
        """The states of the conversations of the ``ConversationHandler`` called ``name``."""
        rows, _ = await self._read_at_start("SELECT key, state FROM conversations WHERE name = ?", (name,))
        conversations = {}
        for key, state in rows:
            what = f"conversation {name!r} key {key}"
            try:
                parts = json.loads(key)
            except (ValueError, TypeError, RecursionError) as exc:
                parts = exc
            if type(parts) is not list or not all(type(part) in (int, str) for part in parts):
                raise DatabaseFileError(f"{what} in {self.filepath} is not a JSON list of ints and "
                                        "strings. Fix or delete that row (sqlite3), or restore a backup.")
            parts = tuple(parts)
            conversations[parts] = self.decode(state, what)
        return conversations

    async def update_user_data(self, user_id: int, data: Any) -> None:
        """Store one user's data (PTB calls this for each changed user at every save)."""
        await self._write("user_data", user_id, data)

    async def update_chat_data(self, chat_id: int, data: Any) -> None:
        """Store one chat's data (PTB calls this for each changed chat at every save)."""
        await self._write("chat_data", chat_id, data)

    async def update_bot_data(self, data: Any) -> None:
        """Store the bot's data (PTB calls this at every save)."""
        await self._write("bot_data", 0, data)

    async def update_callback_data(self, data: Any) -> None:
        """Store the callback data cache (PTB calls this at every save)."""
        await self._write("callback_data", 0, data)

    async def update_conversation(
        self, name: str, key: tuple[int | str, ...], new_state: object | None
    ) -> None:
        """Store a conversation's state; ``None`` means it ended, so its row is deleted."""
        try:
            shown = repr(key)
        except ValueError:  # an int too long for str()
            shown = "with an int of more than 4,300 digits"
        what = f"the state of conversation {name!r:.80} for key {shown:.80}"
        if not (type(name) is str and _utf8(name) and type(key) is tuple and all(
                type(part) is int or (type(part) is str and _utf8(part)) for part in key)):
            raise DataNotStorableError(f"Cannot store {what}: the name must be a str and the key a "
                                       "tuple of int and str (without lone surrogates).")
        try:
            stored_key = (name, json.dumps(list(key), ensure_ascii=False))
        except ValueError as exc:  # an int too long for str()
            raise DataNotStorableError(f"Cannot store {what}: {exc}") from None
        await self._write("conversations", stored_key, DELETE if new_state is None else new_state, what)

    async def drop_user_data(self, user_id: int) -> None:
        """Delete a user's row (after ``Application.drop_user_data``)."""
        self._dropped("user_data", user_id)
        await self._write("user_data", user_id, DELETE)

    async def drop_chat_data(self, chat_id: int) -> None:
        """Delete a chat's row (after ``Application.drop_chat_data`` or a migration)."""
        self._dropped("chat_data", chat_id)
        await self._write("chat_data", chat_id, DELETE)

    def _gave(self, table: str, key: int, live: dict[Any, Any], given: dict[Any, Any]) -> None:
        """lazy: a first refresh gave ``live`` these stored keys. Until the id's next save: PTB may
        have dropped the id before that refresh (``Application.drop_user_data`` of a user not
        loaded, then a message from them), and then its save is a drop that must take them out."""
        if given:
            self._given[table, key] = (live, given)

    def _dropped(self, table: str, key: Any) -> None:
        self._kept.pop((table, key), None)
        live, given = self._given.pop((table, key), (None, {}))
        for name, value in given.items():  # (unless the bot has set them anew since)
            if live is not None and live.get(name, DELETE) is value:
                del live[name]
        if self.lazy and isinstance(key, int):
            self._in_live[table].add(key)  # nothing stored to load: PTB's new dict is the truth

    async def refresh_user_data(self, user_id: int, user_data: Any) -> None:
        """With ``lazy=True``, loads the user's stored data into ``user_data`` the first time;
        otherwise does nothing: the bot's memory is the truth."""
        if self.lazy:
            await self._load_id("user_data", user_id, user_data)

    async def refresh_chat_data(self, chat_id: int, chat_data: Any) -> None:
        """With ``lazy=True``, loads the chat's stored data into ``chat_data`` the first time;
        otherwise does nothing: the bot's memory is the truth."""
        if self.lazy:
            await self._load_id("chat_data", chat_id, chat_data)

    async def refresh_bot_data(self, bot_data: Any) -> None:
        """Does nothing: the bot's memory is the truth (``SharedSQLitePersistence`` merges)."""

    async def flush(self) -> None:
        """Finish queued writes, then close the file (PTB's last call, in ``shutdown()``).
        The instance stays usable: the next call reopens the file."""
        # shielded: a cancelled caller (a timeout around shutdown()) must not cancel the round
        # being written, nor leave the connection (a non-daemon thread) open
        await asyncio.shield(self._finish_and_close())

    async def _finish_and_close(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])
        await self._write_round([])  # what earlier rounds could not write: one more try
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()
        self._opening, self._busy = asyncio.Lock(), asyncio.Lock()  # usable from another loop too
        self._loaded, self._checked = set(), False  # (the next load starts afresh)
        self._data_version = None  # (the next connection's count is another one)
        if self._unsaved:
            names = [write.what for write in self._unsaved.values()]
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            raise SaveFailedError(
                f"flush() could not write to {self.filepath}: {self._problem()}. Unsaved: "
                f"{', '.join(names[:10])}{more}. They are kept in this {type(self).__name__}: "
                "call flush() again once that is fixed.") from self._last_error

    def _problem(self) -> str:
        """Why the last failed round failed, in words."""
        exc = self._last_error
        return _explain(exc, self.busy_timeout) or f"{type(exc).__name__}: {exc}"


def _statement(table: str, delete: bool) -> str:
    """The SQL of one queued write."""
    if table == "conversations":
        if delete:
            return "DELETE FROM conversations WHERE name = ? AND key = ?"
        return ("INSERT INTO conversations (name, key, state) VALUES (?, ?, ?)"
                " ON CONFLICT (name, key) DO UPDATE SET state = excluded.state")
    column = KEY_COLUMN[table]
    if delete:
        return f"DELETE FROM {table} WHERE {column} = ?"
    return (f"INSERT INTO {table} ({column}, data, version) VALUES (?, ?, ?)"
            f" ON CONFLICT ({column}) DO UPDATE SET data = excluded.data, version = excluded.version")


def _runs(batch: list[Write]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The batch as (SQL, rows) runs: consecutive writes of one statement share an executemany."""
    runs: list[tuple[str, list[tuple[Any, ...]]]] = []
    for write in batch:
        sql = _statement(write.table, write.value is DELETE)
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(write.params)
        else:
            runs.append((sql, [write.params]))
    return runs
