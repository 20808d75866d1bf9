"""A persistence that records every call Application makes, then forwards it to a real one.

Wrap any persistence to see *when* PTB reads and writes, with what::

    recorder = RecordingPersistence(PicklePersistence("bot.pickle"))
    app = ApplicationBuilder().token(...).persistence(recorder).build()
    ...
    for call in recorder.calls:
        print(call)

``recorder.mark("text")`` adds a label (e.g. "app.initialize()") between the calls, so a recorded
run reads like a timeline. :func:`to_mermaid` turns such a timeline into the sequence diagram that
the README and ``notebooks/00_how_persistence_is_called.ipynb`` show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telegram import Bot
from telegram.ext import BasePersistence


def summarize(value: Any) -> str:
    """A short description of the data handed over: the shape, not the content."""
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        keys = list(value)
        shown = ", ".join(repr(k) for k in keys[:3]) + (", ..." if len(keys) > 3 else "")
        return f"{{{shown}}}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return repr(value) if len(repr(value)) <= 30 else type(value).__name__


@dataclass(frozen=True)
class Call:
    """One call to the persistence (or a label put in with :meth:`RecordingPersistence.mark`)."""

    method: str
    key: str = ""
    data: str = ""

    @property
    def is_mark(self) -> bool:
        return self.method.startswith("#")

    def __str__(self) -> str:
        if self.is_mark:
            return f"-- {self.method[1:].strip()} --"
        args = ", ".join(part for part in (self.key, self.data) if part)
        return f"{self.method}({args})"


class RecordingPersistence(BasePersistence[Any, Any, Any]):
    """Forwards all 16 methods to ``inner`` and appends a :class:`Call` to ``calls`` for each.

    It takes ``store_data`` and ``update_interval`` from ``inner``, so Application treats it
    exactly as it would treat ``inner``.
    """

    def __init__(self, inner: BasePersistence[Any, Any, Any]) -> None:
        super().__init__(store_data=inner.store_data, update_interval=inner.update_interval)
        self.inner = inner
        self.calls: list[Call] = []

    def mark(self, label: str) -> None:
        """Put a label into the timeline (what the application was doing next)."""
        self.calls.append(Call("# " + label))

    def _record(self, method: str, key: Any = None, data: Any = ...) -> None:
        self.calls.append(Call(method, "" if key is None else repr(key),
                               "" if data is ... else summarize(data)))

    def set_bot(self, bot: Bot) -> None:
        super().set_bot(bot)
        self.inner.set_bot(bot)

    # loads at initialize() --------------------------------------------------------------------
    async def get_user_data(self) -> dict[int, Any]:
        result = await self.inner.get_user_data()
        self._record("get_user_data", data=result)
        return result

    async def get_chat_data(self) -> dict[int, Any]:
        result = await self.inner.get_chat_data()
        self._record("get_chat_data", data=result)
        return result

    async def get_bot_data(self) -> Any:
        result = await self.inner.get_bot_data()
        self._record("get_bot_data", data=result)
        return result

    async def get_callback_data(self) -> Any:
        result = await self.inner.get_callback_data()
        self._record("get_callback_data", data=result)
        return result

    async def get_conversations(self, name: str) -> Any:
        result = await self.inner.get_conversations(name)
        self._record("get_conversations", name, result)
        return result

    # refreshes before handlers ----------------------------------------------------------------
    async def refresh_user_data(self, user_id: int, user_data: Any) -> None:
        self._record("refresh_user_data", user_id)
        await self.inner.refresh_user_data(user_id, user_data)

    async def refresh_chat_data(self, chat_id: int, chat_data: Any) -> None:
        self._record("refresh_chat_data", chat_id)
        await self.inner.refresh_chat_data(chat_id, chat_data)

    async def refresh_bot_data(self, bot_data: Any) -> None:
        self._record("refresh_bot_data")
        await self.inner.refresh_bot_data(bot_data)

    # writes at update_persistence() ------------------------------------------------------------
    async def update_user_data(self, user_id: int, data: Any) -> None:
        self._record("update_user_data", user_id, data)
        await self.inner.update_user_data(user_id, data)

    async def update_chat_data(self, chat_id: int, data: Any) -> None:
        self._record("update_chat_data", chat_id, data)
        await self.inner.update_chat_data(chat_id, data)

    async def update_bot_data(self, data: Any) -> None:
        self._record("update_bot_data", data=data)
        await self.inner.update_bot_data(data)

    async def update_callback_data(self, data: Any) -> None:
        self._record("update_callback_data", data=data)
        await self.inner.update_callback_data(data)

    async def update_conversation(self, name: str, key: Any, new_state: Any) -> None:
        self._record("update_conversation", (name, key), new_state)
        await self.inner.update_conversation(name, key, new_state)

    async def drop_user_data(self, user_id: int) -> None:
        self._record("drop_user_data", user_id)
        await self.inner.drop_user_data(user_id)

    async def drop_chat_data(self, chat_id: int) -> None:
        self._record("drop_chat_data", chat_id)
        await self.inner.drop_chat_data(chat_id)

    async def flush(self) -> None:
        self._record("flush")
        await self.inner.flush()


METHOD_ORDER = [
    "get_user_data", "get_chat_data", "get_bot_data", "get_callback_data", "get_conversations",
    "refresh_bot_data", "refresh_chat_data", "refresh_user_data",
    "update_bot_data", "update_callback_data", "update_chat_data", "update_user_data",
    "update_conversation", "drop_chat_data", "drop_user_data", "flush",
]
"""Application's own order: loads, refreshes, writes, drops, flush."""


def to_mermaid(calls: list[Call]) -> str:
    """A Mermaid sequence diagram of a recorded timeline.

    Each label becomes a note over the Application; the calls that follow it are listed once
    per method (several ids of the same method are one arrow), in :data:`METHOD_ORDER` - a save
    round runs its writes concurrently from a ``set``, so the order they start in is not fixed.
    A label followed by no call says so: that *nothing* is written is half the lesson.
    """
    lines = [
        "sequenceDiagram",
        "    participant App as Application",
        "    participant P as Persistence",
    ]
    sections: list[tuple[str, list[str]]] = []
    for call in calls:
        if call.is_mark:
            sections.append((call.method[1:].strip(), []))
        elif not sections:
            sections.append(("", [call.method]))
        elif call.method not in sections[-1][1]:
            sections[-1][1].append(call.method)
    for label, methods in sections:
        methods.sort(key=METHOD_ORDER.index)
        if label:
            lines.append(f"    Note over App: {label}")
        if not methods:
            lines.append("    Note over P: no call")
        for method in methods:
            lines.append(f"    App->>P: {method}")
    return "\n".join(lines)
