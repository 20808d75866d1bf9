"""Stage 6: the bot and an admin tool (a separate process) share one SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO

from bots import stage6_shared_database as stage6
from bots.offline import ALICE, BOB, OfflineChat, group_chat, migration_updates, supergroup_chat


def bot(db: Path) -> OfflineChat:
    return OfflineChat(stage6.build_application, lambda: stage6.make_persistence(db))


def admin(db: Path, *args: str) -> subprocess.CompletedProcess:
    """The admin tool as a person runs it: another process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bots.stage6_shared_database", "admin",
                           "--file", str(db), *args],
                          capture_output=True, text=True, env=env, timeout=120)


async def test_an_admin_edit_reaches_the_running_bot_without_losing_unsaved_notes(db):
    async with bot(db) as chat:
        await chat.send("buy a bike")
        await chat.save()
        await chat.send("call mum")  # not saved when the admin writes
        assert admin(db, "set", str(ALICE.id), "plan", "premium").returncode == 0
        [reply] = await chat.send("/me")
        assert "plan: premium" in reply and "['buy a bike', 'call mum']" in reply
        await chat.restart()
        assert chat.app.user_data[ALICE.id] == {"notes": ["buy a bike", "call mum"], "plan": "premium"}


async def test_an_admin_edit_landing_just_before_a_save_is_kept(db):
    async with bot(db) as chat:
        await chat.send("buy a bike")
        await chat.save()
        await chat.send("call mum")
        assert admin(db, "set", str(ALICE.id), "level", "3").returncode == 0
        await chat.save()  # no message in between: the save itself merges the admin's key
        await chat.restart()
        assert chat.app.user_data[ALICE.id] == {"notes": ["buy a bike", "call mum"], "level": 3}


async def test_a_broadcast_shows_for_every_user(db):
    async with bot(db) as chat:
        await chat.send("hello")
        await chat.send("hello", user=BOB)
        await chat.save()
        assert admin(db, "broadcast", "Maintenance on Sunday").returncode == 0
        for user in (ALICE, BOB):
            [reply] = await chat.send("/me", user=user)
            assert reply.endswith("Announcement: Maintenance on Sunday")


async def test_admins_writing_while_the_bot_saves_lose_nothing(db):
    """Five admin processes write while the bot keeps taking notes and saving: every process exits
    0 (no "database is locked"), and every admin key and every note is there afterwards."""
    async with bot(db) as chat:
        await chat.send("first")
        await chat.save()
        env = {**os.environ, "PYTHONPATH": str(REPO)}

        async def run_admins() -> list[tuple[int, bytes, bytes]]:
            processes = [await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots.stage6_shared_database", "admin", "--file", str(db),
                "set", str(ALICE.id), f"key{i}", str(i), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for i in range(5)]
            return [(*(await p.communicate()), p.returncode) for p in processes]

        admins = asyncio.create_task(run_admins())
        n = 0
        while not admins.done() or n < 5:  # the bot keeps working while the admins write
            n += 1
            await chat.send(f"note {n}")
            await chat.save()
            await asyncio.sleep(0.005)
        results = await admins
        assert [code for _, _, code in results] == [0] * 5, results
        await chat.send("/me")
        await chat.restart()
        data = chat.app.user_data[ALICE.id]
    assert {f"key{i}": i for i in range(5)}.items() <= data.items()
    assert data["notes"] == ["first"] + [f"note {i}" for i in range(1, n + 1)]


async def test_forget_erases_the_user_for_good(db):
    async with bot(db) as chat:
        await chat.send("my secret diary entry")
        await chat.save()
        assert await chat.send("/forget") == ["I have forgotten everything about you."]
        await chat.restart()
        assert await chat.send("/me") == ["What I know about you:\nnothing"]
        assert ALICE.id not in chat.app.chat_data or chat.app.chat_data[ALICE.id] == {}
    assert not any(b"my secret diary entry" in path.read_bytes() for path in db.parent.iterdir())


async def test_a_group_upgraded_to_a_supergroup_keeps_its_data(db):
    group, supergroup = group_chat(), supergroup_chat()
    async with bot(db) as chat:
        await chat.send("hello group", chat=group)
        await chat.send("me too", user=BOB, chat=group)
        for update in migration_updates(chat.app, chat.api, group, supergroup):
            await chat.feed(update)
        await chat.restart()
        assert await chat.send("/chat", chat=supergroup) == [f"Chat {supergroup.id}: 2 message(s)."]
        assert group.id not in chat.app.chat_data


async def test_admin_list_and_value_parsing(db):
    async with bot(db) as chat:
        await chat.send("hello")
    assert admin(db, "set", str(ALICE.id), "tags", '["a", 1]').returncode == 0
    assert admin(db, "set", str(ALICE.id), "motto", "carpe diem").returncode == 0
    listing = admin(db, "list")
    assert listing.returncode == 0
    line = listing.stdout.strip()
    assert line.startswith(f"{ALICE.id}: ")
    assert json.loads(line.split(": ", 1)[1]) == {"notes": ["hello"], "tags": ["a", 1], "motto": "carpe diem"}


async def test_admin_errors_are_one_clear_line(db, tmp_path):
    missing = admin(tmp_path / "nope.sqlite3", "list")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    async with bot(db) as chat:
        await chat.send("hello")
    unknown = admin(db, "set", "4242", "plan", "x")
    assert unknown.returncode == 1 and "no user 4242" in unknown.stderr and "Traceback" not in unknown.stderr
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("shopping list")
    bad = admin(not_a_db, "list")
    assert bad.returncode == 1 and "cannot be used as the bot's database" in bad.stderr
    assert not_a_db.read_text() == "shopping list"


async def test_admin_refuses_a_value_the_bot_cannot_use_and_changes_nothing(db):
    """``notes`` is a list the bot appends to: text there would break the user's next message."""
    async with bot(db) as chat:
        await chat.send("hello")
    before = admin(db, "list").stdout
    refused = admin(db, "set", str(ALICE.id), "notes", "oops")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("notes must be a list of texts")
    assert "Nothing was changed" in refused.stderr
    assert admin(db, "list").stdout == before
    assert admin(db, "set", str(ALICE.id), "notes", '["hello", "set by the admin"]').returncode == 0
    async with bot(db) as chat:
        assert await chat.send("one more") == ["Noted (3)."]


def test_admin_takes_file_anywhere_and_calls_a_directory_a_directory(db, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def tool(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bots.stage6_shared_database", *args],
                              capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)

    assert "does not exist" in tool("--file", str(db), "admin", "list").stderr
    asyncio.run(_one_note(db))
    for args in (["admin", "--file", str(db), "list"], ["admin", "list", "--file", str(db)],
                 ["--file", str(db), "admin", "list"]):
        result = tool(*args)
        assert result.returncode == 0 and result.stdout.startswith(f"{ALICE.id}: "), (args, result.stderr)
    directory = tool("admin", "list", "--file", str(tmp_path))
    assert directory.returncode == 1
    assert directory.stderr.strip() == (
        f"{tmp_path} is a directory: give --file the path of the bot's database file.")


async def _one_note(db: Path) -> None:
    async with bot(db) as chat:
        await chat.send("hello")
