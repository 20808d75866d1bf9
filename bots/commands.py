"""A handler every stage adds last: an answer to commands the bot does not know.

A real bot answers ``/help`` or a mistyped ``/shwo_data`` in a private chat instead of staying
silent. In groups it stays quiet: a command there may be meant for another bot.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import (
    Application,
    BaseHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)


def bot_commands(app: Application, groups: list[int] | None = None) -> list[str]:
    """Every command a ``CommandHandler`` of ``app`` takes (in ``groups``; default: all),
    conversations' steps included, sorted."""
    found: set[str] = set()

    def visit(handlers: list[BaseHandler]) -> None:
        for handler in handlers:
            if isinstance(handler, CommandHandler):
                found.update(handler.commands)
            elif isinstance(handler, ConversationHandler):
                visit(handler.entry_points)
                visit(handler.fallbacks)
                for step in handler.states.values():
                    visit(step)

    for group, handlers in app.handlers.items():
        if groups is None or group in groups:
            visit(handlers)
    return sorted(found)


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Reply to a command no other handler took: name the bot's commands."""
    command = update.effective_message.text.split()[0].lstrip("/").split("@")[0].lower()
    commands = bot_commands(context.application)
    if command in bot_commands(context.application, [UNKNOWN_COMMAND_GROUP]):
        # known here, but no handler takes it now (e.g. /cancel outside the form)
        await update.effective_message.reply_text(f"/{command} has nothing to do right now.")
        return
    if command in commands:  # a handler of another group has taken it
        return
    await update.effective_message.reply_text(
        f"I don't know /{command}. My commands: " + ", ".join(f"/{name}" for name in commands)
    )


UNKNOWN_COMMAND = MessageHandler(filters.COMMAND & filters.ChatType.PRIVATE, unknown_command)
"""Add it after the stage's own handlers, in the same group: it takes only what they leave."""

UNKNOWN_COMMAND_GROUP = 0
"""The group the stages add :data:`UNKNOWN_COMMAND` to (PTB's default group)."""
