"""Several processes of one bot: the worker loop, the router that feeds them, the stage 9 demo.

A **worker** (``DATABASE_URL=... python -m bots.stage9_several_processes --worker NAME``) is one bot
process: the stage's Application over ``PostgresPersistence``, started as ``run_webhook`` would
start it. It reads updates, one JSON object per line, from its standard input and puts them on the
Application's ``update_queue`` - the very path webhook and polling updates take. Offline, every
message the bot sends is written to standard output as a JSON line (``{"worker", "chat_id",
"text"}``); at the end of its input it shuts down (the last save) and writes ``{"worker", "done",
"errors"}`` with every error that reached its error handler.

The **router** starts N workers and sends each update to one of them, at random: the worst case
for a persistence, and what a load balancer without sticky sessions does.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from telegram import Bot, Update
from telegram.ext import Application, ContextTypes

from bots.offline import ALICE, BOB, OfflineBotAPI, User, application_builder, group_chat, message_update
from bots.offline.api import Chat, private_chat
from persistence.postgres import safe_dsn


# ------------------------------------------------------------------------------------------------
# the worker
# ------------------------------------------------------------------------------------------------
class WorkerBotAPI(OfflineBotAPI):
    """The offline Bot API, writing every message the bot sends to standard output."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def _answer_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        print(json.dumps({"worker": self.name, "chat_id": int(params["chat_id"]), "text": params["text"]}),
              flush=True)
        return super()._answer_sendMessage(params)


async def run_worker(stage: ModuleType, dsn: str, name: str, token: str | None = None) -> int:
    """One bot process: updates from standard input onto the Application's ``update_queue``."""
    request = None if token else WorkerBotAPI(name)
    app = stage.build_application(token=token, persistence=stage.make_persistence(dsn), request=request)
    errors: list[str] = []

    async def record(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(f"{type(context.error).__name__}: {context.error}")

    app.add_error_handler(record)
    reader = asyncio.StreamReader(limit=2**24)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with app:  # initialize() ... shutdown(): the last save, then flush()
        await app.start()
        while line := await reader.readline():
            await app.update_queue.put(Update.de_json(json.loads(line), app.bot))
        await app.update_queue.join()
        await app.stop()
    print(json.dumps({"worker": name, "done": True, "errors": errors}), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------
# the router
# ------------------------------------------------------------------------------------------------
@dataclass
class Worker:
    name: str
    process: asyncio.subprocess.Process
    reader: asyncio.Task[None] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


class Router:
    """Starts ``count`` workers of ``stage_module`` and sends updates to them at random."""

    def __init__(self, stage_module: str, dsn: str, count: int, *, seed: int | None = None,
                 on_reply: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.stage_module, self.dsn, self.count = stage_module, dsn, count
        self.random = random.Random(seed)
        self.workers: list[Worker] = []
        self.replies: list[dict[str, Any]] = []
        self.on_reply = on_reply
        self._waiting: list[tuple[int, str, asyncio.Future[dict[str, Any]]]] = []

    async def start(self, first: int = 1) -> None:
        for number in range(first, first + self.count):
            name = f"w{number}"
            command = [sys.executable, "-m", self.stage_module, "--worker", name]
            env = {**os.environ, "STAGE9_WORKER": name, "DATABASE_URL": self.dsn}
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
                limit=2**24)
            worker = Worker(name, process)
            worker.reader = asyncio.create_task(self._read(worker))
            self.workers.append(worker)

    async def _read(self, worker: Worker) -> None:
        assert worker.process.stdout is not None
        while line := await worker.process.stdout.readline():
            message = json.loads(line)
            if message.get("done"):
                worker.summary = message
                continue
            self.replies.append(message)
            if self.on_reply:
                self.on_reply(message)
            for entry in list(self._waiting):
                chat_id, text, future = entry
                if message["chat_id"] == chat_id and text in message["text"] and not future.done():
                    future.set_result(message)
                    self._waiting.remove(entry)
                    break
        if not worker.summary:  # the process died: nobody waits for an answer that cannot come
            for _, _, future in self._waiting:
                if not future.done():
                    future.set_exception(RuntimeError(f"worker {worker.name} stopped unexpectedly"))

    def expect(self, chat_id: int, text: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next message the bot sends to ``chat_id`` containing ``text``."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((chat_id, text, future))
        return future

    async def send(self, update: dict[str, Any], worker: int | None = None) -> Worker:
        """Send one update (Telegram's JSON) to a random worker (or number ``worker``)."""
        chosen = self.workers[self.random.randrange(len(self.workers)) if worker is None else worker]
        assert chosen.process.stdin is not None
        chosen.process.stdin.write(json.dumps(update).encode() + b"\n")
        await chosen.process.stdin.drain()
        return chosen

    async def close(self, seconds: float = 120) -> list[dict[str, Any]]:
        """End every worker's input and wait for them to finish (each saves on its way out).
        Returns their summaries (``errors`` lists every error that reached an error handler)."""
        for worker in self.workers:
            assert worker.process.stdin is not None
            worker.process.stdin.close()
        try:
            async with asyncio.timeout(seconds):
                for worker in self.workers:
                    await worker.process.wait()
                    if worker.reader:
                        await worker.reader
        except TimeoutError:
            for worker in self.workers:
                if worker.process.returncode is None:
                    worker.process.kill()
            raise
        summaries = []
        for worker in self.workers:
            if worker.process.returncode != 0 or not worker.summary:
                raise RuntimeError(f"worker {worker.name} ended with exit code {worker.process.returncode}")
            summaries.append(worker.summary)
        self.workers = []
        return summaries


class UpdateMaker:
    """Telegram's JSON for offline updates (the update factories of ``bots.offline``)."""

    def __init__(self) -> None:
        self.api = OfflineBotAPI()
        self.app: Application = application_builder(request=self.api).build()  # only binds the bot

    def message(self, text: str, user: User, chat: Chat | None = None) -> dict[str, Any]:
        return message_update(self.app, self.api, text, user, chat or private_chat(user)).to_dict()


# ------------------------------------------------------------------------------------------------
# the demo, the terminal chat and the real deployment
# ------------------------------------------------------------------------------------------------
async def demo(stage_module: str, dsn: str, count: int) -> int:
    """A scripted conversation; every update goes to a random worker; then all workers stop, new
    ones start, and ``/stats`` shows the totals."""
    make = UpdateMaker()
    group = group_chat()
    script = [("hello", ALICE, None), ("hi all", BOB, group), ("/form", ALICE, group),
              ("Alice Liddell", ALICE, group), ("one more", BOB, group), ("again", ALICE, None),
              ("Lisbon", ALICE, group), ("/form", BOB, None), ("Bob", BOB, None), ("Porto", BOB, None),
              ("and again", ALICE, group)]
    print(f"{count} worker processes over one PostgreSQL database; each update goes to one at random.\n")
    router = Router(stage_module, dsn, count)
    await router.start()
    for text, user, chat in script:
        await _say(router, make, text, user, chat)
    await router.close()
    print(f"\n... every worker stops (each saves), {count} new ones start ...\n")
    router = Router(stage_module, dsn, count)
    await router.start(first=count + 1)
    await _say(router, make, "/stats", ALICE, group)
    await _say(router, make, "/stats", BOB, group)
    await router.close()
    return 0


async def _say(router: Router, make: UpdateMaker, text: str, user: User, chat: Chat | None) -> None:
    chat = chat or private_chat(user)
    answer = router.expect(chat.id, user.first_name)
    worker = await router.send(make.message(text, user, chat))
    where = "in the group" if chat.type != "private" else "privately"
    print(f"{user.first_name.lower()} ({where})> {text}    -> worker {worker.name}")
    reply = await asyncio.wait_for(answer, 60)
    print(f"  bot (worker {reply['worker']})> {reply['text']}")


async def terminal_chat(stage: ModuleType, dsn: str) -> int:
    """The offline chat in this terminal, one process: each line is a message from Alice (and
    ``/restart``, ``/quit``, as in the other stages' chats)."""
    from bots.offline import OfflineChat
    from bots.offline.cli import StdinLines, say

    print(f"Offline chat with the stage 9 bot (one process; data in PostgreSQL at {safe_dsn(dsn)}). "
          "Lines are messages from Alice; /restart restarts the bot; /quit, end of input or Ctrl+C "
          "saves and exits.", file=sys.stderr)
    lines = StdinLines()
    async with OfflineChat(stage.build_application, lambda: stage.make_persistence(dsn)) as chat:
        while (line := await lines.readline()) and line.strip() != "/quit":
            await say(chat, line.rstrip("\n"))
    return 0


async def receive_and_route(stage_module: str, dsn: str, count: int, token: str) -> int:
    """On Telegram: this process polls (the one receiver) and feeds ``count`` workers, which
    handle the updates and answer Telegram themselves. Ctrl+C stops all of them (each saves)."""
    router = Router(stage_module, dsn, count)  # the workers find BOT_TOKEN in their environment
    await router.start()
    print(f"Polling Telegram; {count} workers handle the updates. Ctrl+C stops.", file=sys.stderr)
    offset = 0
    try:
        async with Bot(token) as bot:
            await bot.delete_webhook()
            while True:
                for update in await bot.get_updates(offset=offset, timeout=30):
                    offset = update.update_id + 1
                    await router.send(update.to_dict())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await router.close()
    return 0
