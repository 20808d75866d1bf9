"""Stage 4: a persistent ConversationHandler on SQLitePersistence - the form survives restarts."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from telegram.ext import Application, ContextTypes

from bots import stage4_conversation as stage4
from bots.offline import ALICE, BOB, OfflineChat, group_chat

GROUP = group_chat()


@pytest.fixture
async def chat(db: Path):
    """The sign-up bot, offline, over a SQLite file that outlives restarts. A handler that raises
    would otherwise only be logged by PTB, so every error fails the test."""
    errors: list[BaseException] = []

    def build(**kwargs) -> Application:
        app = stage4.build_application(**kwargs)

        async def record(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
            errors.append(context.error)

        app.add_error_handler(record)
        return app

    async with OfflineChat(build, lambda: stage4.make_persistence(db)) as chat:
        yield chat
    assert errors == []


def stored_steps(path: Path) -> dict[tuple[int, ...], object]:
    """The conversation rows in the file, read with plain sqlite3: {key tuple: state}."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT key, state FROM conversations WHERE name = ?",
                          (stage4.CONVERSATION_NAME,)).fetchall()
    return {tuple(json.loads(key)): json.loads(state) for key, state in rows}


def stored_bot_data(path: Path) -> dict:
    with closing(sqlite3.connect(path)) as db:
        [(data,)] = db.execute("SELECT data FROM bot_data").fetchall()
    return json.loads(data)


async def test_restart_after_every_step_resumes_exactly_there(chat, db):
    assert await chat.send("/start") == [stage4.ASK_NAME]
    await chat.restart()
    assert stored_steps(db) == {(ALICE.id, ALICE.id): stage4.NAME}
    assert await chat.send("Alice") == [stage4.ASK_AGE.format(name="Alice")]
    await chat.restart()
    assert stored_steps(db) == {(ALICE.id, ALICE.id): stage4.AGE}
    assert await chat.send("34") == [stage4.ASK_CITY]
    await chat.restart()
    assert stored_steps(db) == {(ALICE.id, ALICE.id): stage4.CITY}
    assert chat.app.user_data[ALICE.id]["forms"] == {ALICE.id: {"name": "Alice", "age": 34}}
    [done] = await chat.send("Lisbon")
    assert done.startswith("Thank you, Alice, you are signed up!")
    assert chat.app.user_data[ALICE.id] == {"profile": {"name": "Alice", "age": 34, "city": "Lisbon"}}


async def test_a_finished_form_starts_fresh_after_a_restart(chat, db):
    for answer in ("/start", "Alice", "34", "Lisbon"):
        await chat.send(answer)
    await chat.restart()
    assert stored_steps(db) == {}, "the ended conversation's row must be deleted"
    assert await chat.send("Paris") == [], "no form is running, so a plain message is not an answer"
    assert await chat.send("/start") == [stage4.ASK_NAME]
    assert await chat.send("/profile") == [
        "Your profile: Alice, 34, Lisbon.\nA form is in progress here (answers so far: none yet)."
    ]


async def test_a_cancelled_form_starts_fresh_after_a_restart(chat, db):
    await chat.send("/start")
    await chat.send("Alice")
    assert await chat.send("/cancel") == [stage4.CANCELLED]
    await chat.restart()
    assert stored_steps(db) == {}
    assert chat.app.user_data[ALICE.id] == {}
    assert await chat.send("34") == []
    assert await chat.send("/profile") == ["You have no profile yet: /start signs you up."]
    assert await chat.send("/start") == [stage4.ASK_NAME]


async def test_two_users_in_one_group_keep_separate_steps(chat, db):
    await chat.send("/start", user=ALICE, chat=GROUP)
    await chat.send("/start", user=BOB, chat=GROUP)
    await chat.send("Alice", user=ALICE, chat=GROUP)
    await chat.restart()
    assert stored_steps(db) == {(GROUP.id, ALICE.id): stage4.AGE, (GROUP.id, BOB.id): stage4.NAME}
    assert await chat.send("Bob", user=BOB, chat=GROUP) == [stage4.ASK_AGE.format(name="Bob")]
    assert await chat.send("34", user=ALICE, chat=GROUP) == [stage4.ASK_CITY]
    assert chat.app.user_data[ALICE.id]["forms"] == {GROUP.id: {"name": "Alice", "age": 34}}
    assert chat.app.user_data[BOB.id]["forms"] == {GROUP.id: {"name": "Bob"}}
    # the same user's private chat is another conversation: nothing is running there
    assert await chat.send("Lisbon", user=ALICE) == []


async def test_one_user_in_two_chats_fills_two_independent_forms(chat, db):
    await chat.send("/start", user=ALICE)
    await chat.send("Alice", user=ALICE)
    await chat.send("/start", user=ALICE, chat=GROUP)  # must not touch the private form
    await chat.send("Ally", user=ALICE, chat=GROUP)
    await chat.restart()
    assert stored_steps(db) == {(ALICE.id, ALICE.id): stage4.AGE, (GROUP.id, ALICE.id): stage4.AGE}
    assert chat.app.user_data[ALICE.id]["forms"] == {ALICE.id: {"name": "Alice"}, GROUP.id: {"name": "Ally"}}
    await chat.send("34", user=ALICE)
    assert (await chat.send("Lisbon", user=ALICE))[0].startswith("Thank you, Alice,")
    assert await chat.send("/profile", user=ALICE, chat=GROUP) == [
        "Your profile: Alice, 34, Lisbon.\nA form is in progress here (answers so far: name = Ally)."
    ]
    assert await chat.send("/profile", user=ALICE) == ["Your profile: Alice, 34, Lisbon."]


async def test_a_bad_age_is_asked_again_and_does_not_advance(chat, db):
    await chat.send("/start")
    await chat.send("Alice")
    for bad in ("thirty-four", "-3", "0", "121", "34.5"):
        assert await chat.send(bad) == [stage4.BAD_AGE], bad
    await chat.restart()
    assert stored_steps(db) == {(ALICE.id, ALICE.id): stage4.AGE}
    assert await chat.send("many") == [stage4.BAD_AGE]
    assert chat.app.user_data[ALICE.id]["forms"] == {ALICE.id: {"name": "Alice"}}
    assert await chat.send(" 34 ") == [stage4.ASK_CITY]


async def test_the_counter_of_completed_forms_survives_a_restart(chat, db):
    for user in (ALICE, BOB):
        for answer in ("/start", user.first_name, "40", "Porto"):
            await chat.send(answer, user=user)
    await chat.restart()
    assert stored_bot_data(db) == {"forms_completed": 2}
    assert chat.app.bot_data["forms_completed"] == 2
    for answer in ("/start", "Alice", "35"):
        await chat.send(answer)
    [done] = await chat.send("Braga")
    assert "Forms completed so far: 3." in done


async def test_profile_mid_form_shows_progress_and_keeps_the_step(chat):
    await chat.send("/start")
    await chat.send("Alice")
    assert await chat.send("/profile") == [
        "You have no profile yet: /start signs you up.\n"
        "A form is in progress here (answers so far: name = Alice)."
    ]
    assert await chat.send("34") == [stage4.ASK_CITY]


async def test_start_in_the_middle_begins_the_form_again(chat, db):
    await chat.send("/start")
    await chat.send("Alice")
    assert await chat.send("/start") == [stage4.ASK_NAME]
    await chat.save()
    assert stored_steps(db) == {(ALICE.id, ALICE.id): stage4.NAME}
    assert chat.app.user_data[ALICE.id]["forms"] == {ALICE.id: {}}


async def test_a_sticker_instead_of_an_answer_keeps_the_step(chat):
    await chat.send("/start")
    assert await chat.send_sticker() == [stage4.NOT_TEXT]
    assert await chat.send("Alice") == [stage4.ASK_AGE.format(name="Alice")]


async def test_without_a_persistence_the_form_works_but_forgets():
    async with OfflineChat(stage4.build_application) as chat:
        await chat.send("/start")
        assert await chat.send("Alice") == [stage4.ASK_AGE.format(name="Alice")]
        await chat.restart()
        assert await chat.send("34") == []


def test_age_parsing():
    assert [stage4.parse_age(t) for t in ("1", "120", " 7 ", "0", "121", "7.0", "-1", "")] == [
        1, 120, 7, None, None, None, None, None
    ]
