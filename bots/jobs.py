"""Jobs that survive restarts: reminders and conversation deadlines, stored as plain data.

PTB saves user, chat and bot data, conversations and buttons - but not its ``JobQueue``. A
``Job`` holds a callback, an APScheduler trigger and a reference to the running Application:
nothing a persistence can store. So this module stores *what a job is* instead - a few plain
values in ``chat_data`` - and re-creates the jobs from them when the bot starts (``post_init``).

Where: ``chat_data``, because a reminder belongs to the chat it is sent to. Every persistence
(``PicklePersistence``, ``SQLitePersistence``, ``PostgresPersistence``, ``DictPersistence``) stores
chat data; ``Application`` loads all of it at start-up, saves only the chats that changed, and
forgets a chat's reminders with the rest of its data (``drop_chat_data``). Only lists, dicts with
``str`` keys, ``str``, ``int``, ``float`` and ``None`` are stored, so even JSON-based persistences
keep it exactly. ``bot_data`` would work too, but it is written whole at every save.

``chat_data["reminders"]`` is a list of dicts::

    {"id": 3, "text": "stretch", "due": 1764500000.0, "every": None, "skipped": 0, "sending": None}

``due`` is the next run (Unix time, UTC), ``every`` the period in seconds (``None``: once),
``skipped`` the runs skipped while the bot was down, ``sending`` the run being delivered right now.

The rules:

* **Stable names.** Each reminder's job is named ``reminder <chat id>:<id>``; scheduling a reminder
  first removes any job of that name, so no restart (nor anything else) can duplicate one.
* **Missed runs.** At start-up a one-off reminder that came due while the bot was down is sent at
  once, saying how late it is; a repeating one skips the runs it missed (counting them) and fires
  next on its own schedule - no burst of catch-up messages.
* **At most once.** Before a reminder is sent, the run is *claimed*: ``sending`` is set (and a
  repeating reminder's ``due`` moved on) and the chat's data is written to the persistence at once,
  through ``BasePersistence.update_chat_data`` - the one write every persistence has, and one that
  raises if it fails. Only then is the message sent. A bot killed between the two finds the claim
  at its next start and does not send that run again: it logs a warning instead. So a reminder is
  never sent twice, at the price of one that may be lost if the bot dies in the instant between
  the claim and Telegram's answer. (The other order - send, then save - sends it twice after
  such a crash, and a reminder arriving twice is the bug users notice.) If the claim cannot be
  written, nothing is sent and the run is tried again ``RETRY_AFTER`` seconds later.
* **A failed send is not retried.** Once claimed, a run is over whether Telegram took the message
  or refused it (the error goes to the error handlers): the bot cannot tell whether a timed-out
  request was delivered, and at most once means not guessing.
* **Cancel stays cancelled.** Cancelling removes the dict and the job, and writes the chat at once.
* **Supergroups.** :func:`migrate_chat` moves the reminders, and their jobs, to the new chat id.
* **Conversation timeouts.** ``ConversationHandler(conversation_timeout=...)`` keeps its timers in
  the JobQueue too. :func:`note_activity` records, in ``chat_data``, when a user last moved their
  conversation on and the update that did it. At start-up :func:`restore_jobs` schedules the end of
  each such conversation at its original deadline; a deadline that passed while the bot was down
  ends the conversation at once. Either way the end goes through the conversation itself: the
  stored update is fed back as a :class:`ConversationDeadline`, which the conversation answers
  with its ``TIMEOUT`` behaviour and ``END`` (an approach a PTB maintainer suggested in ptb#1825).

Limits: one process runs the jobs. Several bot processes over one database (stage 9) would each
re-create, and send, every reminder: give the JobQueue to one of them. Reminders fire to the
second; :func:`restore_jobs` reads every chat's data at start-up (fine for many thousands of chats).
"""

from __future__ import annotations

import copy
import datetime as dtm
import json
import logging
import math
import re
import time
import warnings
from typing import Any

from telegram import Message, Update
from telegram.ext import Application, CallbackContext, ConversationHandler

logger = logging.getLogger(__name__)

REMINDERS = "reminders"
"""The ``chat_data`` key of a chat's reminders (a list of dicts)."""

NEXT_ID = "next_reminder_id"
"""The ``chat_data`` key of the number the chat's next reminder gets (numbers are never reused)."""

DEADLINES = "conversation_deadlines"
"""The ``chat_data`` key of conversations in progress: ``{conversation name: {str(user id): ...}}``."""

RETRY_AFTER = 30.0
"""Seconds to wait before trying a run again whose claim could not be saved."""

# APScheduler skips a job that starts more than ``misfire_grace_time`` (default: 1 s) late - e.g.
# one scheduled in post_init when start-up is slow. A reminder must never be skipped that way.
_JOB_KWARGS = {"misfire_grace_time": None}

MAX_DURATION = 366 * 86400
"""The longest delay or period a reminder accepts, in seconds (a year and a day)."""

Reminder = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Durations: "2s", "10m", "1h30m", "2d"
# --------------------------------------------------------------------------------------------
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> int:
    """Seconds in a duration like ``2s``, ``10m``, ``1h30m`` or ``2d`` (units in that order).

    Raises ``ValueError`` for anything else, and for zero or more than ``MAX_DURATION``."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNITS.values(), strict=True) if n)
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"{text!r} is not between 1s and {format_duration(MAX_DURATION)}")
    return seconds


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1h2m5s"``: the form :func:`parse_duration` reads (rounded to the second)."""
    left = max(0, round(seconds))
    parts = []
    for unit, size in _UNITS.items():
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def reminder_text(reminder: Reminder, late: float | None = None) -> str:
    """The message a reminder sends. ``late``: how overdue a run is that came due while the bot
    was down (``None``: on time)."""
    text = f"⏰ {reminder['text']}"
    if late is not None:
        by = f" {format_duration(late)}" if late >= 1 else ""
        text += f" (sent{by} late: it came due while the bot was offline)"
    if reminder["skipped"]:
        runs = "run" if reminder["skipped"] == 1 else "runs"
        text += f" ({reminder['skipped']} {runs} skipped while the bot was offline)"
    return text


# --------------------------------------------------------------------------------------------
# Reminders
# --------------------------------------------------------------------------------------------
def reminders_of(chat_data: dict[Any, Any]) -> list[Reminder]:
    """The chat's reminders, soonest first (a run being delivered right now is left out)."""
    waiting = [r for r in chat_data.get(REMINDERS, []) if r["sending"] is None or r["every"]]
    return sorted(waiting, key=lambda reminder: reminder["due"])


def find_reminder(chat_data: dict[Any, Any], reminder_id: int) -> Reminder | None:
    return next((r for r in chat_data.get(REMINDERS, []) if r["id"] == reminder_id), None)


def job_name(chat_id: int, reminder_id: int) -> str:
    """The stable name of a reminder's job."""
    return f"reminder {chat_id}:{reminder_id}"


async def add_reminder(
    application: Application, chat_id: int, text: str, delay: float, every: float | None = None
) -> Reminder:
    """Store a new reminder in the chat's data, save it, and schedule it.

    If the save fails, the error is logged and the reminder stays scheduled: it is saved with
    the chat's next save (until then, a crash would lose it)."""
    chat_data = application.chat_data[chat_id]
    reminder_id = chat_data.get(NEXT_ID, 1)
    chat_data[NEXT_ID] = reminder_id + 1
    reminder: Reminder = {
        "id": reminder_id, "text": text, "due": time.time() + delay, "every": every,
        "skipped": 0, "sending": None,
    }
    chat_data.setdefault(REMINDERS, []).append(reminder)
    schedule(application, chat_id, reminder)
    await _save_or_log(application, chat_id, f"new reminder {reminder_id}")
    return reminder


async def cancel_reminder(application: Application, chat_id: int, reminder_id: int) -> Reminder | None:
    """Remove a reminder and its job, and save at once. ``None`` if the chat has no such reminder."""
    chat_data = application.chat_data[chat_id]
    reminder = find_reminder(chat_data, reminder_id)
    if reminder is None or (reminder["sending"] is not None and not reminder["every"]):
        return None
    chat_data[REMINDERS].remove(reminder)
    _unschedule(application, job_name(chat_id, reminder_id))
    await _save_or_log(application, chat_id, f"cancellation of reminder {reminder_id}")
    return reminder


async def migrate_chat(application: Application, message: Message) -> None:
    """A group became a supergroup (``message.migrate_to_chat_id``): move the chat's data to the
    new id with ``Application.migrate_chat_data``, and its reminders' jobs with it.

    PTB does not move conversation states to the new id, so a form left open in the old group
    cannot be answered any more: its deadline is dropped rather than moved."""
    old_id, new_id = message.chat_id, message.migrate_to_chat_id
    assert new_id is not None
    application.migrate_chat_data(message=message)
    chat_data = application.chat_data[new_id]
    chat_data.pop(DEADLINES, None)
    for reminder in chat_data.get(REMINDERS, []):
        _unschedule(application, job_name(old_id, reminder["id"]))
        schedule(application, new_id, reminder)
    await _save_or_log(application, new_id, "reminders moved from a migrated group")


def schedule(application: Application, chat_id: int, reminder: Reminder, delay: float | None = None) -> None:
    """(Re)place the reminder's one job: at its ``due`` time, or ``delay`` seconds from now."""
    name = job_name(chat_id, reminder["id"])
    _unschedule(application, name)
    when = max(0.0, reminder["due"] - time.time()) if delay is None else delay
    _job_queue(application).run_once(_fire, when, data=reminder["id"], chat_id=chat_id, name=name,
                                     job_kwargs=_JOB_KWARGS)


def _unschedule(application: Application, name: str) -> None:
    for job in _job_queue(application).get_jobs_by_name(name):
        job.schedule_removal()


async def _fire(context: CallbackContext) -> None:
    """The job callback: deliver the reminder the job is named after."""
    job = context.job
    assert job is not None and job.chat_id is not None
    await deliver(context.application, job.chat_id, job.data)


async def deliver(
    application: Application, chat_id: int, reminder_id: int, late: float | None = None
) -> None:
    """Claim the reminder's run, save the claim, send the message, then settle the reminder.

    ``late``: seconds it is overdue, for a run that came due while the bot was down."""
    chat_data = application.chat_data[chat_id]
    reminder = find_reminder(chat_data, reminder_id)
    if reminder is None or reminder["sending"] is not None:
        return  # cancelled, or already being delivered
    before = dict(reminder)
    text = reminder_text(reminder, late)
    now = time.time()
    reminder["sending"] = reminder["due"]
    if reminder["every"]:
        reminder["due"], _ = next_run(reminder["due"], reminder["every"], now)
        reminder["skipped"] = 0
    try:
        await save_chat_now(application, chat_id)
    except Exception:
        reminder.update(before)
        logger.exception("reminder %s of chat %s: could not save that it is being sent, so it was "
                         "not sent; trying again in %.0f s", reminder_id, chat_id, RETRY_AFTER)
        schedule(application, chat_id, reminder, delay=RETRY_AFTER)
        # A persistence that keeps failed writes (SQLitePersistence, PostgresPersistence) would
        # otherwise write the claim with its next save, and a crash after that would drop the
        # run unsent: hand it the undone claim, which replaces the kept one.
        await _save_or_log(application, chat_id, f"undone claim of reminder {reminder_id}")
        return
    try:
        await application.bot.send_message(chat_id, text)
    finally:  # sent or failed, this run is over: at most once
        if reminder in chat_data.get(REMINDERS, []):  # else it was cancelled meanwhile
            if reminder["every"]:
                reminder["sending"] = None
                schedule(application, chat_id, reminder)
            else:
                chat_data[REMINDERS].remove(reminder)
        application.mark_data_for_update_persistence(chat_ids=chat_id)


def next_run(due: float, every: float, now: float) -> tuple[float, int]:
    """The first run of a repeating reminder after ``now`` (and after ``due``), on its schedule
    ``due + k * every``, and the number of runs skipped to get there."""
    steps = max(1, math.floor((now - due) / every) + 1)
    return due + steps * every, steps - 1


async def save_chat_now(application: Application, chat_id: int) -> None:
    """Write one chat's data to the persistence now, not at the next periodic save.

    ``BasePersistence.update_chat_data`` is part of every persistence, and unlike
    ``Application.update_persistence`` (which hands errors to the error handlers) it raises when
    the write fails. No persistence: nothing to do."""
    if application.persistence is None:
        return
    await application.persistence.update_chat_data(
        chat_id, copy.deepcopy(application.chat_data[chat_id])
    )


async def _save_or_log(application: Application, chat_id: int, what: str) -> None:
    """:func:`save_chat_now`; if it fails, log it - the change stays in memory, the chat is
    marked changed, and PTB's next save writes it."""
    try:
        await save_chat_now(application, chat_id)
    except Exception:
        logger.exception("chat %s: the %s could not be saved at once; it is kept, and saved with "
                         "the next save", chat_id, what)
        application.mark_data_for_update_persistence(chat_ids=chat_id)


def _job_queue(application: Application) -> Any:
    if application.job_queue is None:
        raise RuntimeError(
            "this bot schedules reminders, but its Application has no JobQueue: install PTB's "
            "job-queue extra, pip install 'python-telegram-bot[job-queue]' (requirements.txt has it)"
        )
    return application.job_queue


# --------------------------------------------------------------------------------------------
# Conversation deadlines
# --------------------------------------------------------------------------------------------
class ConversationDeadline(Update):
    """The last update of a conversation whose deadline has passed, fed back to the
    ``ConversationHandler`` so that it ends the conversation through its own handlers.

    Put ``TypeHandler(ConversationDeadline, callback)`` first in every state (and among the entry
    points, for a conversation that has already ended); ``callback`` does what the ``TIMEOUT``
    handlers do and returns ``ConversationHandler.END``."""


def note_activity(update: Update, context: CallbackContext, conversation: str) -> None:
    """Record that this user moved ``conversation`` on in this chat just now: call it in every
    handler that keeps the conversation going. ``ConversationHandler`` restarts its timeout
    after each handled update; this is the same moment, written down where a restart finds it."""
    assert update.effective_chat is not None and update.effective_user is not None
    chat_data = context.application.chat_data[update.effective_chat.id]
    waiting = chat_data.setdefault(DEADLINES, {}).setdefault(conversation, {})
    # to_json, not to_dict: to_dict keeps enum members (MessageEntityType, ...), not plain str
    waiting[str(update.effective_user.id)] = {"last_seen": time.time(),
                                              "update": json.loads(update.to_json())}


def end_activity(update: Update, context: CallbackContext, conversation: str) -> None:
    """Forget the conversation's deadline: call it wherever the conversation ends."""
    assert update.effective_chat is not None and update.effective_user is not None
    chat_id = update.effective_chat.id
    chat_data = context.application.chat_data[chat_id]
    deadlines = chat_data.get(DEADLINES, {})
    deadlines.get(conversation, {}).pop(str(update.effective_user.id), None)
    if not deadlines.get(conversation, True):
        del deadlines[conversation]
    if DEADLINES in chat_data and not deadlines:
        del chat_data[DEADLINES]
    # a timeout job has no chat: say which chat changed, or it is not saved
    context.application.mark_data_for_update_persistence(chat_ids=chat_id)


def conversation_timeout(application: Application, conversation: str) -> float | None:
    """The ``conversation_timeout``, in seconds, of the conversation called ``conversation``;
    ``None`` if the Application has no such conversation, or it has no timeout."""
    for handlers in application.handlers.values():
        for handler in handlers:
            if isinstance(handler, ConversationHandler) and handler.name == conversation:
                timeout = handler.conversation_timeout
                if isinstance(timeout, dtm.timedelta):
                    return timeout.total_seconds()
                return timeout or None
    return None


def _deadline_job_name(chat_id: int, user_key: str, conversation: str) -> str:
    return f"deadline {conversation} {chat_id}:{user_key}"


async def _end_if_expired(application: Application, chat_id: int, conversation: str, user_key: str,
                          last_seen: float) -> None:
    """Feed the conversation's last update back as a ConversationDeadline, unless the user moved
    the conversation on (or ended it) since ``last_seen``."""
    waiting = application.chat_data[chat_id].get(DEADLINES, {}).get(conversation, {})
    entry = waiting.get(user_key)
    if entry is None or entry["last_seen"] != last_seen:
        return
    await application.process_update(ConversationDeadline.de_json(entry["update"], application.bot))


async def _deadline_job(context: CallbackContext) -> None:
    assert context.job is not None
    await _end_if_expired(context.application, *context.job.data)


# --------------------------------------------------------------------------------------------
# Start-up
# --------------------------------------------------------------------------------------------
async def restore_jobs(application: Application) -> None:
    """Re-create every stored job: the ``post_init`` of a bot that uses this module.

    ``ApplicationBuilder()...post_init(restore_jobs)``: ``run_polling`` (and the cookbook's
    offline driver) call it after loading the data, before any update is handled."""
    _job_queue(application)  # fail here, with the fix in the message, not at the first reminder
    now = time.time()
    for chat_id, chat_data in list(application.chat_data.items()):
        for reminder in list(chat_data.get(REMINDERS, [])):
            await _restore_reminder(application, chat_id, reminder, now)
        for conversation, waiting in list(chat_data.get(DEADLINES, {}).items()):
            timeout = conversation_timeout(application, conversation)
            if timeout is None:  # renamed, removed, or no timeout any more: nothing to end
                logger.warning("chat %s: deadlines stored for conversation %r, which has no "
                               "conversation_timeout in this bot; they are dropped", chat_id, conversation)
                del chat_data[DEADLINES][conversation]
                if not chat_data[DEADLINES]:
                    del chat_data[DEADLINES]
                application.mark_data_for_update_persistence(chat_ids=chat_id)
                continue
            for user_key, entry in list(waiting.items()):
                deadline = entry["last_seen"] + timeout
                job_data = (chat_id, conversation, user_key, entry["last_seen"])
                if deadline <= now:
                    with warnings.catch_warnings():  # true, and expected: post_init runs before start()
                        warnings.filterwarnings("ignore", "Ignoring `conversation_timeout` because the "
                                                "Applications JobQueue is not running")
                        await _end_if_expired(application, *job_data)
                else:
                    name = _deadline_job_name(chat_id, user_key, conversation)
                    _unschedule(application, name)
                    _job_queue(application).run_once(_deadline_job, deadline - now, data=job_data,
                                                     name=name, job_kwargs=_JOB_KWARGS)


async def _restore_reminder(application: Application, chat_id: int, reminder: Reminder, now: float) -> None:
    """Apply the missed-run policy to one stored reminder and schedule it."""
    chat_data = application.chat_data[chat_id]
    if reminder["sending"] is not None:
        logger.warning(
            "reminder %s of chat %s was being sent when the bot stopped; it may or may not have "
            "arrived, and is not sent again (at most once)", reminder["id"], chat_id)
        application.mark_data_for_update_persistence(chat_ids=chat_id)
        if not reminder["every"]:
            chat_data[REMINDERS].remove(reminder)
            return
        reminder["sending"] = None
    if reminder["due"] > now:
        schedule(application, chat_id, reminder)
    elif reminder["every"]:
        reminder["due"], skipped = next_run(reminder["due"], reminder["every"], now)
        reminder["skipped"] += skipped + 1
        application.mark_data_for_update_persistence(chat_ids=chat_id)
        schedule(application, chat_id, reminder)
    else:
        try:
            await deliver(application, chat_id, reminder["id"], late=now - reminder["due"])
        except Exception:  # one chat's failure (the user blocked the bot, ...) must not stop the bot
            logger.exception("reminder %s of chat %s, missed while the bot was down, could not be "
                             "sent at start-up; it is not sent again (at most once)", reminder["id"], chat_id)
