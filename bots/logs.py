"""Logging for every stage: the shared error handler and the log format.

Not offline things: a bot on Telegram logs exactly the same way.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import CallbackContext

logger = logging.getLogger("bots")


async def log_error(update: object, context: CallbackContext) -> None:
    """The error handler of every stage: log the error with the chat and user involved, and let
    the bot carry on. Errors of a save have no update; the persistence's message names the id."""
    if isinstance(update, Update):
        chat = update.effective_chat.id if update.effective_chat else None
        user = update.effective_user.id if update.effective_user else None
        where = f"while handling an update (chat {chat}, user {user})"
    elif update is None:
        where = "while saving (update_persistence)"
    else:
        where = f"while handling {update!r:.80}"
    logger.error("%s: %s", where, context.error, exc_info=context.error)


def configure_logging(level: int = logging.INFO) -> None:
    """Log like PTB's examples, but keep httpx below INFO: it logs request URLs, which contain
    the bot token."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
