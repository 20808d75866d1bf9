"""One recorded run of the stage 1 bot: every call Application makes to its persistence, in order.

``notebooks/00_how_persistence_is_called.ipynb`` walks through this run step by step, and the
sequence diagram in the README is ``to_mermaid(await record_lifecycle(path))`` - a test keeps the
two equal, so the diagram always shows what PTB really does.
"""

from __future__ import annotations

from pathlib import Path

from telegram.ext import PicklePersistence

from bots import stage1_pickle_logger as stage1
from bots.offline import ALICE, BOB, OfflineChat
from persistence.recording import Call, RecordingPersistence


async def record_lifecycle(path: Path) -> list[Call]:
    """Run the logger over a recorded ``PicklePersistence`` at ``path`` and return the timeline."""
    recorder = RecordingPersistence(PicklePersistence(path))
    chat = OfflineChat(stage1.build_application, lambda: recorder)
    recorder.mark("initialize() loads everything, once")
    await chat.start()
    recorder.mark("process_update() - refresh before each handler, nothing is written")
    await chat.send("hello", user=ALICE)
    await chat.send("hi there", user=BOB)
    recorder.mark("update_persistence() - the periodic save writes only the changed ids")
    await chat.save()
    recorder.mark("update_persistence() again with nothing new - bot_data is still written")
    await chat.save()
    recorder.mark("a message between two saves - refreshed, not written")
    await chat.send("one more", user=ALICE)
    recorder.mark("stop() saves nothing")
    await chat.app.stop()
    recorder.mark("shutdown() - a last save of what changed, then flush()")
    await chat.shutdown()
    return recorder.calls
