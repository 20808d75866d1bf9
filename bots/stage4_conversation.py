"""Stage 4: a sign-up form that survives restarts - a persistent ``ConversationHandler`` on SQLite.

``/start`` asks three questions, one message at a time: name, age (a whole number from 1 to 120; a
bad answer is asked again and the form does not move on) and city. ``/cancel`` stops the form,
``/profile`` shows what is stored. The answers go to ``context.user_data`` (a form in progress
under ``"forms"`` by chat id, a completed one as ``"profile"``), and ``bot_data`` counts the
completed forms.

What makes the form survive a restart is one line: ``ConversationHandler(..., persistent=True,
name="signup")``. PTB then saves the step each user is at (the *state*, here an ``int``, which JSON
can store) under the key ``(chat id, user id)`` and loads it back at start-up: stop the bot right
after a user gave their age, start it again, and their next message is taken as their city.
Because the key holds both ids, two people filling in the form in the same group each have their
own step.

In a group with privacy mode on (Telegram's default) a bot sees only commands and replies to its
own messages: answer each question by replying to it, or turn privacy mode off with @BotFather.

Run it::

    python -m bots.stage4_conversation            # offline chat in this terminal
    python -m bots.stage4_conversation --demo     # scripted conversation with a restart
    BOT_TOKEN=123:ABC python -m bots.stage4_conversation   # on Telegram

The data file is ``./stage4.sqlite3``; choose another with ``--file PATH`` or ``STAGE4_FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BasePersistence,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

from bots.commands import UNKNOWN_COMMAND
from bots.logs import log_error
from bots.offline import OFFLINE_TOKEN, OfflineChat, Stage, run_stage
from persistence.sqlite import DatabaseFileError, SQLitePersistence

# The conversation's states. Whatever a callback returns is what the persistence stores, so the
# states are plain ints: JSON can hold them (an Enum would need serializer="pickle").
NAME, AGE, CITY = range(3)

CONVERSATION_NAME = "signup"
"""The name the conversation's rows are stored under (``persistent=True`` requires one)."""

MIN_AGE, MAX_AGE = 1, 120

ASK_NAME = "Let's sign you up (/cancel stops at any time). What is your name?"
ASK_AGE = "Nice to meet you, {name}! How old are you?"
BAD_AGE = f"Please send your age as a whole number from {MIN_AGE} to {MAX_AGE}, e.g. 34."
ASK_CITY = "And which city do you live in?"
DONE = "Thank you, {name}, you are signed up! Forms completed so far: {count}. /profile shows yours."
CANCELLED = "Sign-up cancelled; the answers of this form were discarded. /start begins again."
NOT_TEXT = "Please answer with a text message (or /cancel)."


def form_for(update: Update, context: ContextTypes.DEFAULT_TYPE) -> dict:
    """The answers of the form this user is filling in *in this chat*.

    The conversation is per (chat, user), so the answers are kept by chat id too: a form started
    in a group must not overwrite the one the same user is filling in privately."""
    return context.user_data.setdefault("forms", {}).setdefault(update.effective_chat.id, {})


def end_form(update: Update, context: ContextTypes.DEFAULT_TYPE) -> dict:
    """Remove this chat's form from ``user_data`` and return its answers."""
    forms = context.user_data.get("forms", {})
    form = forms.pop(update.effective_chat.id, {})
    if not forms:
        context.user_data.pop("forms", None)
    return form


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    """Entry point (and, with ``allow_reentry``, a restart of the form): a fresh, empty form."""
    end_form(update, context)
    form_for(update, context)
    await update.effective_message.reply_text(ASK_NAME)
    return NAME


async def receive_name(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    """Store the name and ask for the age."""
    name = update.effective_message.text.strip()
    form_for(update, context)["name"] = name
    await update.effective_message.reply_text(ASK_AGE.format(name=name))
    return AGE


def parse_age(text: str) -> int | None:
    """The age in ``text``, or ``None`` if it is not a whole number from MIN_AGE to MAX_AGE."""
    text = text.strip()
    if not text.isdecimal():
        return None
    age = int(text)
    return age if MIN_AGE <= age <= MAX_AGE else None


async def receive_age(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    """Store a valid age and ask for the city; on a bad answer ask again and stay in AGE."""
    age = parse_age(update.effective_message.text)
    if age is None:
        await update.effective_message.reply_text(BAD_AGE)
        return AGE
    form_for(update, context)["age"] = age
    await update.effective_message.reply_text(ASK_CITY)
    return CITY


async def receive_city(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    """Complete the form: it becomes the user's profile, and the bot-wide counter goes up."""
    form = end_form(update, context)
    form["city"] = update.effective_message.text.strip()
    context.user_data["profile"] = form
    count = context.bot_data.get("forms_completed", 0) + 1
    context.bot_data["forms_completed"] = count
    await update.effective_message.reply_text(DONE.format(name=form["name"], count=count))
    return ConversationHandler.END


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    """Stop the form and drop its answers; a profile completed earlier is kept."""
    end_form(update, context)
    await update.effective_message.reply_text(CANCELLED)
    return ConversationHandler.END


async def not_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A sticker or photo in the middle of the form: say what is expected. Returning ``None``
    keeps the conversation in the state it is in."""
    await update.effective_message.reply_text(NOT_TEXT)


def format_profile(user_data: dict, chat_id: int) -> str:
    """The completed profile, and the answers of a form in progress in this chat, if any."""
    lines = []
    profile = user_data.get("profile")
    if profile:
        lines.append(f"Your profile: {profile['name']}, {profile['age']}, {profile['city']}.")
    else:
        lines.append("You have no profile yet: /start signs you up.")
    form = user_data.get("forms", {}).get(chat_id)
    if form is not None:
        answers = ", ".join(f"{field} = {value}" for field, value in form.items()) or "none yet"
        lines.append(f"A form is in progress here (answers so far: {answers}).")
    return "\n".join(lines)


async def profile(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the stored profile. Not part of the conversation, so it never changes the step."""
    await update.effective_message.reply_text(
        format_profile(context.user_data, update.effective_chat.id)
    )


def build_conversation(persistent: bool = True) -> ConversationHandler:
    """The form. ``persistent=True`` + ``name`` is all it takes for the steps to be saved;
    the default ``per_chat=True, per_user=True`` keys each step by ``(chat id, user id)``."""
    return ConversationHandler(
        entry_points=[CommandHandler("start", start)],
        states={
            NAME: [MessageHandler(filters.TEXT & ~filters.COMMAND, receive_name)],
            AGE: [MessageHandler(filters.TEXT & ~filters.COMMAND, receive_age)],
            CITY: [MessageHandler(filters.TEXT & ~filters.COMMAND, receive_city)],
        },
        fallbacks=[
            CommandHandler("cancel", cancel),
            MessageHandler(~filters.TEXT & ~filters.COMMAND, not_text),
        ],
        allow_reentry=True,  # /start in the middle of the form starts it again
        name=CONVERSATION_NAME,
        persistent=persistent,
    )


def build_application(
    token: str | None = None,
    persistence: BasePersistence | None = None,
    request: BaseRequest | None = None,
) -> Application:
    """The sign-up bot over ``persistence``; ``request`` replaces PTB's HTTP layer (the offline
    Bot API in tests, notebooks and the terminal chat; ``None`` keeps PTB's own).

    ``add_handler`` refuses a persistent conversation in an application without a persistence,
    so ``persistence=None`` gives an ordinary, forgetful form (handy for a quick try-out)."""
    builder = ApplicationBuilder().token(token or OFFLINE_TOKEN).persistence(persistence)
    if request is not None:
        builder.request(request).get_updates_request(request)
    app = builder.build()
    app.add_handler(build_conversation(persistent=persistence is not None))
    # Outside the form, and inside it (no state or fallback handler takes commands other than
    # /cancel, so /profile falls through the ConversationHandler to this handler).
    app.add_handler(CommandHandler("profile", profile))
    app.add_handler(UNKNOWN_COMMAND)  # last: answers the commands the handlers above leave
    app.add_error_handler(log_error)
    return app


def make_persistence(path: Path, serializer: Literal["json", "pickle"] = "json") -> SQLitePersistence:
    """Everything - user data, the counter and the conversation steps - in one SQLite file.
    (``serializer``: the command line's ``--serializer``.)"""
    return SQLitePersistence(filepath=path, serializer=serializer)


async def demo(chat: OfflineChat) -> None:
    """Two answers, a restart in the middle of the form, and the form carries on at the age."""
    await chat.send("/start")
    await chat.send("Alice")
    await chat.restart()
    await chat.send("/profile")
    await chat.send("thirty-four")
    await chat.send("34")
    await chat.send("Lisbon")
    await chat.send("/profile")


STAGE = Stage(
    name="stage4_conversation",
    build_application=build_application,
    make_persistence=make_persistence,
    default_file="stage4.sqlite3",
    file_env="STAGE4_FILE",
    demo=demo,
    file_errors=(DatabaseFileError,),
    serializer_option=True,
    description="Stage 4: a sign-up form (a persistent ConversationHandler) on SQLitePersistence.",
)


def main() -> int:
    return run_stage(STAGE)


if __name__ == "__main__":
    raise SystemExit(main())
