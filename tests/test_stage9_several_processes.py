"""Stage 9: several bot processes on one PostgreSQL database, updates routed at random.

The big test starts four real worker processes (``bots/workers.py``: the stage's Application, fed
through its ``update_queue`` as ``run_webhook`` feeds it) over a real PostgreSQL server
(``tests/postgres_server.py``) and checks, after all of them have shut down, that nothing was lost.
The smaller tests run two Applications in this process over one database - two processes as far
as PostgreSQL is concerned (each has its own connections) - to show one guarantee at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from postgres_server import database_url, fresh_schema
from telegram.ext import ContextTypes, ConversationHandler, Job

from bots import stage9_several_processes as stage9
from bots.local_postgres import start_private_server, stop_private_server
from bots.offline import ALICE, BOB, OfflineBotAPI, OfflineChat, User, group_chat, message_update
from bots.offline.api import Chat, private_chat
from bots.workers import Router, UpdateMaker
from persistence.postgres import (
    DatabaseUnreachableError,
    IsolatingApplication,
    PostgresPersistence,
    PostgresSchemaError,
    SaveFailedError,
    _conversation_states,
    _set_state,
)

SEED = int(os.environ.get("RELIABILITY_SEED") or random.SystemRandom().randrange(2**32))


def persistence_factory(**kwargs):
    dsn, schema = database_url(), fresh_schema()
    return lambda: PostgresPersistence(dsn, schema=schema, **kwargs)


# ---------------------------------------------------------------------------------------------
# 4 processes, 20,000 updates
# ---------------------------------------------------------------------------------------------
WORKERS, USERS, CHATS, FORMS, UPDATES = 4, 500, 50, 100, int(os.environ.get("STAGE9_UPDATES") or 20_000)


async def send_traffic(router: Router, make: UpdateMaker, senders: list[User], starts: list[int],
                       form_users: list[User], chat_of: dict[int, Chat],
                       step_workers: dict[int, list[str]]) -> None:
    """Send a counted message from each of ``senders`` to random workers; the ``k``-th form starts
    after ``starts[k]`` of them, its next step sent when the bot has answered the previous one."""
    started = [asyncio.Event() for _ in form_users]

    async def fill_in(user: User, go: asyncio.Event) -> None:
        await go.wait()
        chat = private_chat(user)  # (in the group, the user's counted messages would be answers)
        steps = [("/form", stage9.ASK_NAME.format(first=user.first_name)),
                 (f"Name {user.id}", stage9.ASK_CITY.format(first=user.first_name)),
                 (f"City {user.id}", f"Thank you, {user.first_name}:")]
        for text, answer in steps:
            reply = router.expect(chat.id, answer)
            worker = await router.send(make.message(text, user, chat))
            step_workers.setdefault(user.id, []).append(worker.name)
            await reply

    forms = [asyncio.create_task(fill_in(user, go)) for user, go in zip(form_users, started, strict=True)]
    try:
        next_form = 0
        for number, user in enumerate(senders):
            while next_form < len(starts) and starts[next_form] == number:
                started[next_form].set()
                next_form += 1
                await asyncio.sleep(0)
            await router.send(make.message(f"message {number}", user, chat_of[user.id]))
        await asyncio.gather(*forms)
    finally:
        for form in forms:
            form.cancel()


@pytest.mark.slow
async def test_20000_updates_from_500_users_on_4_random_workers_lose_nothing(monkeypatch):
    """500 users in 50 group chats send 20,000 updates; each goes to one of 4 worker processes at
    random, the workers handling theirs concurrently. 100 of them fill in the two-step form in their
    private chat meanwhile, each step sent when the previous answer arrived (as a person would), to a
    random worker, while their messages in the group go on. After
    every worker has shut down, a fresh persistence finds every user and chat counter exact, every
    form completed with its answers and no conversation left open, every worker's count in bot data,
    and no error reached an error handler."""
    rng = random.Random(SEED)
    schema = fresh_schema("stage9")
    dsn = database_url()
    # the workers find their tables in this test's schema
    monkeypatch.setenv("STAGE9_SCHEMA", schema)
    users = [User(20_000 + i, f"U{20_000 + i}") for i in range(USERS)]
    chats = [group_chat(-5_000 - j, f"group {j}") for j in range(CHATS)]
    chat_of = {user.id: chats[i % CHATS] for i, user in enumerate(users)}
    form_users = rng.sample(users, FORMS)
    counted = UPDATES - 3 * FORMS
    senders = [rng.choice(users) for _ in range(counted)]
    starts = sorted(rng.sample(range(counted), FORMS))  # when each form begins, among the counts
    make = UpdateMaker()
    router = Router(stage9.MODULE, dsn, WORKERS, seed=SEED)
    step_workers: dict[int, list[str]] = {}
    began = time.perf_counter()
    await router.start()
    try:
        async with asyncio.timeout(240):  # a hang (a deadlock...) fails the test instead
            await send_traffic(router, make, senders, starts, form_users, chat_of, step_workers)
    finally:
        summaries = await router.close(seconds=120)
    elapsed = time.perf_counter() - began
    print(f"\n{UPDATES} updates, {WORKERS} workers: {elapsed:.1f} s, {UPDATES / elapsed:.0f} updates/s "
          f"(RELIABILITY_SEED={SEED})")

    assert [s["errors"] for s in summaries] == [[]] * WORKERS
    persistence = PostgresPersistence(dsn, schema=schema)
    stored_users, stored_chats = await persistence.get_user_data(), await persistence.get_chat_data()
    bot_data, conversations = await persistence.get_bot_data(), await persistence.get_conversations("form")
    await persistence.flush()
    per_user = Counter(user.id for user in senders)
    per_chat = Counter(chat_of[user.id].id for user in senders)
    assert {uid: data.get("messages", 0) for uid, data in stored_users.items() if data.get("messages")} \
        == dict(per_user), f"RELIABILITY_SEED={SEED}"
    assert {cid: data["messages"] for cid, data in stored_chats.items() if "messages" in data} \
        == dict(per_chat)
    for user in form_users:
        assert stored_users[user.id]["profile"] == {"name": f"Name {user.id}", "city": f"City {user.id}"}
        assert stored_users[user.id]["forms"] == 1
        assert stored_users[user.id]["answers"] == {}
    assert conversations == {}  # every form ended
    assert sorted(bot_data) == [f"handled by w{n}" for n in range(1, WORKERS + 1)]
    assert sum(bot_data.values()) == counted
    # the forms really did move between processes
    assert sum(len(set(names)) > 1 for names in step_workers.values()) > FORMS // 2


# ---------------------------------------------------------------------------------------------
# one guarantee at a time: two Applications ("processes") over one database
# ---------------------------------------------------------------------------------------------
async def started(make) -> tuple:
    api = OfflineBotAPI()
    app = stage9.build_application(persistence=make(), request=api)
    await app.initialize()
    return app, api


async def test_two_processes_counting_the_same_user_concurrently_stay_exact():
    """Two Applications handle 200 messages of one user in one chat, all at once: the user's and
    the chat's counters end at exactly 200. (Both count in bot data under this process's key:
    bot data across real processes is checked by the 20,000-update test.)"""
    make = persistence_factory()
    (one, api_one), (two, api_two) = await started(make), await started(make)
    chat = group_chat()
    updates = [(app, message_update(app, api, f"m{n}", ALICE, chat))
               for n, (app, api) in enumerate([(one, api_one), (two, api_two)] * 100)]
    await asyncio.gather(*(app.process_update(update) for app, update in updates))
    await one.shutdown()
    await two.shutdown()
    reader = make()
    assert (await reader.get_user_data())[ALICE.id]["messages"] == 200
    assert (await reader.get_chat_data())[chat.id]["messages"] == 200
    await reader.flush()


async def test_a_form_continues_on_another_process_at_the_right_step():
    """Step 1 on one process, step 2 on the other, step 3 on the first again: the form ends with
    both answers, although each process loaded the conversation states only once at start-up."""
    make = persistence_factory()
    (one, api_one), (two, api_two) = await started(make), await started(make)
    chat = group_chat()
    for app, api, text in [(one, api_one, "/form"), (two, api_two, "Ada"), (one, api_one, "Paris")]:
        await app.process_update(message_update(app, api, text, ALICE, chat))
    assert api_one.calls[-1].params["text"].startswith("Thank you, Alice: Ada from Paris")
    # and the other process knows the form has ended: a text there is counted, not a name
    await two.process_update(message_update(two, api_two, "hello", ALICE, chat))
    assert api_two.calls[-1].params["text"].startswith("Alice: your message 1")
    await one.shutdown()
    await two.shutdown()


async def test_a_job_changing_user_data_inside_isolated_is_as_safe_as_a_handler():
    """A job (a reminder counting for a user) runs 50 times on one process while the other
    process handles 50 messages of the same user: the counter ends at exactly 100."""
    make = persistence_factory()
    (one, _), (two, api_two) = await started(make), await started(make)

    async def tick(context: ContextTypes.DEFAULT_TYPE) -> None:
        async with context.application.isolated(user_id=context.job.user_id):
            value = context.user_data.get("messages", 0)
            await asyncio.sleep(0)  # a handler that awaits between reading and writing
            context.user_data["messages"] = value + 1

    job = Job(tick, user_id=BOB.id)
    await asyncio.gather(*(job.run(one) for _ in range(50)),
                         *(two.process_update(message_update(two, api_two, "hi", BOB)) for _ in range(50)))
    await one.shutdown()
    await two.shutdown()
    reader = make()
    assert (await reader.get_user_data())[BOB.id]["messages"] == 100
    await reader.flush()


async def test_the_offline_chat_keeps_a_form_across_a_restart():
    async with OfflineChat(stage9.build_application, persistence_factory()) as chat:
        assert await chat.send("/form") == ["Alice, what is your name?"]
        await chat.restart()
        assert await chat.send("Alice") == ["Alice, which city do you live in?"]
        assert await chat.send("Rome") == ["Thank you, Alice: Alice from Rome. Forms completed by you: 1."]
        await chat.send("hello")
        await chat.restart()
        assert (await chat.send("/stats"))[0].startswith("Alice: 1 message, profile {'name': 'Alice'")


async def test_the_private_ptb_attribute_postgres_py_uses_is_still_there():
    """persistence/postgres.py sets one conversation's state through
    ``ConversationHandler._conversations`` (PTB has no public way). If PTB renames or changes it,
    this fails here, loudly, instead of forms silently restarting on other processes: the state
    set is the one the handler acts on, and PTB does not take it for a change to save."""
    app, api = await started(persistence_factory())
    chat = group_chat()
    update = message_update(app, api, "Ada", ALICE, chat)
    [(name, states, key)] = _conversation_states(app, update)
    assert (name, key) == (stage9.FORM, (chat.id, ALICE.id))
    _set_state(states, key, stage9.NAME)
    assert states.pop_accessed_keys() == set()
    form = next(h for h in app.handlers[0] if isinstance(h, ConversationHandler))
    assert form.check_update(update)  # a name is expected now
    _set_state(states, key, None)
    assert states.pop_accessed_keys() == set()
    assert not form.check_update(update)
    await app.shutdown()


# ---------------------------------------------------------------------------------------------
# clear errors, nothing changed
# ---------------------------------------------------------------------------------------------
async def schema_with(sql: list[str]) -> str:
    schema = fresh_schema("bad")
    conn = await asyncpg.connect(database_url())
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        for statement in sql:
            await conn.execute(statement.format(schema=schema))
    finally:
        await conn.close()
    return schema


async def tables_of(schema: str) -> list[tuple]:
    conn = await asyncpg.connect(database_url())
    try:
        return [tuple(r) for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", schema)]
    finally:
        await conn.close()


async def test_another_programs_tables_are_refused_untouched():
    schema = await schema_with(["CREATE TABLE {schema}.user_data (id int, name text)"])
    with pytest.raises(PostgresSchemaError, match=f"Schema '{schema}' .* user_data .* not made by"):
        await PostgresPersistence(database_url(), schema=schema).get_user_data()
    assert await tables_of(schema) == [("user_data",)]


async def test_a_newer_schema_and_another_serializer_are_refused():
    make = persistence_factory()
    first = make()
    await first.update_user_data(1, {"a": 1})
    await first.flush()
    conn = await asyncpg.connect(database_url())
    schema = first.schema
    await conn.execute(f"UPDATE {schema}.ptb_settings SET value = '99' WHERE name = 'schema_version'")
    await conn.close()
    with pytest.raises(PostgresSchemaError, match="schema version 99, made by a newer"):
        await make().get_user_data()
    conn = await asyncpg.connect(database_url())
    await conn.execute(f"UPDATE {schema}.ptb_settings SET value = '1' WHERE name = 'schema_version'")
    await conn.close()
    with pytest.raises(PostgresSchemaError, match=r"serializer='json'.*Pass serializer='json'"):
        await PostgresPersistence(database_url(), schema=schema, serializer="pickle").get_user_data()


async def test_no_server_at_the_address_is_one_clear_error_without_the_password():
    dsn = "postgresql://bot:s3cret@127.0.0.1:1/bot"
    with pytest.raises(PostgresSchemaError, match=r"Cannot connect .* at postgresql://bot:\*\*\*@") as info:
        await PostgresPersistence(dsn).get_bot_data()
    assert "s3cret" not in str(info.value)


async def test_data_that_cannot_be_stored_fails_alone_and_names_the_user():
    """A handler puts a set into user data: the error handler gets a message naming the user and
    where the value sits; the chat's counter of the same update is stored."""
    make = persistence_factory()
    app, api = await started(make)
    errors = []

    async def bad(update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.user_data["tags"] = {"a set"}

    async def record(update, context) -> None:
        errors.append(str(context.error))

    from telegram.ext import CommandHandler

    app.add_handler(CommandHandler("bad", bad), group=-1)
    app.add_error_handler(record)
    chat: Chat = group_chat()
    await app.process_update(message_update(app, api, "/bad", ALICE, chat))
    await app.process_update(message_update(app, api, "counted", BOB, chat))
    assert len(errors) == 1 and f"user_data of user {ALICE.id}" in errors[0] and "['tags']" in errors[0]
    app.user_data[ALICE.id].pop("tags")
    await app.shutdown()
    reader = make()
    assert (await reader.get_chat_data())[chat.id]["messages"] == 1
    await reader.flush()


def test_isolating_application_is_what_the_stage_builds():
    assert isinstance(stage9.build_application(persistence=persistence_factory()(),
                                               request=OfflineBotAPI()), IsolatingApplication)


async def test_a_save_while_the_server_is_down_is_kept_and_written_when_it_is_back():
    """A private server of its own is stopped between two saves: the save fails with an error that
    says nothing is lost, flush() names what is unsaved, and once the server is back the same
    persistence writes it all."""
    # (its own directory under /tmp: the server runs as another user, who cannot enter pytest's)
    directory = Path(tempfile.mkdtemp(prefix="cookbook-pg-gone-"))
    dsn = start_private_server(directory, delete=True)
    persistence = PostgresPersistence(dsn, schema="gone")
    await persistence.update_chat_data(1, {"before": 1})
    stop_private_server(directory)
    with pytest.raises(SaveFailedError, match="Nothing is lost"):
        await persistence.update_chat_data(2, {"while down": 2})
    with pytest.raises(SaveFailedError, match="Unsaved: chat_data of chat 2"):
        await persistence.flush()
    assert start_private_server(directory) == dsn
    await persistence.update_bot_data({"after": 3})
    await persistence.flush()
    reader = PostgresPersistence(dsn, schema="gone")
    assert await reader.get_chat_data() == {1: {"before": 1}, 2: {"while down": 2}}
    assert await reader.get_bot_data() == {"after": 3}
    await reader.flush()
    stop_private_server(directory)
    shutil.rmtree(directory)


async def test_an_update_waits_for_a_server_that_is_restarting_and_loses_nothing():
    """The server stops while the bot runs: the next update waits (a warning says so), and once the
    server is back it is handled and its counter stored - nothing reached an error handler."""
    directory = Path(tempfile.mkdtemp(prefix="cookbook-pg-restart-"))
    dsn = start_private_server(directory, delete=True)
    app, api = await started(lambda: PostgresPersistence(dsn, schema="restart"))
    errors = []

    async def record(update, context) -> None:
        errors.append(context.error)

    app.add_error_handler(record)
    await app.process_update(message_update(app, api, "before", ALICE))
    stop_private_server(directory)
    waiting = asyncio.Event()
    watcher = logging.Handler()
    watcher.emit = lambda record: waiting.set() if "does not answer" in record.getMessage() else None
    logging.getLogger("persistence.postgres").addHandler(watcher)
    try:
        handled = asyncio.create_task(app.process_update(message_update(app, api, "while down", ALICE)))
        await asyncio.wait_for(waiting.wait(), 30)
    finally:
        logging.getLogger("persistence.postgres").removeHandler(watcher)
    assert not handled.done()
    start_private_server(directory)
    await asyncio.wait_for(handled, 60)
    assert api.calls[-1].params["text"].startswith("Alice: your message 2")
    await app.shutdown()
    reader = PostgresPersistence(dsn, schema="restart")
    assert (await reader.get_user_data())[ALICE.id]["messages"] == 2
    await reader.flush()
    assert errors == []
    stop_private_server(directory)
    shutil.rmtree(directory)


@pytest.mark.slow
def test_the_postgres_benchmark_runs_and_writes_its_tables(tmp_path):
    """A tiny run of ``python -m benchmarks.bench_postgres`` (its figures are not checked: speed
    is measured there, not asserted here)."""
    subprocess.run([sys.executable, "-m", "benchmarks.bench_postgres", "--quick", "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    report = (tmp_path / "postgres.md").read_text()
    for heading in ("## Save rounds", "## Per update", "## Worker processes"):
        assert heading in report
    data = json.loads((tmp_path / "postgres.json").read_text())
    assert set(data) == {"n", "saves", "per_update", "workers"}


async def test_a_form_ended_on_one_process_and_started_again_on_another_is_not_deleted_by_a_save():
    """Alice completes the form on process 1, starts it again on process 2; process 1's periodic
    save (which knows only that the form ended) must not delete the new one: her next answer, on
    process 2, is taken as her name."""
    make = persistence_factory()
    (one, api_one), (two, api_two) = await started(make), await started(make)
    chat = group_chat()
    for app, api, text in [(one, api_one, "/form"), (one, api_one, "Ada"), (one, api_one, "Paris"),
                           (two, api_two, "/form")]:
        await app.process_update(message_update(app, api, text, ALICE, chat))
    await one.update_persistence()
    await two.process_update(message_update(two, api_two, "Grace", ALICE, chat))
    assert api_two.calls[-1].params["text"] == "Alice, which city do you live in?"
    await one.shutdown()
    await two.shutdown()


async def test_forget_inside_an_update_deletes_the_row_on_every_process():
    """A handler drops the user's data (``/forget``) inside an isolated update: the row is deleted,
    not written back, and a fresh load of another process finds nothing."""
    make = persistence_factory()
    app, api = await started(make)

    async def forget(update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.application.drop_user_data(update.effective_user.id)

    from telegram.ext import CommandHandler

    app.add_handler(CommandHandler("forget", forget), group=-1)
    await app.process_update(message_update(app, api, "hello", ALICE))
    await app.process_update(message_update(app, api, "/forget", ALICE))
    reader = make()
    assert ALICE.id not in await reader.get_user_data()  # at once, before any periodic save
    await app.shutdown()
    assert ALICE.id not in await reader.get_user_data()
    await reader.flush()


async def test_a_server_gone_for_longer_than_wait_for_server_is_one_error_for_the_error_handler():
    """The update is not handled (no handler runs without its locks); the error handler gets one
    message naming the server and the fix."""
    directory = Path(tempfile.mkdtemp(prefix="cookbook-pg-gone-long-"))
    dsn = start_private_server(directory, delete=True)
    app, api = await started(lambda: PostgresPersistence(dsn, schema="gone_long", wait_for_server=0.3))
    errors = []

    async def record(update, context) -> None:
        errors.append(context.error)

    app.add_error_handler(record)
    stop_private_server(directory)
    await app.process_update(message_update(app, api, "hello", ALICE))
    assert len(errors) == 1 and isinstance(errors[0], DatabaseUnreachableError)
    message = str(errors[0])
    assert message.startswith("PostgreSQL at postgresql://") and "did not answer for 0.3 s" in message
    assert not [call for call in api.calls if call.method == "sendMessage"]  # no handler ran unlocked
    start_private_server(directory)
    await app.shutdown()
    stop_private_server(directory)
    shutil.rmtree(directory)


async def test_bot_data_keys_a_save_merged_in_reach_live_data_and_are_never_taken_back(monkeypatch):
    """Each process counts in bot data under its own key. Process 1's save merges process 2's key
    into the stored row; that key must reach process 1's live bot data too. Otherwise process 1's
    next save - its copy without the key, its base (the row it wrote) with it - deletes the key
    process 2 has counted on since (found by the 20,000-update test, which lost a few hundred)."""
    make = persistence_factory()
    (one, api_one), (two, api_two) = await started(make), await started(make)
    chat = group_chat()

    async def message(app, api, worker: str) -> None:
        monkeypatch.setenv("STAGE9_WORKER", worker)
        await app.process_update(message_update(app, api, "hi", ALICE, chat))

    await message(one, api_one, "w1")
    await message(two, api_two, "w2")
    await two.update_persistence()        # the row: w2 = 1
    await one.update_persistence()        # merges w2 = 1 into the row it writes: w1 = 1, w2 = 1
    assert one.bot_data == {"handled by w1": 1, "handled by w2": 1}, "the merged key reached live data"
    await message(one, api_one, "w1")     # w1 = 2
    await message(two, api_two, "w2")     # w2 = 2 (its refresh takes w1 = 1)
    await two.update_persistence()
    await one.update_persistence()
    await one.shutdown()
    await two.shutdown()
    reader = make()
    assert await reader.get_bot_data() == {"handled by w1": 2, "handled by w2": 2}
    await reader.flush()


# ---- the command line, as a user runs it ----------------------------------------------------------
def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path):
    """A malformed BOT_TOKEN, an unreachable Telegram, an address that is not one: one line each,
    no traceback, exit code 1 (and no worker started for a token that cannot work)."""
    from helpers import run_cli

    cases = [({"BOT_TOKEN": "abc"}, "BOT_TOKEN is malformed"),
             ({"BOT_TOKEN": "123:abc"}, "Cannot reach Telegram"),
             ({"DATABASE_URL": "not a url"}, "is not a usable PostgreSQL address"),
             ({"DATABASE_URL": "postgresql://bot:hunter2@/bot?host=/nonexistent"}, "Cannot connect")]
    for env, expected in cases:
        result = run_cli("stage9_several_processes", stdin="hello\n", cwd=tmp_path, env=env)
        assert result.returncode == 1, (env, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if not line.startswith("Offline chat")]
        assert len(lines) == 1 and expected in lines[0], (env, result.stderr)
        assert "hunter2" not in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be started or created"


def test_the_offline_chat_restarts_and_answers_unknown_commands(tmp_path):
    from helpers import run_cli

    env = {"DATABASE_URL": database_url(), "STAGE9_SCHEMA": fresh_schema("chat")}
    result = run_cli("stage9_several_processes", stdin="/start\nhello\n/restart\n/stats\n/foo\n",
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.split("(the bot restarted)")
    assert "/form" in before and "your message 1" in before
    assert "Alice: 1 message, " in after and "This chat: 1 message." in after
    assert "I don't know /foo. My commands: /form, /help, /start, /stats" in after
