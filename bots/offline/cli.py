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
import re
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from telegram import Bot, Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import BasePersistence

from bots.logs import configure_logging
from bots.offline.chat import BuildApplication, OfflineChat, indent

Demo = Callable[[OfflineChat], Awaitable[None]]

logger = logging.getLogger("bots")


@dataclass
class Stage:
    """What :func:`run_stage` needs to know about a stage."""

    name: str
    build_application: BuildApplication
    make_persistence: Callable[..., BasePersistence]
    """``make_persistence(path)``; with ``serializer_option``, ``make_persistence(path, serializer=...)``."""
    default_file: str
    file_env: str
    demo: Demo
    description: str = ""
    file_errors: tuple[type[Exception], ...] = ()
    """Errors of the persistence whose message already names the data file and the fix:
    shown as they are (e.g. ``SQLitePersistence``'s ``DatabaseFileError``)."""
    serializer_option: bool = False
    """Offer ``--serializer json|pickle`` (``SQLitePersistence``'s ``serializer``)."""


CHAT_COMMANDS = """\
offline chat (no BOT_TOKEN): each line you type is a message from Alice; the
bot's replies, and what it sends on its own (a reminder), are printed. Besides the
bot's own commands:
  /restart       restart the bot over the same data (shutdown saves, a new one loads)
  /click LABEL   press a button of the last inline keyboard the bot sent
  /quit          save and exit; so do end of input (Ctrl+D) and Ctrl+C"""

OFFLINE_HELP = ("Offline chat: /restart restarts the bot, /click LABEL presses a button, "
                "/quit or Ctrl+C saves and exits.")

TOKEN_SHAPE = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")
"""What @BotFather hands out: the bot's id, a colon, and a secret of letters, digits, _ and -."""


def run_stage(stage: Stage, argv: Sequence[str] | None = None) -> int:
    """``main()`` of every stage: polling with ``BOT_TOKEN``, a terminal chat without, or ``--demo``."""
    args = _parser(stage).parse_args(argv)
    token = os.environ.get("BOT_TOKEN")
    level = logging.DEBUG if args.debug else logging.INFO if token else logging.WARNING
    configure_logging(level, token)
    try:
        if args.demo:
            with tempfile.TemporaryDirectory(prefix="cookbook-demo-") as tmp:
                path = usable_data_file(args.file or Path(tmp) / stage.default_file)
                return asyncio.run(_run_demo(stage, _persistence_factory(stage, args, path), path))
        path = usable_data_file(args.file or Path(os.environ.get(stage.file_env) or stage.default_file))
        make_persistence = _persistence_factory(stage, args, path)
        if token:
            return _poll(stage, token, make_persistence, path)
        print(f"No BOT_TOKEN set, so the bot runs offline in this terminal (data in {path}). "
              "To run it on Telegram: BOT_TOKEN=<token from @BotFather> "
              f"python -m bots.{stage.name}", file=sys.stderr)
        return asyncio.run(_terminal_chat(stage, make_persistence, path))
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 1
    except stage.file_errors as exc:  # a bad file found by run_polling's start-up
        print(_with_cli_hints(str(exc), stage), file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl+C offline: the chat or demo has shut the bot down, which saved
        print("\n(Ctrl+C: the bot stopped and saved its data)", file=sys.stderr)
        return 130


def _parser(stage: Stage) -> argparse.ArgumentParser:
    environment = (
        "environment:\n"
        "  BOT_TOKEN      the token from @BotFather: run the bot on Telegram (unset: offline chat)\n"
        f"  {stage.file_env:<14} the data file when --file is not given (default: ./{stage.default_file})"
    )
    parser = argparse.ArgumentParser(
        prog=f"python -m bots.{stage.name}", description=stage.description,
        epilog=f"{environment}\n\n{CHAT_COMMANDS}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--file", type=Path, default=None,
        help=f"where the bot keeps its data (default: ${stage.file_env} or ./{stage.default_file}; "
        "--demo uses a temporary file unless this is given)",
    )
    parser.add_argument("--demo", action="store_true",
                        help="play a scripted conversation with a restart, offline, and exit")
    if stage.serializer_option:
        parser.add_argument("--serializer", choices=["json", "pickle"], default="json",
                            help="how the data is stored: readable JSON (default) or pickle; it must "
                            "be the one the file was made with")
    parser.add_argument("--debug", action="store_true",
                        help="log everything, PTB's tracebacks included (the token stays hidden)")
    return parser


def _persistence_factory(stage: Stage, args: argparse.Namespace, path: Path) -> Callable[[], BasePersistence]:
    """A new persistence over ``path`` for every (re)start, with the options given."""
    if stage.serializer_option:
        return lambda: stage.make_persistence(path, serializer=args.serializer)
    return lambda: stage.make_persistence(path)


def _with_cli_hints(message: str, stage: Stage) -> str:
    """A persistence's advice, translated into the option that follows it here: the advice comes
    last, so the last ``serializer='...'`` the message names is the one to use."""
    advice = re.findall(r"serializer=['\"](json|pickle)['\"]", message)
    if stage.serializer_option and advice:
        message += f"\nOn the command line: --serializer {advice[-1]}."
    elif advice:
        message += (f"\nThis stage stores JSON and has no --serializer option: give it another file "
                    f"with --file (stage 3 reads both: python -m bots.stage3_sqlite_logger "
                    f"--serializer {advice[-1]} --file ...).")
    return message


# ---- on Telegram -------------------------------------------------------------------------------
def _poll(stage: Stage, token: str, make_persistence: Callable[[], BasePersistence], path: Path) -> int:
    """Check the token with one getMe, then poll until Ctrl+C (``run_polling`` saves on the way out)."""
    problem = token_problem(token) or asyncio.run(reach_telegram(token))
    if problem:
        print(problem, file=sys.stderr)
        return 1
    app = stage.build_application(token=token, persistence=make_persistence())
    print(f"Polling Telegram; data is kept in {path}. Press Ctrl+C to stop.", file=sys.stderr)
    app.run_polling(allowed_updates=Update.ALL_TYPES)
    return 0


def token_problem(token: str) -> str | None:
    """What is wrong with the shape of ``token``, in one line that does not show it; else None."""
    if TOKEN_SHAPE.fullmatch(token):
        return None
    if TOKEN_SHAPE.fullmatch(token.strip()):
        return ("BOT_TOKEN is malformed: it starts or ends with a space or a line break (copied with "
                "a newline?). Set it to the token exactly as @BotFather gave it.")
    return ("BOT_TOKEN is malformed: a token is the bot's id, a colon and letters, digits, _ and - "
            "(like 123456789:AAF...). Copy it again from @BotFather.")


async def reach_telegram(token: str) -> str | None:
    """Ask Telegram who the bot is (``getMe``): a rejected token or no network becomes one line
    here instead of PTB's retry loop and traceback (which go to the log at DEBUG)."""
    try:
        async with Bot(token):
            return None
    except InvalidToken as exc:
        logger.debug("getMe: Telegram rejected the token", exc_info=exc)
        return ("Telegram refused BOT_TOKEN: check the token @BotFather gave you, "
                "or unset BOT_TOKEN to run offline.")
    except NetworkError as exc:
        logger.debug("getMe: Telegram could not be reached", exc_info=exc)
        return (f"Cannot reach Telegram ({str(exc).replace(token, '<BOT_TOKEN>')}). Check this "
                "machine's network, or unset BOT_TOKEN to run offline.")


# ---- the data file -----------------------------------------------------------------------------
class StartupError(Exception):
    """The bot could not start over its data file; the message names the file and the fix."""


def usable_data_file(path: Path) -> Path:
    """``path``, if the bot can keep its data there; else a :class:`StartupError` naming it.

    Checked before the bot starts, so that a place it cannot write is one line now rather than an
    error at every save and the data of the whole run lost at exit."""
    if path.is_dir():
        raise StartupError(f"{path} is a directory: give --file the path of a file.")
    if not path.parent.is_dir():
        raise StartupError(f"Cannot keep the bot's data in {path}: the directory {path.parent} "
                           "does not exist. Create it, or point --file elsewhere.")
    existed = path.exists()
    try:
        with path.open("ab"):  # appends nothing: only asks the system whether we may write
            pass
    except OSError as exc:
        raise StartupError(
            f"Cannot keep the bot's data in {path}: {exc.strerror or exc}. "
            + ("Make the file writable for this user, " if existed
               else f"Make the directory {path.parent} writable for this user, ")
            + "or point --file at a place you can write."
        ) from exc
    if not existed:
        path.unlink()
    return path


async def _start_over(chat: OfflineChat, stage: Stage, path: Path) -> None:
    """Start the chat, turning a failure to load ``path`` into one clear :class:`StartupError`.

    Nothing is written before the data has loaded, so the file is left exactly as it was."""
    try:
        await chat.start()
    except Exception as exc:
        chat.discard()
        if isinstance(exc, stage.file_errors):  # it already names the file and the fix
            raise StartupError(_with_cli_hints(str(exc), stage)) from exc
        raise StartupError(
            f"Cannot load the bot's data from {path}: {exc}\n"
            f"The file was not changed. Move it away to start fresh, or point --file at another file."
        ) from exc


# ---- offline -----------------------------------------------------------------------------------
async def _run_demo(stage: Stage, make_persistence: Callable[[], BasePersistence], path: Path) -> int:
    print(f"Demo of {stage.name}, data in {path}\n")
    chat = OfflineChat(stage.build_application, make_persistence, echo=True)
    await _start_over(chat, stage, path)
    try:
        await stage.demo(chat)
    finally:
        await chat.shutdown()
    return 0


async def _terminal_chat(stage: Stage, make_persistence: Callable[[], BasePersistence], path: Path) -> int:
    """The chat in this terminal. Ctrl+C cancels it like end of input: the bot shuts down (which
    saves) at once, then :func:`run_stage` exits with 130."""
    interactive = sys.stdin.isatty()
    if interactive:
        print(OFFLINE_HELP, file=sys.stderr)
    chat = OfflineChat(stage.build_application, make_persistence)
    await _start_over(chat, stage, path)
    lines = StdinLines()
    async with chat:
        printer = asyncio.create_task(_print_unprompted(chat))
        try:
            while True:
                if interactive:
                    print("you> ", end="", flush=True)
                line = await lines.readline()
                if not line or line.strip() == "/quit":
                    break
                await say(chat, line.rstrip("\n"))
        finally:
            printer.cancel()
            _print_replies(chat.unprompted_messages())
    if interactive:
        print(f"(saved to {path})", file=sys.stderr)
    return 0


async def say(chat: OfflineChat, text: str) -> None:
    """One line of the terminal chat: a message, or /restart, or /click LABEL."""
    if not text.strip():
        return
    if text.strip() == "/restart":
        await chat.restart()
        print("(the bot restarted)")
        return
    if text.startswith("/click "):
        try:
            replies = await chat.click(text[len("/click "):].strip())
        except LookupError as exc:
            print(f"(cannot click: {exc})")
            return
    else:
        replies = await chat.send(text)
    _print_replies(replies)
    if replies and chat.last_keyboard_is_new:
        print("     buttons: " + "  ".join(f"[{label}]" for label in chat.button_labels())
              + "   (/click LABEL)")
    if not replies:
        print("     (handled: the bot chose not to answer)" if chat.last_update_handled
              else "     (no handler of this bot takes this message; no reply)")


class StdinLines:
    """Lines of standard input, read without blocking the event loop and without a thread.

    A thread blocked in ``readline`` cannot be interrupted: Ctrl+C would wait for Enter.
    Here the loop is told when input is ready; a cancelled wait (Ctrl+C) leaves nothing behind."""

    def __init__(self, fd: int | None = None) -> None:
        self._fd = sys.stdin.fileno() if fd is None else fd
        self._buffer = b""
        self._at_end = False

    async def readline(self) -> str:
        """The next line with its newline; ``""`` at end of input."""
        while b"\n" not in self._buffer and not self._at_end:
            await self._readable()
            chunk = os.read(self._fd, 65536)
            self._buffer += chunk
            self._at_end = not chunk
        line, newline, self._buffer = self._buffer.partition(b"\n")
        return (line + newline).decode(errors="replace")

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        try:
            loop.add_reader(self._fd, lambda: ready.done() or ready.set_result(None))
        except PermissionError:  # a regular file (input from '< file'): always readable
            return
        try:
            await ready
        finally:
            loop.remove_reader(self._fd)


async def _print_unprompted(chat: OfflineChat) -> None:
    """Show what the bot sends on its own (a reminder firing) the way replies are shown."""
    while True:
        _print_replies(await chat.wait_for_messages(1, within=None))


def _print_replies(replies: list[str]) -> None:
    for reply in replies:
        print(indent("bot> ", reply), flush=True)
