"""The benchmark's contenders: the workload, and every persistence behind one small interface.

The workload is the stage 1 message logger as ``Application`` drives it: N stored chats of 20 short
messages each, then save rounds of K dirty chats (see ``benchmarks/bench_persistence.py``). The
*floor* is the least any persistence must do: the same rows encoded with the same JSON encoding
(``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``, what ``SQLitePersistence`` writes for
plain data) and written by raw ``aiosqlite`` ``executemany`` in one transaction, on a file with the
same PRAGMAs as ``SQLitePersistence`` (WAL, ``synchronous=NORMAL``, ``secure_delete``, ``busy_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persistence.sqlite import decode_json, encode_json

MESSAGES_PER_CHAT = 20
FIRST_CHAT_ID = 10_000_001


@dataclass(frozen=True)
class Spec:
    """A contender as the tables show it."""

    key: str
    label: str
    note: str = ""


CONTENDERS = [
    Spec("pickle", "PicklePersistence"),
    Spec("pickle_on_flush", "PicklePersistence(on_flush=True) †",
         "† writes nothing during the save round: everything since start-up is only written by "
         "`flush()` at shutdown, so a crash or a kill loses it all. Not crash-safe."),
    Spec("dict", "DictPersistence + its *_json",
         "DictPersistence keeps data in memory; its round includes producing `chat_data_json`, "
         "`user_data_json` and `bot_data_json` - the text a bot would have to save somewhere. "
         "Its file size is the size of that text."),
    Spec("article", "ArticleSqlitePersistence (stage 2)",
         "The tutorial's class from `persistence/article.py`, broken on purpose: blocking `sqlite3` "
         "and a full-table scan per stored message. It stores chat_data only (bot/user data switched "
         "off, so Application does not call those). Its store was seeded with the same rows "
         "inserted directly (seeding through the class is itself quadratic)."),
    Spec("sqlite_json", "SQLitePersistence(serializer=\"json\")"),
    Spec("sqlite_pickle", "SQLitePersistence(serializer=\"pickle\")"),
    Spec("sqlite_shared", "SharedSQLitePersistence(serializer=\"json\")",
         "SharedSQLitePersistence: SQLitePersistence plus the merge of other programs' changes; it "
         "keeps each row's stored form in memory, compressed (the base of its merges)."),
    Spec("floor", "floor: raw aiosqlite executemany",
         "The floor: `json.dumps` of each dirty chat (the encoding SQLitePersistence uses for plain "
         "data) and one `executemany` upsert (plus the bot_data row) in one transaction, on a file "
         "with SQLitePersistence's PRAGMAs (WAL, `synchronous=NORMAL`, `secure_delete`, "
         "`busy_timeout`); loading is one SELECT and `json.loads` per row."),
    Spec("floor_ptb", "floor, called as PTB calls a persistence",
         "The floor behind PTB's interface: the same encoding and transaction, but reached the way "
         "`Application.update_persistence()` reaches any persistence - one `update_chat_data` "
         "coroutine per dirty chat plus `update_bot_data`, run by `asyncio.gather`; the first call "
         "starts the round's writer, all wait for its commit. What no persistence can go below."),
    Spec("floor_exact", "floor, called as PTB calls it, exact types",
         "The floor as PTB calls it, storing what `SQLitePersistence` promises: each value encoded "
         "by `persistence.sqlite.encode_json` (which checks that the value comes back with its exact "
         "types - a tuple stays a tuple, an int key an int - and tags it if not) instead of "
         "`json.dumps`, which silently turns tuples into lists and int keys into strings; loading "
         "uses `decode_json`. What no persistence that keeps exact types can go below."),
]
SPECS = {spec.key: spec for spec in CONTENDERS}
PICKLE, FLOOR, FLOOR_PTB, FLOOR_EXACT, TARGET = "pickle", "floor", "floor_ptb", "floor_exact", "sqlite_json"


# ------------------------------------------------------------------------------------------------
# the workload
# ------------------------------------------------------------------------------------------------
def make_message(chat_id: int, seq: int) -> dict[str, Any]:
    """One logged message, as the stage 1 logger stores it."""
    return {"message": f"note {seq} in chat {chat_id}: see you at 6",
            "message_ts": 1_700_000_000.25 + seq * 1.5}


def make_chats(n: int) -> dict[int, dict[str, Any]]:
    """``n`` chats of ``MESSAGES_PER_CHAT`` messages each, keyed by chat id."""
    return {chat_id: {"messages": [make_message(chat_id, seq) for seq in range(MESSAGES_PER_CHAT)]}
            for chat_id in range(FIRST_CHAT_ID, FIRST_CHAT_ID + n)}


class StallMeter:
    """Measures the longest gap between ticks of a 1 ms ticker task while the block runs."""

    def __init__(self, period: float = 0.001) -> None:
        self.period = period
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.period)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    async def __aenter__(self) -> StallMeter:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(self.period * 2)  # the ticker is running before the measured block
        self.worst = 0.0
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.sleep(self.period * 3)  # a tick after the block closes its last gap
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# ------------------------------------------------------------------------------------------------
# the contenders, each behind the same small interface (used in the child process)
# ------------------------------------------------------------------------------------------------
class Contender:
    """``seed`` a store of N chats, ``start`` a fresh instance over it (as ``initialize()`` loads),
    ``save`` one round, ``stop``. ``size`` is the store's size on disk in bytes."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    async def seed(self, chats: dict[int, dict]) -> None:
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError

    async def start(self) -> dict[int, dict]:
        raise NotImplementedError

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def files_size(self, *paths: Path) -> int:
        return sum(path.stat().st_size for path in paths if path.exists())


def _bot() -> Any:
    """An ``ExtBot`` as ``ApplicationBuilder`` would hand to ``set_bot`` (no network used)."""
    from telegram.ext import ExtBot

    from bots.offline import OFFLINE_TOKEN
    return ExtBot(OFFLINE_TOKEN)


class PersistenceContender(Contender):
    """A ``BasePersistence`` driven the way ``Application`` drives it."""

    def __init__(self, workdir: Path, factory: Callable[[], Any]) -> None:
        super().__init__(workdir)
        self.factory = factory
        self.bot = _bot()
        self.persistence: Any = None

    def new(self) -> Any:
        persistence = self.factory()
        persistence.set_bot(self.bot)
        return persistence

    async def start(self) -> dict[int, dict]:
        persistence = self.new()
        store = persistence.store_data
        chat_data: dict[int, dict] = {}
        if store.user_data:
            await persistence.get_user_data()
        if store.chat_data:
            chat_data = await persistence.get_chat_data()
        if store.bot_data:
            await persistence.get_bot_data()
        self.persistence = persistence
        return chat_data

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        persistence = self.persistence
        coroutines = [persistence.update_chat_data(chat_id, data) for chat_id, data in dirty.items()]
        if persistence.store_data.bot_data:
            coroutines.append(persistence.update_bot_data(bot_data))
        for result in await asyncio.gather(*coroutines, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def stop(self) -> None:
        if self.persistence is not None:
            result = self.persistence.flush()
            if inspect.isawaitable(result):
                await result
            self.persistence = None


class PickleContender(PersistenceContender):
    def __init__(self, workdir: Path, on_flush: bool = False) -> None:
        from telegram.ext import PicklePersistence

        self.path = workdir / "bot.pickle"
        super().__init__(workdir, lambda: PicklePersistence(self.path, on_flush=on_flush))

    async def seed(self, chats: dict[int, dict]) -> None:
        from telegram.ext import PicklePersistence

        writer = PicklePersistence(self.path, on_flush=True)  # one file write, in flush()
        writer.set_bot(self.bot)
        await writer.get_chat_data()
        for chat_id, data in chats.items():
            await writer.update_chat_data(chat_id, data)
        await writer.update_bot_data({"started": 1})
        await writer.flush()

    def size(self) -> int:
        return self.files_size(self.path)


class DictContender(PersistenceContender):
    def __init__(self, workdir: Path) -> None:
        from telegram.ext import DictPersistence

        self.saved: dict[str, str] = {}
        super().__init__(workdir, lambda: DictPersistence(
            user_data_json=self.saved["user"], chat_data_json=self.saved["chat"],
            bot_data_json=self.saved["bot"]))

    def _produce_json(self, persistence: Any) -> None:
        """What a bot using DictPersistence must produce to save its data."""
        self.saved = {"user": persistence.user_data_json, "chat": persistence.chat_data_json,
                      "bot": persistence.bot_data_json}

    async def seed(self, chats: dict[int, dict]) -> None:
        from telegram.ext import DictPersistence

        writer = DictPersistence()
        await writer.get_user_data()
        for chat_id, data in chats.items():
            await writer.update_chat_data(chat_id, data)
        await writer.update_bot_data({"started": 1})
        self._produce_json(writer)

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        await super().save(dirty, bot_data)
        self._produce_json(self.persistence)

    def size(self) -> int:
        return sum(len(text.encode()) for text in self.saved.values())

    async def stop(self) -> None:
        if self.persistence is not None:
            self._produce_json(self.persistence)
        await super().stop()


class SQLiteContender(PersistenceContender):
    def __init__(self, workdir: Path, serializer: str, shared: bool = False) -> None:
        from persistence.shared import SharedSQLitePersistence
        from persistence.sqlite import SQLitePersistence

        self.path = workdir / "bot.sqlite3"
        cls = SharedSQLitePersistence if shared else SQLitePersistence
        super().__init__(workdir, lambda: cls(self.path, serializer=serializer))

    async def seed(self, chats: dict[int, dict]) -> None:
        writer = self.new()
        await asyncio.gather(*(writer.update_chat_data(chat_id, data) for chat_id, data in chats.items()),
                             writer.update_bot_data({"started": 1}))
        await writer.flush()

    def size(self) -> int:
        return self.files_size(*(Path(f"{self.path}{suffix}") for suffix in ("", "-wal", "-shm")))


class ArticleContender(PersistenceContender):
    def __init__(self, workdir: Path) -> None:
        from persistence.article import ArticleSqlitePersistence

        self.path = workdir / "demo.db"
        super().__init__(workdir, lambda: ArticleSqlitePersistence(name=str(self.path)))

    async def seed(self, chats: dict[int, dict]) -> None:
        from persistence.article import create_article_table

        create_article_table(self.path)
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            connection.executemany(
                "INSERT INTO chat_data (chat_id, message_ts, message) VALUES (?, ?, ?)",
                ((chat_id, message["message_ts"], message["message"])
                 for chat_id, data in chats.items() for message in data["messages"]))
            connection.commit()

    def size(self) -> int:
        return self.files_size(self.path, Path(f"{self.path}-journal"))


FLOOR_UPSERT = ("INSERT INTO {table} ({column}, data) VALUES (?, ?)"
                " ON CONFLICT ({column}) DO UPDATE SET data = excluded.data")


class FloorContender(Contender):
    """The same JSON rows, written with nothing but one aiosqlite transaction."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.path = workdir / "floor.sqlite3"
        self.db: Any = None

    @staticmethod
    def dumps(data: Any) -> str:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def loads(text: str) -> Any:
        return json.loads(text)

    async def _open(self) -> Any:
        import aiosqlite

        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute("PRAGMA busy_timeout = 5000")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA secure_delete = ON")
        return db

    async def _write(self, db: Any, dirty: dict[int, dict], bot_data: dict) -> None:
        rows = [(chat_id, self.dumps(data)) for chat_id, data in dirty.items()]
        await db.execute("BEGIN IMMEDIATE")
        await db.executemany(FLOOR_UPSERT.format(table="chat_data", column="chat_id"), rows)
        await db.execute(FLOOR_UPSERT.format(table="bot_data", column="id"), (0, self.dumps(bot_data)))
        await db.execute("COMMIT")

    async def seed(self, chats: dict[int, dict]) -> None:
        db = await self._open()
        await db.execute("CREATE TABLE chat_data (chat_id INTEGER PRIMARY KEY, data NOT NULL)")
        await db.execute("CREATE TABLE bot_data (id INTEGER PRIMARY KEY, data NOT NULL)")
        await self._write(db, chats, {"started": 1})
        await db.close()

    def size(self) -> int:
        return self.files_size(*(Path(f"{self.path}{suffix}") for suffix in ("", "-wal", "-shm")))

    async def start(self) -> dict[int, dict]:
        self.db = await self._open()
        async with self.db.execute("SELECT chat_id, data FROM chat_data") as cursor:
            chat_data = {chat_id: self.loads(data) for chat_id, data in await cursor.fetchall()}
        async with self.db.execute("SELECT data FROM bot_data WHERE id = 0") as cursor:
            self.loads((await cursor.fetchone())[0])
        return chat_data

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        await self._write(self.db, dirty, bot_data)

    async def stop(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None


class PTBFloorContender(FloorContender):
    """The floor, called as PTB calls a persistence (see its Spec)."""

    async def save(self, dirty: dict[int, dict], bot_data: dict) -> None:
        rows: dict[str, list[tuple[int, str]]] = {"chat_data": [], "bot_data": []}
        committed = asyncio.get_running_loop().create_future()
        writer: list[asyncio.Task] = []

        async def write_round() -> None:
            await asyncio.sleep(0)  # the round's other calls join first
            await self.db.execute("BEGIN IMMEDIATE")
            await self.db.executemany(FLOOR_UPSERT.format(table="chat_data", column="chat_id"),
                                      rows["chat_data"])
            await self.db.executemany(FLOOR_UPSERT.format(table="bot_data", column="id"), rows["bot_data"])
            await self.db.execute("COMMIT")
            committed.set_result(None)

        async def update(table: str, key: int, data: dict) -> None:
            rows[table].append((key, self.dumps(data)))
            if not writer:
                writer.append(asyncio.create_task(write_round()))
            await committed

        await asyncio.gather(*[update("chat_data", chat_id, data) for chat_id, data in dirty.items()],
                             update("bot_data", 0, bot_data))


class ExactFloorContender(PTBFloorContender):
    """The floor as PTB calls it, keeping exact types (see its Spec)."""

    @staticmethod
    def dumps(data: Any) -> str:
        return encode_json(data, "a chat")

    @staticmethod
    def loads(text: str) -> Any:
        return decode_json(text, "a chat")


def make_contender(key: str, workdir: Path) -> Contender:
    factories: dict[str, Callable[[], Contender]] = {
        "pickle": lambda: PickleContender(workdir),
        "pickle_on_flush": lambda: PickleContender(workdir, on_flush=True),
        "dict": lambda: DictContender(workdir),
        "article": lambda: ArticleContender(workdir),
        "sqlite_json": lambda: SQLiteContender(workdir, "json"),
        "sqlite_pickle": lambda: SQLiteContender(workdir, "pickle"),
        "sqlite_shared": lambda: SQLiteContender(workdir, "json", shared=True),
        "floor": lambda: FloorContender(workdir),
        "floor_ptb": lambda: PTBFloorContender(workdir),
        "floor_exact": lambda: ExactFloorContender(workdir),
    }
    return factories[key]()


