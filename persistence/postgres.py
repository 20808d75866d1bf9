"""PostgresPersistence: several python-telegram-bot (v22) processes sharing one PostgreSQL database.

Copy this file into your project together with ``sqlite.py`` and ``shared.py`` (it reuses their
exact JSON codec and their merge; change the two imports ``persistence.shared`` and
``persistence.sqlite`` below to where you put them, or keep all three in a ``persistence/``
package); it needs ``python-telegram-bot`` and ``asyncpg``::

    from postgres_persistence import IsolatingApplication, PostgresPersistence

    persistence = PostgresPersistence("postgresql://bot:secret@db.example/bot")
    app = (ApplicationBuilder().token(TOKEN).application_class(IsolatingApplication)
           .persistence(persistence).build())

Every process of the bot runs this same code over the same database; each update may land on any
of them (a load balancer in front of several webhook workers, or one receiver handing updates to
several workers).

Why one more persistence
------------------------
PTB loads all data once at start-up and writes what changed every ``update_interval`` seconds. With
several processes that loses updates: two processes each add 1 to the same user's counter in their
own copy, and the later save wins. ``ConversationHandler`` is worse: it reads its states once, so a
form whose second step lands on another process starts over. :class:`IsolatingApplication` fixes
both, the way aiogram's ``RedisEventIsolation`` does: **each update runs with its user and its chat
locked in every process** (in this process, then a PostgreSQL advisory lock in a transaction;
an update takes its user and chat together, or waits without holding either, so no two waits
ever close a circle); under the lock their rows and the conversation states for the update's key
are read fresh, the handlers run, and the rows are written before the lock is released. Updates
for different users and chats still run concurrently; updates for the same user or chat take
turns, in every process.

Arguments of :class:`PostgresPersistence`
-----------------------------------------
``dsn``
    A libpq connection string (``postgresql://user:password@host:port/database``).
``store_data``, ``update_interval``
    As for every ``BasePersistence``. User data, chat data and conversations are written at the
    end of each update by the isolation; the periodic save writes bot data, callback data and
    anything changed outside an update (see :meth:`IsolatingApplication.isolated`).
``serializer``
    ``"json"`` (default; rows are readable JSON text, the exact codec of ``sqlite.py``: dict
    with any keys, list, tuple, str, int, float, bool, None, with their types) or ``"pickle"``.
``schema``
    The PostgreSQL schema holding the tables (default ``"public"``); created if missing. Several
    bots can share one database, each in its own schema.
``wait_for_server``
    Seconds an isolated update waits, retrying, for a server that does not answer (a restart, a
    network outage) before its error goes to the error handlers (default 60). Meanwhile a
    warning is logged; the handlers run only once the update's rows are locked and read.
``pool_size``
    Connections per process (default 10). An update holds one while it runs: with
    ``concurrent_updates(N)``, at most ``pool_size`` updates of different users run at once.
``lazy``
    ``True``: start-up loads no user or chat data; an id is loaded when PTB first refreshes it (or
    an isolated update or ``isolated()`` block holds it), so start-up time and memory do not grow
    with the number of stored users. As for ``SQLitePersistence(lazy=True)``: data PTB hands
    over for an id not loaded yet is merged with the stored row key by key, never written over
    it; a broadcast iterates over :meth:`PostgresPersistence.stored_ids`.

Tables (``\\dt`` in psql)
-----------------------
``user_data(user_id bigint PRIMARY KEY, data, version bigint)``, ``chat_data(chat_id ...)``,
``bot_data(id = 0, data, version)``, ``callback_data(id = 0, ...)``,
``conversations(name text, key text, state)`` and ``ptb_settings(name, value)`` (the schema version
and the serializer). ``data`` and ``state`` are ``text`` (JSON) or ``bytea`` (pickle); a
conversation key is the JSON list of PTB's key tuple, e.g. ``[-4001, 1001]``. ``version`` changes
with every write (a trigger bumps it when another program forgets), which is how a process notices
rows changed behind its back. Tables of another program, or a schema made by a newer version of
this file, are refused with one :class:`PostgresSchemaError` naming them; nothing is changed.

Guarantees (each tested in ``tests/test_stage9_several_processes.py``, with real processes)
----------------------------------------------------------------------------------------
* A user's and a chat's data never lose an update, whichever processes handle them: a handler's
  read-modify-write (``user_data["n"] += 1``) stays exact.
* Bot data: each save merges top-level key by key with what other processes saved (the merge of
  ``shared.py``): keys written by different processes are all kept; if two change the same key,
  the last save wins.
* A persistent conversation continues at the right step whichever process gets the next message.
* A job that changes a user's or chat's data is as safe as a handler when its callback runs inside
  ``async with context.application.isolated(user_id=..., chat_id=...)``. So is a handler about
  another user (an admin command, a broadcast); for the update's own user or chat, ``isolated()``
  runs inside the update, which holds them already.
* Nothing is lost while the server is away: an update waits for it (``wait_for_server``), and a
  save round that cannot be written is kept and written again at the next save and at ``flush()``
  (which raises ``SaveFailedError`` naming what is still unsaved).

Costs and limits: each update with a user or chat holds one pooled connection while it runs and
makes four round trips to the server (begin + locks, one read, the changed rows, commit); what that
costs on this project's machine is in ``benchmarks/results/postgres.md``. Handlers with
``block=False`` run after the lock is released: their changes are saved by the periodic save,
merged key by key. Nested and ``per_message`` conversations are loaded once, as PTB does.
Known limits (strict ``xfail`` tests in ``tests/test_review_session4_pg.py`` and
``test_review_session5.py``): callback data (``arbitrary_callback_data``) is each process's own,
loaded at start-up and saved whole, so a button made by one process is ``InvalidCallbackData`` on
another (route a chat's updates to one process, or keep buttons' data in ``callback_data``
strings); two updates that each isolate the other's user (Alice's ``/give`` to Bob while Bob's
``/give`` to Alice runs) wait for each other for good: do such cross-user work in a job; a task a
handler starts (``application.create_task``) whose ``isolated()`` about the update's own user
begins while the update runs shares the update's locks, so what it does after the update ended is
unlocked (await such a task in the handler); and conversation states are compared by value, so a
timeout job of an earlier step can end a form whose later step kept the same state. (A
conversation's timeout job runs on the process of the step that scheduled it; if the form went on
elsewhere, the state it ends is no longer the stored one, and the save leaves that alone.) A
process that freezes while an update holds a user's lock (a stopped VM, a network split without a
disconnect) stalls that user in every process until the server ends its session: set the server's
``idle_in_transaction_session_timeout`` (a minute, say) so that it does. A server's
``lock_timeout`` does not cut an update's wait for a user another update holds: it waits again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Iterable
from copy import copy as shallow_copy
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg  # type: ignore[import-untyped]
from telegram import Update
from telegram.ext import Application, BasePersistence, ConversationHandler, PersistenceInput

from persistence.shared import Taken, merge, put, same
from persistence.sqlite import (
    DELETE,
    KEY_COLUMN,
    DatabaseFileError,
    DataNotStorableError,
    SaveFailedError,
    SaveRounds,
    SQLitePersistence,
    check_lazy,
    decode_json,
    describe_row,
    encode_json,
)

SCHEMA_VERSION = 1
MADE_BY = "PostgresPersistence"

_KEY_COLUMN = KEY_COLUMN  # the tables and their key columns, as in sqlite.py
_TABLES = (*_KEY_COLUMN, "conversations", "ptb_settings")
_MERGED = ("user_data", "chat_data", "bot_data")  # rows a save merges with other processes' writes


class PostgresSchemaError(RuntimeError):
    """The database cannot be used: another program's tables, a newer schema, another serializer,
    or no server at the address. The message names it and the fix; nothing was changed."""


class DatabaseUnreachableError(PostgresSchemaError):
    """No PostgreSQL server answers at the address (or it refused the connection)."""


# what a server that is gone, restarting or unreachable raises: an isolated update waits for it
_UNREACHABLE = (OSError, TimeoutError, DatabaseUnreachableError, asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError)
_log = logging.getLogger(__name__)


def _schema_sql(schema: str, kind: str) -> list[str]:
    """The statements that create the tables in ``schema``; ``kind`` is the data column type."""
    statements = [
        f"CREATE TABLE {schema}.ptb_settings (name text PRIMARY KEY, value text NOT NULL)",
        f"CREATE TABLE {schema}.conversations (name text NOT NULL, key text NOT NULL,"
        f" state {kind} NOT NULL, PRIMARY KEY (name, key))",
        # another program that changes `data` but not `version` still changes the version
        f"CREATE FUNCTION {schema}.ptb_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.version = OLD.version AND NEW.data IS DISTINCT FROM OLD.data THEN"
        " NEW.version := (random() * 9e18)::bigint; END IF; RETURN NEW; END $$",
    ]
    for table, column in _KEY_COLUMN.items():
        check = f" CHECK ({column} = 0)" if column == "id" else ""
        statements += [
            f"CREATE TABLE {schema}.{table} ({column} bigint PRIMARY KEY{check}, data {kind} NOT NULL,"
            " version bigint NOT NULL DEFAULT (random() * 9e18)::bigint)",
            f"CREATE TRIGGER {table}_version BEFORE UPDATE ON {schema}.{table}"
            f" FOR EACH ROW EXECUTE FUNCTION {schema}.ptb_bump_version()",
        ]
    return statements


def _lock_key(schema: str, kind: str, ident: int) -> int:
    """The advisory lock (a signed 64-bit number) of one user or chat of one bot (schema).
    Two ids sharing a number only wait for each other; they are never wrong."""
    digest = hashlib.blake2b(f"{schema}:{kind}:{ident}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def safe_dsn(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs: ``user:password@`` of a URL, a
    ``password=`` query parameter, or the ``password=`` of a ``key=value`` string."""
    dsn = re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", dsn)
    return re.sub(r"((?:^|[?&\s])password\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", dsn)


def _new_version() -> int:
    return random.getrandbits(63)


_DELETE = DELETE  # the value of a queued write that deletes its row (and of a removed key)
_Key = tuple[int | str, ...]  # a conversation's key, as PTB makes it
_SKIP = object()  # in a save round: the isolation writes this row


@dataclass
class _Section:
    """The isolated update running in this task: its connection (``None`` once it ended: a task
    a handler started sees this too) and whether it read bot data already."""

    conn: Any
    bot_data_read: bool = False
    lock_keys: frozenset[int] = frozenset()  # the ids it holds
    task: asyncio.Task[Any] | None = None  # the update's task (tasks it starts inherit _this_update)


_this_update: contextvars.ContextVar[_Section | None] = contextvars.ContextVar("update", default=None)


@dataclass(eq=False)
class _Write:
    """One queued write of a save round: ``table``/``key`` with a value to store, or ``_DELETE``."""

    table: str
    key: Any
    value: Any
    what: str
    base: Any = None  # the row as this process knew it when PTB copied the data (for the merge)
    written: Any = None  # (version, stored data) once committed
    taken: list[Taken] = field(default_factory=list)  # other processes' keys merged into value
    params: tuple[Any, ...] = ()  # the encoded row
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class _LocalLocks:
    """The ids (their advisory lock keys) this process's isolated sections hold, and who waits.
    A section takes its ids all at once or none: it never holds one while it waits for another
    (see :func:`_lock_all`, the same rule in PostgreSQL)."""

    def __init__(self) -> None:
        self.held: set[int] = set()
        self.waiting: dict[int, list[asyncio.Future[None]]] = {}

    def take(self, keys: list[int]) -> int | None:
        """Take all of ``keys`` and return ``None``; or, if one is held, none: return that one."""
        busy = next((key for key in keys if key in self.held), None)
        if busy is None:
            self.held.update(keys)
        return busy

    async def wait_for(self, key: int) -> None:
        """Until ``key`` is given back (whoever takes it first then has it)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(key, []).append(waiter)
        try:
            await waiter
        finally:
            waiters = self.waiting[key]
            waiters.remove(waiter)
            if not waiters:
                del self.waiting[key]

    def give_back(self, keys: list[int]) -> None:
        for key in keys:
            self.held.discard(key)
            for waiter in self.waiting.get(key, ()):
                if not waiter.done():
                    waiter.set_result(None)


@dataclass
class _Hold:
    """One isolated section: the transaction that holds the advisory locks, and the live data."""

    conn: Any
    rows: dict[tuple[str, int], tuple[Any, dict[Any, Any]]] = field(default_factory=dict)  # (mapping, live)
    conversations: list[tuple[str, Any, _Key]] = field(default_factory=list)  # (name, states, key)
    written: list[tuple[tuple[str, Any], Any]] = field(default_factory=list)  # (row, (version, data))


class PostgresPersistence(SaveRounds, BasePersistence[Any, Any, Any]):
    """A ``BasePersistence`` on PostgreSQL for one or several bot processes (``asyncpg``).

    Args:
        dsn (:obj:`str`): libpq connection string of the database.
        store_data (:class:`telegram.ext.PersistenceInput`, optional): kinds of data to store.
        update_interval (:obj:`int` | :obj:`float`, optional): seconds between periodic saves.
        serializer (:obj:`str`, optional): ``"json"`` (default) or ``"pickle"``.
        schema (:obj:`str`, optional): PostgreSQL schema of the tables (default ``"public"``).
        pool_size (:obj:`int`, optional): connections per process (default 10).
        wait_for_server (:obj:`float`, optional): seconds an isolated update waits for a server that
            is unreachable (restarting, a network outage) before it fails (default 60).
        lazy (:obj:`bool`, optional): ``True``: load a user's or chat's data when PTB first
            refreshes it (an update or an isolated job of that id), not all of it at start-up.
            Default ``False``. User and chat data must then be dicts; bot data, callback data and
            conversations are loaded at start-up as always. Data PTB hands over for an id not
            loaded yet (a job writing ``application.user_data[some_id]``) is merged with the
            stored row top-level key by key, never written over it; the stored keys it lacked
            reach the live data at that id's first refresh. Iterating ``application.user_data``
            (a broadcast), its ``len()`` and ``migrate_chat_data`` see only loaded ids: reach every
            stored user as ``SQLitePersistence``'s docstring shows, with :meth:`stored_ids`, each
            one inside ``async with application.isolated(user_id=...)`` (which loads it).

    Use it with :class:`IsolatingApplication` when more than one process serves the bot; see the
    module docstring for the tables, the guarantees and their costs.
    """

    def __init__(
        self,
        dsn: str,
        *,
        store_data: PersistenceInput | None = None,
        update_interval: float = 60,
        serializer: Literal["json", "pickle"] = "json",
        schema: str = "public",
        pool_size: int = 10,
        wait_for_server: float = 60,
        lazy: bool = False,
    ) -> None:
        super().__init__(store_data=store_data, update_interval=update_interval)
        if serializer not in ("json", "pickle"):
            raise ValueError(f"serializer must be 'json' or 'pickle', not {serializer!r}")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"schema must be a lower-case SQL name (letters, digits, _), not {schema!r}")
        self.dsn = dsn
        self.serializer = serializer
        self.schema = schema
        self.pool_size = pool_size
        self.wait_for_server = wait_for_server
        self.lazy = lazy
        # pickle mode: sqlite.py's pickler (it swaps the Bot inside Telegram objects); only its
        # encode/decode are used, no file is ever opened
        self._pickle = SQLitePersistence(f"PostgreSQL schema {schema}", serializer="pickle")
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        # each row as this process last read or wrote it: {(table, key): (version, stored data)}
        self._known: dict[tuple[str, Any], tuple[int, Any]] = {}
        # PTB's live dict of each user, chat and bot data row this process has seen: a save that
        # merges another process's keys into the stored row hands them to it too (else the row,
        # now the base of the next merge, would hold them and live data never get them)
        self._live: dict[tuple[str, Any], dict[Any, Any]] = {}
        # lazy: stored keys saves merged in for an id whose live dict this process has not seen
        # yet; they are handed to it at its first refresh, and to its saves until then
        self._pending: dict[tuple[str, Any], list[Taken]] = {}
        self._init_save_rounds()
        # isolation: in-process locks, the holds of running updates, rounds of PTB's periodic save
        self._local = _LocalLocks()  # the ids this process's isolated sections hold
        self._held: dict[tuple[str, Any], int] = {}  # (table or conversation, key) -> sections
        self._managed: set[tuple[str, Any]] = set()  # rows the isolation writes itself
        self._dropped: set[tuple[str, Any]] = set()  # rows an isolated update deleted (a drop)
        self._queued_drops: set[tuple[str, Any]] = set()  # drops PTB holds, not handed to a save yet
        # during PTB's save round: rows as they were when PTB copied the data (_SKIP: an isolated
        # update was running on the row then, or has run since - it wrote everything newer)
        self._round: dict[tuple[str, Any], Any] | None = None

    def set_bot(self, bot: Any) -> None:
        super().set_bot(bot)
        self._pickle.set_bot(bot)

    # ---- the connection pool ----------------------------------------------------------------
    async def _connect(self) -> asyncpg.Pool:
        """The pool; the first call (again after ``flush()``) connects and checks the schema."""
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    try:
                        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
                    except (asyncpg.ClientConfigurationError, ValueError) as exc:  # waiting will not help
                        raise PostgresSchemaError(
                            f"{safe_dsn(self.dsn)} is not a usable PostgreSQL address ({exc}). Write "
                            "it as postgresql://user:password@host:port/database."
                        ) from exc
                    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                        raise DatabaseUnreachableError(
                            f"Cannot connect to PostgreSQL at {safe_dsn(self.dsn)}: {exc}. Check that "
                            "the server runs and the address, user, password and database are right."
                        ) from exc
                    try:
                        async with pool.acquire() as conn:
                            await self._check_schema(conn)
                    except BaseException:
                        await pool.close()
                        raise
                    self._pool = pool
        return self._pool

    async def _check_schema(self, conn: Any) -> None:
        """Create the tables in a new schema; refuse another program's tables or a newer schema."""
        s = self.schema
        async with conn.transaction():
            # several processes starting at once: one creates, the others wait and then check
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(s, "schema", 0))
            existing = {row[0] for row in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", s)}
            if "ptb_settings" not in existing:
                clash = sorted(existing & set(_TABLES))
                if clash:
                    raise PostgresSchemaError(
                        f"Schema {s!r} of {safe_dsn(self.dsn)} has tables {', '.join(clash)} that "
                        f"were not made by {MADE_BY}. Nothing was changed. Pass another schema= "
                        "(or database) for the bot."
                    )
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
                for statement in _schema_sql(s, "text" if self.serializer == "json" else "bytea"):
                    await conn.execute(statement)
                await conn.executemany(f"INSERT INTO {s}.ptb_settings VALUES ($1, $2)", [
                    ("made_by", MADE_BY), ("schema_version", str(SCHEMA_VERSION)),
                    ("serializer", self.serializer)])
                return
            settings = dict(await conn.fetch(f"SELECT name, value FROM {s}.ptb_settings"))
            if settings.get("made_by") != MADE_BY:
                raise PostgresSchemaError(
                    f"Schema {s!r} of {safe_dsn(self.dsn)} has a ptb_settings table of another "
                    f"program. Nothing was changed. Pass another schema= (or database) for the bot.")
            version = int(settings.get("schema_version", "0"))
            if version > SCHEMA_VERSION:
                raise PostgresSchemaError(
                    f"Schema {s!r} of {safe_dsn(self.dsn)} has schema version {version}, made by a "
                    f"newer {MADE_BY} (this one knows version {SCHEMA_VERSION}). Nothing was "
                    "changed. Update persistence/postgres.py to the newer version.")
            if settings.get("serializer") != self.serializer:
                raise PostgresSchemaError(
                    f"Schema {s!r} of {safe_dsn(self.dsn)} stores its data with "
                    f"serializer={settings.get('serializer')!r}, but this {MADE_BY} was created "
                    f"with serializer={self.serializer!r}. Nothing was changed. Pass "
                    f"serializer={settings.get('serializer')!r}.")

    # ---- encoding: the exact codec of sqlite.py --------------------------------------------------
    def _encode(self, value: Any, what: str) -> Any:
        if self.serializer == "json":
            return encode_json(value, what)
        return self._pickle.encode(value, what)

    def _decode(self, stored: Any, what: str) -> Any:
        if self.serializer == "json":
            return decode_json(stored, f"{what} in PostgreSQL schema {self.schema!r}")
        return self._pickle.decode(stored, what)

    # ---- writing: every write of a save round goes into one transaction -------------------------
    def _save_failure(self, rows: int) -> str:
        exc = self._last_error
        return (f"Could not save {rows} rows to PostgreSQL at {safe_dsn(self.dsn)} "
                f"({type(exc).__name__}: {exc})")

    async def _write_batch(self, batch: list[_Write]) -> None:
        for write in list(batch):  # encoded first, outside the transaction
            write.written = None  # (a write kept from a failed round may have been written once)
            try:
                write.params = self._params(write)
            except DataNotStorableError as exc:  # fails alone: the round's other writes go on
                self._fail(write, exc)
                batch.remove(write)
        latest = {(write.table, write.key): write for write in batch}  # two rounds queued at once
        pool = await self._connect()
        # the rows to merge are locked as an isolated update locks them (the same advisory locks,
        # all at once: see _lock_all), so no other process writes them meanwhile
        locks = sorted({self._lock_of(row) for row in latest if row[0] in _MERGED})
        async with pool.acquire() as conn, _locked_transaction(conn, locks):
            for table in _KEY_COLUMN:
                upserts = [w for (t, _), w in latest.items() if t == table and w.value is not _DELETE]
                if upserts:
                    await self._upsert(conn, table, upserts)
            others: dict[str, list[tuple[Any, ...]]] = {}
            for write in latest.values():
                if write.table == "conversations" or write.value is _DELETE:
                    others.setdefault(self._statement(write), []).append(write.params)
            for sql, params_list in others.items():
                await conn.executemany(sql, params_list)
        for row, write in latest.items():
            if write.table in _KEY_COLUMN:
                self._note_known(row, write.written)
                live = self._live.pop(row, None) if write.value is _DELETE else self._live.get(row)
                if live is not None:
                    for change in write.taken:  # unless a handler changed the key since PTB's copy
                        change.apply_to(live)
                elif write.value is _DELETE:
                    self._pending.pop(row, None)
                elif write.taken and self.lazy:  # an id never loaded: its first refresh gets them
                    self._pending.setdefault(row, []).extend(write.taken)
            elif write.table == "conversations":
                self._note_known(row, None if write.value is _DELETE else (0, write.value))
        for write in batch:
            if not write.done.done():
                write.done.set_result(None)

    async def _upsert(self, conn: Any, table: str, writes: list[_Write]) -> None:
        """Write rows of ``table`` in one statement. Rows of user, chat and bot data are written
        only where they are still as this process knew them (``base``, as of PTB's copy); the
        others, changed by another process meanwhile, are read, merged top-level key by key with
        that process's changes (``merge`` of shared.py), and written then."""
        if table not in _MERGED:
            await self._insert_rows(conn, table, writes, only_if_known=False)
            return
        await self._insert_rows(conn, table, writes, only_if_known=True)
        changed = [write for write in writes if write.written is None]
        if not changed:
            return
        column = _KEY_COLUMN[table]
        theirs = dict(await conn.fetch(f"SELECT {column}, data FROM {self.schema}.{table}"
                                       f" WHERE {column} = ANY($1)", [w.key for w in changed]))
        for write in changed:
            stored = self._decode(theirs[write.key], write.what) if write.key in theirs else {}
            ancestor = self._decode(write.base[1], write.what) if write.base else {}
            if isinstance(write.value, dict) and isinstance(stored, dict):
                copy, write.value = write.value, shallow_copy(write.value)  # (its own class)
                for name, value in merge(copy, stored, ancestor).items():
                    write.taken.append(Taken(name, value, (copy.get(name, DELETE),), None))
                    put(write.value, name, value)
                write.params = self._params(write)
        await self._insert_rows(conn, table, changed, only_if_known=False)

    async def _insert_rows(self, conn: Any, table: str, writes: list[_Write], only_if_known: bool) -> None:
        """One ``INSERT ... ON CONFLICT`` for all ``writes``; sets ``written`` on those written.
        ``only_if_known``: a row is updated only if its version is still the one of ``base``."""
        column, s = _KEY_COLUMN[table], self.schema
        kind = "text" if self.serializer == "json" else "bytea"
        rows = []
        if only_if_known:
            known, new = [w for w in writes if w.base], [w for w in writes if not w.base]
            if known:  # updated where the version is still the one known; a row another process
                # deleted meanwhile is not there: not written (merged with {}, it keeps only
                # what this process changed)
                rows += await conn.fetch(
                    f"UPDATE {s}.{table} AS t SET data = u.data, version = (random() * 9e18)::bigint"
                    f" FROM unnest($1::bigint[], $2::{kind}[], $3::bigint[]) AS u(id, data, version)"
                    f" WHERE t.{column} = u.id AND t.version = u.version RETURNING t.{column}, t.version",
                    [w.key for w in known], [w.params[1] for w in known], [w.base[0] for w in known])
            if new:  # inserted where no other process has made the row meanwhile
                rows += await conn.fetch(
                    f"INSERT INTO {s}.{table} ({column}, data, version) SELECT * FROM unnest($1::bigint[],"
                    f" $2::{kind}[], $3::bigint[]) ON CONFLICT ({column}) DO NOTHING"
                    f" RETURNING {column}, version",
                    [w.key for w in new], [w.params[1] for w in new], [_new_version() for _ in new])
        else:
            rows = await conn.fetch(
                f"INSERT INTO {s}.{table} ({column}, data, version) SELECT * FROM unnest($1::bigint[],"
                f" $2::{kind}[], $3::bigint[]) ON CONFLICT ({column}) DO UPDATE SET data = excluded.data,"
                f" version = excluded.version RETURNING {column}, version",
                [w.key for w in writes], [w.params[1] for w in writes], [_new_version() for _ in writes])
        written = dict(rows)
        for write in writes:
            if write.key in written:
                write.written = (written[write.key], write.params[1])

    def _params(self, write: _Write) -> tuple[Any, ...]:
        if write.table == "conversations":
            name, key = write.key
            known = () if write.base is None else (self._encode(write.base[1], write.what),)
            if write.value is _DELETE:
                return (name, key, *known)
            return (name, key, self._encode(write.value, write.what), *known)
        if write.value is _DELETE:
            return (write.key,)
        return (write.key, self._encode(write.value, write.what))

    def _statement(self, write: _Write) -> str:
        s = self.schema
        if write.table == "conversations":
            # written only over the state this process knew: another process may have moved the
            # conversation on since (e.g. PTB's timeout job of an earlier step, on this process,
            # ending a form that went on elsewhere); the next update reads the state anyway
            known = write.base is not None
            if write.value is _DELETE:
                return (f"DELETE FROM {s}.conversations WHERE name = $1 AND key = $2"
                        + (" AND state = $3" if known else ""))
            return (f"INSERT INTO {s}.conversations (name, key, state) VALUES ($1, $2, $3) ON CONFLICT"
                    " (name, key) " + ("DO UPDATE SET state = excluded.state WHERE conversations.state = $4"
                                       if known else "DO NOTHING"))
        column = _KEY_COLUMN[write.table]
        if write.value is _DELETE:
            return f"DELETE FROM {s}.{write.table} WHERE {column} = $1"
        return (f"INSERT INTO {s}.{write.table} ({column}, data, version) VALUES ($1, $2, $3)"
                f" ON CONFLICT ({column}) DO UPDATE SET data = excluded.data, version = excluded.version")

    async def _write(self, table: str, key: Any, value: Any, what: str | None = None) -> None:
        """Queue one row's write (``_DELETE``: its deletion) for the current save round."""
        row = (table, key)
        if self.lazy and table in ("user_data", "chat_data") and value is not _DELETE:
            check_lazy({}, value, describe_row(table, key))  # merged: a dict
        if row in self._pending and value is not _DELETE:  # lazy, an id never loaded: PTB's data
            value = shallow_copy(value)  # lacks the stored keys earlier saves merged in - as live would
            for change in self._pending[row]:
                change.apply_to(value)
        write = _Write(table, key, value, what or (describe_row(table, key) if table in _KEY_COLUMN else ""))
        # what the row was when PTB copied the data for this round (the base of the merge)
        write.base = self._known.get(row)
        if self._round is not None:
            write.base = self._round.get(row, write.base)
        if value is _DELETE and table != "conversations":  # a drop (forget, migration)
            self._queued_drops.discard(row)  # (PTB has handed it over)
            if row in self._dropped:  # carried out already, by the isolated update in which PTB
                self._dropped.discard(row)  # dropped it: the row may hold newer data by now
                return
            await self._submit(write)
            return
        if write.base is _SKIP:  # an isolated update was running on the row when PTB copied it
            return
        if row in self._managed:
            # The isolation wrote this row at the end of every update that changed it. PTB's copy
            # is news only if it differs from the row as it was when copied, and no isolated
            # update was running on it then or has run since (that one wrote everything newer).
            # (A conversation that ended here may have started again on another process.)
            if self._held.get(row):
                return
            stored = write.base[1] if write.base is not None else None
            if table == "conversations" and same(None if value is _DELETE else value, stored):
                return
            if table != "conversations" and stored is not None and self._encode(value, write.what) == stored:
                return
        await self._submit(write)

    # ---- reading --------------------------------------------------------------------------------
    async def _load_table(self, table: str) -> dict[int, Any]:
        pool = await self._connect()
        column = _KEY_COLUMN[table]
        if self.lazy and table in ("user_data", "chat_data"):  # an id is loaded at its first refresh
            for row in [row for row in (*self._known, *self._pending) if row[0] == table]:
                self._known.pop(row, None)  # (known from before a flush(): not in the new live data)
                self._pending.pop(row, None)
            return {}
        rows = await pool.fetch(f"SELECT {column}, data, version FROM {self.schema}.{table}")
        loaded = {}
        for key, data, version in rows:
            loaded[key] = self._decode(data, describe_row(table, key))
            self._known[table, key] = (version, data)
            if table != "callback_data":
                self._live[table, key] = loaded[key]  # PTB's live data from now on
        return loaded

    async def stored_ids(self, table: Literal["user_data", "chat_data"]) -> list[int]:
        """The ids of every stored user (``"user_data"``) or chat (``"chat_data"``), loaded or
        not: what a broadcast iterates over when ``lazy=True``."""
        if table not in ("user_data", "chat_data"):
            raise ValueError(f"stored_ids() takes 'user_data' or 'chat_data', not {table!r}")
        pool = await self._connect()
        return [key for key, in await pool.fetch(f"SELECT {_KEY_COLUMN[table]} FROM {self.schema}.{table}")]

    async def get_user_data(self) -> dict[int, Any]:
        """All users' data, loaded once by ``Application.initialize()`` (none with ``lazy=True``)."""
        return await self._load_table("user_data")

    async def get_chat_data(self) -> dict[int, Any]:
        """All chats' data, loaded once by ``Application.initialize()`` (none with ``lazy=True``)."""
        return await self._load_table("chat_data")

    async def get_bot_data(self) -> dict[Any, Any]:
        """The bot's data (``{}`` if none is stored)."""
        data: dict[Any, Any] = (await self._load_table("bot_data")).get(0, {})
        self._live["bot_data", 0] = data
        return data

    async def get_callback_data(self) -> Any:
        """The callback data cache as PTB stored it, or ``None``."""
        return (await self._load_table("callback_data")).get(0)

    async def get_conversations(self, name: str) -> dict[tuple[int | str, ...], object]:
        """The states of the conversations of the ``ConversationHandler`` called ``name``."""
        pool = await self._connect()
        rows = await pool.fetch(f"SELECT key, state FROM {self.schema}.conversations WHERE name = $1", name)
        conversations: dict[tuple[int | str, ...], object] = {}
        for key, state in rows:
            conversations[tuple(json.loads(key))] = self._decode(state, f"conversation {name!r} key {key}")
            self._known["conversations", (name, key)] = (0, conversations[tuple(json.loads(key))])
        return conversations

    async def update_user_data(self, user_id: int, data: dict[Any, Any]) -> None:
        """Store one user's data (PTB calls this for each changed user at every save)."""
        await self._write("user_data", user_id, data)

    async def update_chat_data(self, chat_id: int, data: dict[Any, Any]) -> None:
        """Store one chat's data (PTB calls this for each changed chat at every save)."""
        await self._write("chat_data", chat_id, data)

    async def update_bot_data(self, data: dict[Any, Any]) -> None:
        """Store the bot's data, merged key by key with other processes' saves."""
        await self._write("bot_data", 0, data)

    async def update_callback_data(self, data: Any) -> None:
        """Store the callback data cache (PTB calls this at every save)."""
        await self._write("callback_data", 0, data)

    async def update_conversation(
        self, name: str, key: tuple[int | str, ...], new_state: object | None
    ) -> None:
        """Store a conversation's state; ``None`` means it ended, so its row is deleted."""
        if any(type(part) not in (int, str) for part in key):
            raise DataNotStorableError(f"conversation {name!r}: key {key!r} has a part that is "
                                       "neither int nor str")
        await self._write("conversations", (name, _conversation_key(key)),
                          _DELETE if new_state is None else new_state,
                          f"the state of conversation {name!r} for key {key!r}")

    async def drop_user_data(self, user_id: int) -> None:
        """Delete a user's row (after ``Application.drop_user_data``)."""
        await self._write("user_data", user_id, _DELETE)

    async def drop_chat_data(self, chat_id: int) -> None:
        """Delete a chat's row (after ``Application.drop_chat_data`` or a migration)."""
        await self._write("chat_data", chat_id, _DELETE)

    async def refresh_user_data(self, user_id: int, user_data: dict[Any, Any]) -> None:
        """Before a handler: another process's changes to this user (the isolation has read the
        row already when it holds this user)."""
        if not self._held.get(("user_data", user_id)):
            await self._refresh("user_data", user_id, user_data)

    async def refresh_chat_data(self, chat_id: int, chat_data: dict[Any, Any]) -> None:
        """Before a handler: another process's changes to this chat."""
        if not self._held.get(("chat_data", chat_id)):
            await self._refresh("chat_data", chat_id, chat_data)

    async def refresh_bot_data(self, bot_data: dict[Any, Any]) -> None:
        """Before a handler: the keys other processes saved since this one last read bot data."""
        await self._refresh("bot_data", 0, bot_data)

    async def _refresh(self, table: str, key: int, live: dict[Any, Any]) -> None:
        """Bring ``live`` up to date with the row, in place: take the top-level keys another process
        changed since this one last read or wrote the row (never keys changed here meanwhile)."""
        before = self._known.get((table, key))
        section = _this_update.get()
        if section is not None and section.conn is not None and section.task is asyncio.current_task():
            if table == "bot_data" and section.bot_data_read:
                return  # the isolated update read it with its own rows
            conn = section.conn  # (waiting for another connection while holding one could leave
        else:  # every update of the process waiting for the others)
            conn = await self._connect()
        found = await conn.fetchrow(
            f"SELECT version, CASE WHEN version = $2 THEN NULL ELSE data END FROM {self.schema}.{table}"
            f" WHERE {_KEY_COLUMN[table]} = $1", key, None if before is None else before[0])
        self._take_theirs(table, key, live, before, None if found is None else (found[0], found[1]))

    def _take_theirs(self, table: str, key: Any, live: dict[Any, Any], before: tuple[int, Any] | None,
                     found: tuple[int, Any] | None) -> None:
        """Merge a row read as ``found`` ((version, data), data ``None`` if unchanged since
        ``before``; ``None`` if there is no row) into ``live``."""
        row = (table, key)
        self._live[row] = live
        for change in self._pending.pop(row, ()):  # lazy: keys saves kept before the first load
            change.apply_to(live)
        if self._known.get(row) is not before:
            return  # a save wrote this row meanwhile: what was read is not news
        if (found is not None and found[1] is None) or (found is None and before is None):
            return  # unchanged, or nothing stored and nothing known
        what = describe_row(table, key)
        theirs = self._decode(found[1], what) if found is not None else {}
        base = self._decode(before[1], what) if before else {}
        if isinstance(theirs, dict):
            for name, value in merge(live, theirs, base).items():
                put(live, name, value)
        self._note_known(row, found)

    def _note_known(self, row: tuple[str, Any], value: tuple[int, Any] | None) -> None:
        """Change what this process knows of ``row``; a save round in progress keeps the old value
        (what PTB's copy of the data was made from)."""
        if self._round is not None and row not in self._round:
            self._round[row] = self._known.get(row)
        if value is None:
            self._known.pop(row, None)
        else:
            self._known[row] = value

    def _lock_of(self, row: tuple[str, Any]) -> int:
        table, key = row
        return _lock_key(self.schema, table, key)

    async def flush(self) -> None:
        """Finish queued writes, then close the pool (PTB's last call, in ``shutdown()``).
        The instance stays usable: the next call connects again."""
        await asyncio.shield(self._finish_and_close())

    async def _finish_and_close(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])
        await self._write_round([])  # what earlier rounds could not write: one more try
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        self._opening = asyncio.Lock()
        self._live = {}  # an Application initialized again loads (and hands over) new live data
        if self._unsaved:
            names = [write.what for write in self._unsaved.values()]
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            raise SaveFailedError(
                f"flush() could not write to PostgreSQL at {safe_dsn(self.dsn)} "
                f"({type(self._last_error).__name__}: {self._last_error}). Unsaved: "
                f"{', '.join(names[:10])}{more}. They are kept in this PostgresPersistence: call "
                "flush() again once the server is back.") from self._last_error

    # ---- isolation: one update's user and chat, locked in every process ---------------------------
    @contextlib.asynccontextmanager
    async def isolated(
        self, application: Application[Any, Any, Any, Any, Any, Any], user_id: int | None = None,
        chat_id: int | None = None, update: object = None,
    ) -> AsyncIterator[None]:
        """Hold ``user_id`` and ``chat_id`` in every process while the block runs: their rows are
        read fresh into ``application``'s live data first, and written before the locks go."""
        rows = [(table, key) for table, key in (("chat_data", chat_id), ("user_data", user_id))
                if key is not None and getattr(self.store_data, table)]
        states = _conversation_states(application, update) if isinstance(update, Update) else []
        if not rows and not states:
            yield
            return
        held = [*rows, *(("conversations", (name, _conversation_key(key))) for name, _, key in states)]
        lock_keys = sorted({_lock_key(self.schema, table, key) for table, key in
                            (("chat_data", chat_id), ("user_data", user_id)) if key is not None})
        outer = _this_update.get()  # (tasks the update's handlers start inherit it: see below)
        inside = outer.lock_keys if outer is not None and outer.conn is not None else frozenset()
        if inside.issuperset(lock_keys):
            yield  # inside an update that holds them (a helper shared with jobs): its rows are
            return  # live already, and written when it ends
        async with contextlib.AsyncExitStack() as stack:
            mine = [key for key in lock_keys if key not in inside]  # (not what the update holds)
            while (busy := self._local.take(mine)) is not None:
                await self._local.wait_for(busy)
            stack.callback(self._local.give_back, mine)
            conn = await self._open_section(stack, mine)
            for row in held:
                self._held[row] = self._held.get(row, 0) + 1
                self._managed.add(row)
            errors: list[Exception] = []
            section = _Section(conn, bot_data_read=self.store_data.bot_data, lock_keys=frozenset(lock_keys),
                               task=asyncio.current_task())
            token = _this_update.set(section)
            try:
                try:
                    hold = await self._enter(conn, application, rows, states)
                    try:
                        yield
                    finally:
                        errors = await self._exit(conn, hold)
                except BaseException as exc:
                    await _roll_back(conn)
                    if isinstance(exc, asyncpg.InterfaceError) and "released back to the pool" in str(exc):
                        # asyncpg's pool takes back a connection the server closed: say that
                        raise DatabaseUnreachableError(
                            f"PostgreSQL at {safe_dsn(self.dsn)} closed the connection of an update "
                            "while it ran (a restart, a failover, an administrator). Its changes are "
                            "kept in memory and written by the next save.") from exc
                    raise
                await conn.execute("COMMIT")  # releases the advisory locks
                for row, value in hold.written:  # (not before: a failed commit wrote nothing, and
                    self._note_known(row, value)  # the periodic save writes what is not known)
                    if value is None and row in self._queued_drops:  # PTB's next save round
                        self._dropped.add(row)  # brings this drop again: see _write
            finally:
                section.conn = None
                _this_update.reset(token)
                for row in held:
                    self._held[row] -= 1
                    if not self._held[row]:
                        del self._held[row]
                    if self._round is not None:
                        self._round[row] = _SKIP
        if errors:
            raise errors[0]

    async def _open_section(self, stack: contextlib.AsyncExitStack, lock_keys: list[int]) -> Any:
        """A pooled connection in a transaction holding the advisory locks ``lock_keys``. A server
        that does not answer is waited for, up to ``wait_for_server`` seconds."""
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self.wait_for_server, 0.05
        while True:
            conn = None
            try:
                pool = await self._connect()
                conn = await pool.acquire()
                await _lock_all(conn, lock_keys)
                stack.push_async_callback(pool.release, conn)
                return conn
            except BaseException as exc:
                if conn is not None:  # whatever happened (cancelled while waiting for a lock, a
                    # lock_timeout...): the pool gets it back, rolled back, its locks released
                    await asyncio.shield(pool.release(conn))
                if not isinstance(exc, _UNREACHABLE):
                    raise
                if loop.time() + delay > deadline:
                    raise DatabaseUnreachableError(
                        f"PostgreSQL at {safe_dsn(self.dsn)} did not answer for {self.wait_for_server} s "
                        f"({type(exc).__name__}: {exc}), so an update could not be handled. Check that "
                        "the server runs and can be reached.") from exc
                if delay == 0.05:  # once per update
                    _log.warning("PostgreSQL at %s does not answer (%s); an update waits for it, up "
                                 "to %s s", safe_dsn(self.dsn), exc, self.wait_for_server)
                await asyncio.sleep(delay)  # a back-off, not a measurement
                delay = min(delay * 2, 2.0)

    async def _enter(self, conn: Any, application: Application[Any, Any, Any, Any, Any, Any],
                     rows: list[tuple[str, int]], states: list[tuple[str, Any, _Key]]) -> _Hold:
        """Read the update's rows, bot data (if another process saved it since) and conversation
        states in one query, into the live data; the locks are held already."""
        hold, s = _Hold(conn), self.schema
        live = {row: (application.user_data if row[0] == "user_data" else application.chat_data)[row[1]]
                for row in rows}
        if self.store_data.bot_data:
            live["bot_data", 0] = application.bot_data
        before = {row: self._known.get(row) for row in live}
        parts, args = [], list[Any]()
        for table, key in live:
            known = before[table, key]
            args += [key, None if known is None else known[0]]
            parts.append(f"SELECT '{table}', NULL, version, CASE WHEN version = ${len(args)} THEN NULL"
                         f" ELSE data END FROM {s}.{table} WHERE {_KEY_COLUMN[table]} = ${len(args) - 1}")
        if states:
            args += [[name for name, _, _ in states], [_conversation_key(key) for _, _, key in states]]
            parts.append(f"SELECT 'conversations', name || ' ' || key, 0, state FROM {s}.conversations"
                         f" WHERE (name, key) IN (SELECT * FROM unnest(${len(args) - 1}::text[],"
                         f" ${len(args)}::text[]))")
        found = {(kind, name): (version, data) for kind, name, version, data in
                 await conn.fetch(" UNION ALL ".join(parts), *args)}
        for (table, key), data in live.items():
            self._take_theirs(table, key, data, before[table, key], found.get((table, None)))
            if table != "bot_data":
                mapping = application.user_data if table == "user_data" else application.chat_data
                hold.rows[table, key] = (mapping, data)
        for name, conversations, conv_key in states:
            stored_key = _conversation_key(conv_key)
            stored = found.get(("conversations", f"{name} {stored_key}"))
            what = f"conversation {name!r} key {conv_key!r}"
            state = None if stored is None else self._decode(stored[1], what)
            row = ("conversations", (name, stored_key))
            known = None if self._known.get(row) is None else self._known[row][1]
            # the stored state wins, unless it is still the one this process knew and this
            # process's own is newer (a step whose commit failed): that one is kept, and written
            if not same(state, known) or same(_get_state(conversations, conv_key), known):
                _set_state(conversations, conv_key, state)
            self._note_known(row, None if state is None else (0, state))
            hold.conversations.append((name, conversations, conv_key))
        return hold

    async def _exit(self, conn: Any, hold: _Hold) -> list[Exception]:
        """Write the held rows and conversation states that changed. A row that cannot be stored
        fails alone (returned), keeping what was stored before; the others are written. What was
        written is noted in ``hold.written``, to be known once the transaction has committed."""
        s, errors = self.schema, list[Exception]()
        for (table, key), (mapping, live) in hold.rows.items():
            if mapping.get(key) is not live:  # dropped meanwhile (forget): the row goes too
                await conn.execute(f"DELETE FROM {s}.{table} WHERE {_KEY_COLUMN[table]} = $1", key)
                hold.written.append(((table, key), None))
                # ... unless it moved to another id (migrate_chat_data): then it is written there
                moved = next((new for new, data in mapping.items() if data is live), None)
                if moved is None:
                    continue
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(s, table, moved))
                key = moved
            try:
                data = self._encode(live, describe_row(table, key))
            except DataNotStorableError as exc:
                errors.append(exc)
                continue
            known = self._known.get((table, key))
            if known is not None and known[1] == data:
                continue
            version, column = _new_version(), _KEY_COLUMN[table]
            await conn.execute(
                f"INSERT INTO {s}.{table} ({column}, data, version) VALUES ($1, $2, $3) ON CONFLICT"
                f" ({column}) DO UPDATE SET data = excluded.data, version = excluded.version",
                key, data, version)
            hold.written.append(((table, key), (version, data)))
        for name, conversations, conv_key in hold.conversations:
            row = ("conversations", (name, _conversation_key(conv_key)))
            state = _get_state(conversations, conv_key)
            known = self._known.get(row)
            if same(state, known[1] if known else None):
                continue
            if state is None:
                await conn.execute(f"DELETE FROM {s}.conversations WHERE name = $1 AND key = $2", *row[1])
            else:
                try:
                    stored = self._encode(state, f"the state of conversation {name!r} for key {conv_key!r}")
                except DataNotStorableError as exc:
                    errors.append(exc)
                    continue
                await conn.execute(
                    f"INSERT INTO {s}.conversations (name, key, state) VALUES ($1, $2, $3)"
                    " ON CONFLICT (name, key) DO UPDATE SET state = excluded.state", *row[1], stored)
            hold.written.append((row, None if state is None else (0, state)))
        return errors


async def _roll_back(conn: Any) -> None:
    """After a failed update: roll its transaction back, unless its connection is gone (then the
    server has rolled it back; the update's own error says what happened)."""
    try:
        await conn.execute("ROLLBACK")
    except (asyncpg.InterfaceError, *_UNREACHABLE) as exc:
        _log.debug("no ROLLBACK: the connection is gone (%s)", exc)


async def _lock_all(conn: Any, lock_keys: list[int]) -> None:
    """``BEGIN``, and the advisory locks ``lock_keys``: all of them, or - while another session
    holds one - none, waiting for each alone before trying again. A section never holds one lock
    while it waits for another, so no wait can close a circle: not between updates, and not with
    an ``isolated()`` inside an update, which does hold its update's locks while it waits."""
    keys = ",".join(str(int(key)) for key in lock_keys)  # (ints this file computes: safe in SQL)
    # one round trip; when a lock is held elsewhere, 1 / 0 stops it (plain SQL has no `raise`)
    try_all = (f"BEGIN; SELECT 1 / bool_and(pg_try_advisory_xact_lock(k))::int"
               f" FROM unnest('{{{keys}}}'::bigint[]) AS k")
    while True:
        try:
            await conn.execute(try_all)
            return
        except asyncpg.exceptions.DivisionByZeroError:
            await conn.execute("ROLLBACK")  # (the locks it did get go too)
        for key in lock_keys:
            while True:  # the update waits as long as the one holding the id runs: a server's
                try:  # lock_timeout ends one wait, and it waits again
                    await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({int(key)}); ROLLBACK")
                    break
                except asyncpg.exceptions.LockNotAvailableError:
                    await conn.execute("ROLLBACK")


@contextlib.asynccontextmanager
async def _locked_transaction(conn: Any, lock_keys: list[int]) -> AsyncIterator[None]:
    """A transaction holding the advisory locks ``lock_keys`` until it ends."""
    await _lock_all(conn, lock_keys)
    try:
        yield
    except BaseException:
        await _roll_back(conn)
        raise
    await conn.execute("COMMIT")


class IsolatingApplication(Application):  # type: ignore[type-arg]
    """An ``Application`` whose updates run isolated when its persistence is a
    :class:`PostgresPersistence`: the update's user and chat are locked in every process, their
    rows and conversation states read fresh before the handlers and written after them.

    Pass it to the builder: ``ApplicationBuilder().application_class(IsolatingApplication)``.
    Every update goes through :meth:`process_update`, from polling, ``run_webhook``, the
    ``update_queue`` or a direct call, so all of them are isolated.
    """

    async def process_update(self, update: object) -> None:
        persistence = self.persistence
        if not isinstance(persistence, PostgresPersistence) or not isinstance(update, Update):
            await super().process_update(update)
            return
        user = update.effective_user.id if update.effective_user else None
        chat = update.effective_chat.id if update.effective_chat else None
        try:
            async with persistence.isolated(self, user_id=user, chat_id=chat, update=update):
                await super().process_update(update)
        except (DataNotStorableError, DatabaseFileError, PostgresSchemaError, asyncpg.PostgresError,
                *_UNREACHABLE) as exc:
            await self.process_error(update, exc)  # (unreachable: after waiting wait_for_server)

    def isolated(self, user_id: int | None = None, chat_id: int | None = None) -> Any:
        """``async with app.isolated(user_id=..., chat_id=...):`` - change that user's or chat's
        data safely outside an update (a job, an admin command about another user)."""
        persistence = self.persistence
        if not isinstance(persistence, PostgresPersistence):
            return contextlib.nullcontext()
        return persistence.isolated(self, user_id=user_id, chat_id=chat_id)

    def drop_user_data(self, user_id: int) -> None:
        """PTB's, noting the drop it queues for the next save round (see ``PostgresPersistence``)."""
        super().drop_user_data(user_id)
        if isinstance(self.persistence, PostgresPersistence):
            self.persistence._queued_drops.add(("user_data", user_id))

    def drop_chat_data(self, chat_id: int) -> None:
        """PTB's, noting the drop it queues (also for ``migrate_chat_data``)."""
        super().drop_chat_data(chat_id)
        if isinstance(self.persistence, PostgresPersistence):
            self.persistence._queued_drops.add(("chat_data", chat_id))

    async def update_persistence(self) -> None:
        """PTB's save round; notes what the rows were when PTB copies the data (at once, before
        any await), so rows written by isolated updates meanwhile are not written back stale."""
        persistence = self.persistence
        if not isinstance(persistence, PostgresPersistence) or persistence._round is not None:
            await super().update_persistence()
            return
        persistence._round = {row: _SKIP for row in persistence._held}  # in flight: skip
        try:
            await super().update_persistence()
        finally:
            persistence._round = None


# --------------------------------------------------------------------------------------------------
# conversations: the one place that uses a private attribute of PTB
# --------------------------------------------------------------------------------------------------
def _conversation_states(
    application: Application[Any, Any, Any, Any, Any, Any], update: Update
) -> list[tuple[str, Any, _Key]]:
    """``(name, states, key)`` of every persistent top-level ``ConversationHandler`` of
    ``application`` for ``update``'s (chat, user) key. ``states`` is the handler's dict of states
    (``ConversationHandler._conversations``: PTB has no public way to set one conversation's
    state; ``tests/test_stage9_several_processes.py`` fails loudly if PTB renames or changes it)."""
    found: list[tuple[str, Any, _Key]] = []
    for handlers in application.handlers.values():
        for handler in handlers:
            if not (isinstance(handler, ConversationHandler) and handler.persistent and handler.name):
                continue
            if handler.per_message:
                continue  # keyed by message: loaded once at start-up, as PTB does
            key: list[int | str] = []
            if handler.per_chat:
                if update.effective_chat is None:
                    continue
                key.append(update.effective_chat.id)
            if handler.per_user:
                if update.effective_user is None:
                    continue
                key.append(update.effective_user.id)
            found.append((handler.name, handler._conversations, tuple(key)))
    return found


def _set_state(states: Any, key: _Key, state: object) -> None:
    """Put a state read from the database into a handler's states, without marking it as written
    (PTB would save it again)."""
    if state is None:
        states.data.pop(key, None)
    else:
        states.update_no_track({key: state})


def _get_state(states: Any, key: _Key) -> object:
    state = states.get(key)
    resolve = getattr(state, "resolve", None)  # a PendingState of a block=False handler
    if resolve is not None:
        state = resolve() if state.done() else state.old_state
    return state


def _conversation_key(key: Iterable[int | str]) -> str:
    return json.dumps(list(key), ensure_ascii=False)
