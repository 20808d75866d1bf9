"""Stage 1: the logger on PicklePersistence, and when PTB really writes the file."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

from telegram.ext import PicklePersistence

from bots import stage1_pickle_logger as stage1
from bots.offline import ALICE, BOB, OfflineChat
from persistence.recording import RecordingPersistence


def stored_chat_data(path: Path) -> dict:
    """What is in the pickle file right now (PicklePersistence keeps one dict per kind)."""
    with path.open("rb") as file:
        return pickle.load(file)["chat_data"]


async def test_start_explains(stage1_chat):
    assert await stage1_chat.send("/start") == [stage1.START_TEXT]


async def test_messages_are_stored_silently_and_listed(stage1_chat):
    assert await stage1_chat.send("remember the milk") == []
    assert await stage1_chat.send("and the eggs") == []
    [reply] = await stage1_chat.send("/show_data")
    assert reply.startswith("2 stored message(s):")
    assert reply.index("remember the milk") < reply.index("and the eggs")


async def test_empty_chat_says_so(stage1_chat):
    assert await stage1_chat.send("/show_data") == ["Nothing stored for this chat yet."]


async def test_chats_are_kept_apart(stage1_chat):
    await stage1_chat.send("from alice", user=ALICE)
    await stage1_chat.send("from bob", user=BOB)
    [alice_view] = await stage1_chat.send("/show_data", user=ALICE)
    assert "from alice" in alice_view and "from bob" not in alice_view


async def test_data_survives_a_restart(stage1_chat):
    await stage1_chat.send("remember the milk")
    await stage1_chat.restart()
    [reply] = await stage1_chat.send("/show_data")
    assert "remember the milk" in reply
    assert stage1_chat.app.chat_data[ALICE.id]["messages"][0]["message"] == "remember the milk"


async def test_nothing_is_on_disk_before_a_save(stage1_chat, pickle_path):
    await stage1_chat.send("remember the milk")
    assert not pickle_path.exists()
    await stage1_chat.save()
    assert [m["message"] for m in stored_chat_data(pickle_path)[ALICE.id]["messages"]] == [
        "remember the milk"
    ]


async def test_shutdown_saves(pickle_path):
    chat = OfflineChat(stage1.build_application, lambda: PicklePersistence(pickle_path))
    await chat.start()
    await chat.send("remember the milk")
    await chat.shutdown()
    assert stored_chat_data(pickle_path)[ALICE.id]["messages"][0]["message"] == "remember the milk"


async def test_stop_alone_saves_nothing(pickle_path):
    chat = OfflineChat(stage1.build_application, lambda: PicklePersistence(pickle_path))
    await chat.start()
    await chat.send("remember the milk")
    await chat.app.stop()
    assert not pickle_path.exists(), "stop() wrote the file, contrary to what PTB 22.8 does"
    await chat.shutdown()  # now it is saved
    assert ALICE.id in stored_chat_data(pickle_path)


async def test_the_periodic_save_runs_every_update_interval(pickle_path):
    """No save is forced here: the task started by ``app.start()`` writes on its own."""

    class NotifyingRecorder(RecordingPersistence):
        def __init__(self, inner):
            super().__init__(inner)
            self.chat_saved = asyncio.Event()

        async def update_chat_data(self, chat_id, data):
            await super().update_chat_data(chat_id, data)
            self.chat_saved.set()

    recorder = NotifyingRecorder(PicklePersistence(pickle_path, update_interval=0.05))
    async with OfflineChat(stage1.build_application, lambda: recorder) as chat:
        await chat.send("remember the milk")
        async with asyncio.timeout(10):
            await recorder.chat_saved.wait()
        assert ALICE.id in stored_chat_data(pickle_path)
