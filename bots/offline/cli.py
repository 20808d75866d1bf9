"""The command line every stage's ``main()`` runs: :func:`run_stage`.

With ``BOT_TOKEN`` set the bot polls Telegram; without, it is a chat in this terminal over the
offline Bot API; with ``--demo`` it plays the stage's scripted conversation with a restart in the
middle. A data file that cannot be used stops the bot with one message naming it, untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from telegram import Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import BasePersistence

from bots.logs import configure_logging
from bots.offline.chat import BuildApplication, OfflineChat, indent

Demo = Callable[[OfflineChat], Awaitable[None]]


@dataclass
class Stage:
    """What :func:`run_stage` needs to know about a stage."""

    name: str
    build_application: BuildApplication
    make_persistence: Callable[[Path], BasePersistence]
    default_file: str
    file_env: str
    demo: Demo
    description: str = ""
    extra_help: list[str] = field(default_factory=list)
    file_errors: tuple[type[Exception], ...] = ()
    """Errors of the persistence whose message already names the data file and the fix:
    shown as they are (e.g. ``SQLitePersistence``'s ``DatabaseFileError``)."""


OFFLINE_HELP = (
    "Offline chat: each line you type is a message from Alice. "
    "/restart restarts the bot, /click TEXT presses a button, /quit (or end of input) saves and exits."
)


def run_stage(stage: Stage, argv: Sequence[str] | None = None) -> int:
    """``main()`` of every stage: polling with ``BOT_TOKEN``, a terminal chat without, or ``--demo``."""
    parser = argparse.ArgumentParser(prog=f"python -m bots.{stage.name}", description=stage.description)
    parser.add_argument(
        "--file", type=Path, default=None,
        help=f"where the bot keeps its data (default: ${stage.file_env} or ./{stage.default_file}; "
        "--demo uses a temporary file unless this is given)",
    )
    parser.add_argument("--demo", action="store_true",
                        help="play a scripted conversation with a restart, offline, and exit")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING if not os.environ.get("BOT_TOKEN") else logging.INFO)
    token = os.environ.get("BOT_TOKEN")
    try:
        if args.demo:
            with tempfile.TemporaryDirectory(prefix="cookbook-demo-") as tmp:
                return asyncio.run(_run_demo(stage, _usable(args.file or Path(tmp) / stage.default_file)))
        path = _usable(args.file or Path(os.environ.get(stage.file_env) or stage.default_file))
        if token:
            app = stage.build_application(token=token, persistence=stage.make_persistence(path))
            print(f"Polling Telegram; data is kept in {path}. Press Ctrl+C to stop.", file=sys.stderr)
            app.run_polling(allowed_updates=Update.ALL_TYPES)
            return 0
        print(f"No BOT_TOKEN set, so the bot runs offline in this terminal (data in {path}). "
              "To run it on Telegram: BOT_TOKEN=<token from @BotFather> "
              f"python -m bots.{stage.name}", file=sys.stderr)
        return asyncio.run(_terminal_chat(stage, path))
    except InvalidToken:
        print("Telegram refused BOT_TOKEN: check the token @BotFather gave you, "
              "or unset BOT_TOKEN to run offline.", file=sys.stderr)
        return 1
    except NetworkError as exc:
        print(f"Cannot reach Telegram ({exc}). Check this machine's network, "
              "or unset BOT_TOKEN to run offline.", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 1
    except stage.file_errors as exc:  # a bad file found by run_polling's start-up
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("(interrupted)", file=sys.stderr)
        return 130


def _usable(path: Path) -> Path:
    """``path``, if the bot can keep its data there; else a StartupError naming it."""
    if path.is_dir():
        raise StartupError(f"{path} is a directory: give --file the path of a file.")
    if not path.parent.is_dir():
        raise StartupError(f"Cannot keep the bot's data in {path}: the directory {path.parent} "
                           "does not exist. Create it, or point --file elsewhere.")
    return path


class StartupError(Exception):
    """The bot could not start over its data file; the message names the file and the fix."""


async def _start_over(chat: OfflineChat, stage: Stage, path: Path) -> None:
    """Start the chat, turning a failure to load ``path`` into one clear :class:`StartupError`.

    Nothing is written before the data has loaded, so the file is left exactly as it was."""
    try:
        await chat.start()
    except Exception as exc:
        chat.discard()
        if isinstance(exc, stage.file_errors):  # it already names the file and the fix
            raise StartupError(str(exc)) from exc
        raise StartupError(
            f"Cannot load the bot's data from {path}: {exc}\n"
            f"The file was not changed. Move it away to start fresh, or point --file at another file."
        ) from exc


async def _run_demo(stage: Stage, path: Path) -> int:
    print(f"Demo of {stage.name}, data in {path}\n")
    chat = OfflineChat(stage.build_application, lambda: stage.make_persistence(path), echo=True)
    await _start_over(chat, stage, path)
    try:
        await stage.demo(chat)
    finally:
        await chat.shutdown()
    return 0


async def _terminal_chat(stage: Stage, path: Path) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        print(OFFLINE_HELP, file=sys.stderr)
    chat = OfflineChat(stage.build_application, lambda: stage.make_persistence(path))
    await _start_over(chat, stage, path)
    async with chat:
        printer = asyncio.create_task(_print_unprompted(chat))
        try:
            await _chat_loop(chat, interactive)
        finally:
            printer.cancel()
            _print_replies(chat.unprompted_messages())
    if interactive:
        print(f"(saved to {path})", file=sys.stderr)
    return 0


async def _chat_loop(chat: OfflineChat, interactive: bool) -> None:
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip() == "/quit":
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() == "/restart":
            await chat.restart()
            print("(the bot restarted)")
            continue
        if text.startswith("/click "):
            try:
                replies = await chat.click(text[len("/click "):].strip())
            except LookupError as exc:
                print(f"(cannot click: {exc})")
                continue
        else:
            replies = await chat.send(text)
        _print_replies(replies)
        if replies and chat.last_keyboard_is_new:
            print("     buttons: " + "  ".join(f"[{label}]" for label in chat.button_labels())
                  + "   (/click LABEL)")


async def _print_unprompted(chat: OfflineChat) -> None:
    """Show what the bot sends on its own (a reminder firing) the way replies are shown."""
    while True:
        _print_replies(await chat.wait_for_messages(1, within=None))


def _print_replies(replies: list[str]) -> None:
    for reply in replies:
        print(indent("bot> ", reply), flush=True)
