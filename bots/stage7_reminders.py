"""Stage 7: reminders, and a form with a timeout, that survive restarts - on any persistence.

* ``/remind <duration> <text>`` - once, e.g. ``/remind 10m stretch`` (durations: ``30s``, ``10m``,
  ``1h30m``, ``2d``);
* ``/every <duration> <text>`` - again and again, e.g. ``/every 1h drink water``;
* ``/reminders`` - this chat's reminders, numbered, with the next time each fires;
* ``/cancel <number>`` - cancel one;
* ``/new`` - the same as a form: what, then when. It times out after ``FORM_TIMEOUT`` seconds
  without an answer (``ConversationHandler(conversation_timeout=...)``); ``/stop`` leaves it.

PTB does not persist its ``JobQueue``, nor the timers of ``conversation_timeout``. This bot keeps
*what* each job is as plain data in ``chat_data`` and re-creates the jobs when it starts, in
``post_init`` - see :mod:`bots.jobs` for where, why, and the rules: stable job names (a restart
never duplicates one), an explicit policy for runs missed while the bot was down (a one-off is sent
at start-up, marked late; a repeating one skips them), at most once (a run is claimed and saved
before it is sent), and form deadlines kept across a restart.

Run it::

    python -m bots.stage7_reminders            # offline chat in this terminal
    python -m bots.stage7_reminders --demo     # scripted conversation with restarts
    BOT_TOKEN=123:ABC python -m bots.stage7_reminders   # on Telegram

The data file is ``./stage7.sqlite3``; choose another with ``--file PATH`` or ``STAGE7_FILE``.
In the terminal chat, reminders arrive as ``bot>`` lines while you type.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BasePersistence,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import BaseRequest

from bots import jobs
from bots.commands import UNKNOWN_COMMAND
from bots.logs import log_error
from bots.offline import OFFLINE_TOKEN, OfflineChat, Stage, run_stage
from persistence.sqlite import DatabaseFileError, SQLitePersistence

FORM_TIMEOUT = 60.0
"""Seconds the ``/new`` form waits for an answer before it ends (its ``conversation_timeout``)."""

FORM = "new_reminder"
"""The name of the ``/new`` conversation (a persistent conversation needs one)."""

WHAT, WHEN = range(2)

MAX_REMINDERS = 100
"""Reminders one chat may have at a time."""

MAX_TEXT = 1000
"""The longest reminder text, in characters (a Telegram message holds 4096)."""

DURATIONS = "30s, 10m, 1h30m or 2d"
REMIND_USAGE = f"Use /remind <duration> <text>, e.g. /remind 10m stretch (durations: {DURATIONS})."
EVERY_USAGE = f"Use /every <duration> <text>, e.g. /every 1h drink water (durations: {DURATIONS})."
CANCEL_USAGE = "Use /cancel <number>, e.g. /cancel 1; /reminders shows the numbers."
HELP = (
    "I send reminders, and remember them when I restart.\n"
    "/remind 10m stretch - once\n/every 1h drink water - repeatedly\n"
    "/reminders - the list\n/cancel 1 - cancel reminder 1\n/new - set one step by step"
)
NONE_YET = "No reminders in this chat. Set one with /remind 10m stretch or /every 1h drink water."
ASK_WHAT = "What should I remind you of? (/stop leaves this form)"
ASK_WHEN = f"In how long? Send a duration like {DURATIONS}."
BAD_WHEN = f"I cannot read {{text!r}} as a duration. Send one like {DURATIONS}."
STOPPED = "Form stopped; no reminder was set."
TOO_LONG = f"That text has {{length}} characters; a reminder holds {MAX_TEXT}."
TIMED_OUT = "The /new form timed out (no answer for {timeout}); no reminder was set. /new starts again."


def clock(seconds: float) -> str:
    """A Unix time as ``HH:MM:SS UTC`` (the bot does not know the user's time zone)."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(seconds))


def describe(reminder: jobs.Reminder, now: float) -> str:
    """One line of ``/reminders``: number, when it fires next, how often, text."""
    when = f"in {jobs.format_duration(reminder['due'] - now)} ({clock(reminder['due'])})"
    if reminder["every"]:
        when = f"every {jobs.format_duration(reminder['every'])}, next {when}"
    return f"{reminder['id']}. {when}: {reminder['text']}"


def parse_reminder(args: list[str], usage: str) -> tuple[int, str]:
    """``["10m", "stretch"]`` -> ``(600, "stretch")``; ``ValueError`` with a one-line answer else."""
    if not args:
        raise ValueError(usage)
    try:
        seconds = jobs.parse_duration(args[0])
    except ValueError as exc:
        raise ValueError(f"{str(exc).capitalize()}. {usage}") from exc
    text = " ".join(args[1:]).strip()
    if not text:
        raise ValueError(f"What should I remind you of? {usage}")
    if len(text) > MAX_TEXT:
        raise ValueError(f"{TOO_LONG.format(length=len(text))} {usage}")
    return seconds, text


async def set_reminder(update: Update, context: ContextTypes.DEFAULT_TYPE, seconds: int, text: str,
                       every: bool) -> None:
    """Store and schedule a reminder, and confirm it with its number."""
    chat_id = update.effective_chat.id
    if len(jobs.reminders_of(context.chat_data)) >= MAX_REMINDERS:
        await update.effective_message.reply_text(
            f"This chat has {MAX_REMINDERS} reminders, the most it can have. "
            f"Cancel one first: /reminders lists them, /cancel <number> cancels one.")
        return
    reminder = await jobs.add_reminder(context.application, chat_id, text, seconds,
                                       every=seconds if every else None)
    how = f"every {jobs.format_duration(seconds)}, first" if every else "once,"
    await update.effective_message.reply_text(
        f"Reminder {reminder['id']} set, {how} in {jobs.format_duration(seconds)} "
        f"({clock(reminder['due'])}): {text}. /cancel {reminder['id']} cancels it."
    )


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(HELP)


async def remind(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/remind <duration> <text>``: a one-off reminder."""
    await reminder_command(update, context, REMIND_USAGE, repeat=False)


async def every(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/every <duration> <text>``: a repeating reminder; the first run is one period away."""
    await reminder_command(update, context, EVERY_USAGE, repeat=True)


async def reminder_command(update: Update, context: ContextTypes.DEFAULT_TYPE, usage: str,
                           repeat: bool) -> None:
    """Read the command's arguments; answer bad ones with the right form, else set the reminder."""
    try:
        seconds, text = parse_reminder(context.args, usage)
    except ValueError as exc:
        await update.effective_message.reply_text(str(exc))
        return
    await set_reminder(update, context, seconds, text, every=repeat)


async def list_reminders(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/reminders``: numbered, soonest first, with the next time each fires."""
    reminders = jobs.reminders_of(context.chat_data)
    if not reminders:
        await update.effective_message.reply_text(NONE_YET)
        return
    now = time.time()
    lines = [describe(reminder, now) for reminder in reminders]
    await update.effective_message.reply_text("\n".join(["Reminders here:", *lines, CANCEL_USAGE]))


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/cancel <number>``: cancel a reminder for good (the cancellation is saved at once)."""
    args = context.args or []
    if len(args) != 1 or not args[0].isdecimal():
        await update.effective_message.reply_text(CANCEL_USAGE)
        return
    number = int(args[0])
    reminder = await jobs.cancel_reminder(context.application, update.effective_chat.id, number)
    if reminder is None:
        await update.effective_message.reply_text(f"There is no reminder {number} here. {CANCEL_USAGE}")
        return
    await update.effective_message.reply_text(f"Reminder {number} cancelled: {reminder['text']}")


async def migrate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A group became a supergroup: its reminders move with it. Telegram sends a service message
    in each chat; only the old group's one (``migrate_to_chat_id``) is acted on."""
    if update.effective_message.migrate_to_chat_id:
        await jobs.migrate_chat(context.application, update.effective_message)


# The /new form -----------------------------------------------------------------------------------
def form_of(update: Update, context: ContextTypes.DEFAULT_TYPE) -> dict:
    """The answers of this user's form in this chat (``user_data`` by chat id, like stage 4)."""
    return context.user_data.setdefault("forms", {}).setdefault(str(update.effective_chat.id), {})


def end_form(update: Update, context: ContextTypes.DEFAULT_TYPE) -> dict:
    """Forget the form's answers and its deadline; return the answers."""
    jobs.end_activity(update, context, FORM)
    forms = context.user_data.get("forms", {})
    answers = forms.pop(str(update.effective_chat.id), {})
    if not forms:
        context.user_data.pop("forms", None)
    return answers


async def new_form(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    end_form(update, context)
    form_of(update, context)
    jobs.note_activity(update, context, FORM)
    await update.effective_message.reply_text(ASK_WHAT)
    return WHAT


async def receive_what(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    text = update.effective_message.text.strip()
    jobs.note_activity(update, context, FORM)
    if len(text) > MAX_TEXT:
        await update.effective_message.reply_text(f"{TOO_LONG.format(length=len(text))} {ASK_WHAT}")
        return WHAT
    form_of(update, context)["text"] = text
    await update.effective_message.reply_text(ASK_WHEN)
    return WHEN


async def receive_when(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    text = update.effective_message.text.strip()
    try:
        seconds = jobs.parse_duration(text)
    except ValueError:
        jobs.note_activity(update, context, FORM)
        await update.effective_message.reply_text(BAD_WHEN.format(text=text))
        return WHEN
    answers = end_form(update, context)
    await set_reminder(update, context, seconds, answers["text"], every=False)
    return ConversationHandler.END


async def stop_form(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    end_form(update, context)
    await update.effective_message.reply_text(STOPPED)
    return ConversationHandler.END


async def form_timed_out(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The ``TIMEOUT`` behaviour: PTB calls it with the form's last update when the form has had
    no answer for ``conversation_timeout`` seconds; :func:`deadline_passed` calls it after a
    restart. It says so in the chat, and the conversation ends."""
    end_form(update, context)
    timeout = jobs.format_duration(jobs.conversation_timeout(context.application, FORM) or 0)
    await context.bot.send_message(update.effective_chat.id, TIMED_OUT.format(timeout=timeout))


async def deadline_passed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    """The form's deadline passed while the bot was down (or before the restarted bot's own
    timer could run): time out the way PTB would have, and end the form."""
    await form_timed_out(update, context)
    return ConversationHandler.END


async def stale_deadline(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    """A deadline for a form that has already ended: forget it, say nothing."""
    end_form(update, context)
    return ConversationHandler.END


def build_form(timeout: float, persistent: bool) -> ConversationHandler:
    """``/new``: what, then when. ``TypeHandler(jobs.ConversationDeadline, ...)`` comes first in
    every state, so a deadline fed back at start-up ends the form however it was left.

    No ``allow_reentry``: with it, entry points are tried before the states, and ``/new`` fed back
    as a deadline would start the form again instead of ending it."""
    deadline = TypeHandler(jobs.ConversationDeadline, deadline_passed)
    return ConversationHandler(
        entry_points=[TypeHandler(jobs.ConversationDeadline, stale_deadline),
                      CommandHandler("new", new_form)],
        states={
            WHAT: [deadline, MessageHandler(filters.TEXT & ~filters.COMMAND, receive_what)],
            WHEN: [deadline, MessageHandler(filters.TEXT & ~filters.COMMAND, receive_when)],
            ConversationHandler.TIMEOUT: [TypeHandler(Update, form_timed_out)],
        },
        fallbacks=[CommandHandler("stop", stop_form)],
        conversation_timeout=timeout,
        name=FORM,
        persistent=persistent,
    )


def build_application(
    token: str | None = None,
    persistence: BasePersistence | None = None,
    request: BaseRequest | None = None,
    *,
    form_timeout: float = FORM_TIMEOUT,
) -> Application:
    """The reminder bot over ``persistence`` (``None``: it forgets everything at a restart);
    ``request`` replaces PTB's HTTP layer (the offline Bot API in tests, notebooks and the
    terminal chat). ``post_init(jobs.restore_jobs)`` re-creates the stored jobs at start-up."""
    if persistence is not None and not persistence.store_data.chat_data:
        raise ValueError("the reminder bot keeps its reminders in chat_data, but this persistence "
                         "does not store chat data: leave store_data at its default, or pass "
                         "PersistenceInput(chat_data=True)")
    builder = ApplicationBuilder().token(token or OFFLINE_TOKEN).persistence(persistence)
    if request is not None:
        builder.request(request).get_updates_request(request)
    app = builder.post_init(jobs.restore_jobs).build()
    app.add_handler(build_form(form_timeout, persistent=persistence is not None))
    app.add_handler(CommandHandler(["start", "help"], start))
    app.add_handler(CommandHandler("remind", remind))
    app.add_handler(CommandHandler("every", every))
    app.add_handler(CommandHandler("reminders", list_reminders))
    app.add_handler(CommandHandler("cancel", cancel))
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, migrate))
    app.add_handler(UNKNOWN_COMMAND)  # last: answers the commands the handlers above leave
    app.add_error_handler(log_error)
    return app


def make_persistence(path: Path) -> SQLitePersistence:
    """Reminders live in chat_data, so any persistence would do; this stage uses SQLite."""
    return SQLitePersistence(filepath=path)


async def demo(chat: OfflineChat) -> None:
    """A reminder arriving, a repeating one, a restart, and a reminder missed while the bot was down."""
    await chat.send("/remind 2s stretch")
    await chat.send("/every 3s drink water")
    await chat.send("/reminders")
    await chat.wait_for_messages(2, within=10)
    await chat.send("/cancel 2")
    await chat.send("/remind 1s look away from the screen")
    print("  ... the bot stops for 3 seconds ...")
    await chat.shutdown()
    await asyncio.sleep(3)  # the downtime the demo is about, not a wait for something to happen
    await chat.start()
    await chat.wait_for_messages(1, within=10)
    await chat.send("/reminders")


STAGE = Stage(
    name="stage7_reminders",
    build_application=build_application,
    make_persistence=make_persistence,
    default_file="stage7.sqlite3",
    file_env="STAGE7_FILE",
    demo=demo,
    file_errors=(DatabaseFileError,),
    description="Stage 7: reminders and a form with a timeout that survive restarts.",
)


def main() -> int:
    return run_stage(STAGE)


if __name__ == "__main__":
    raise SystemExit(main())
