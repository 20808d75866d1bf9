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
    elif context.job is not None:
        where = f"in job {context.job.name!r} (chat {context.job.chat_id})"
    elif update is None:
        where = "while saving (update_persistence)"
    else:
        where = f"while handling {update!r:.80}"
    logger.error("%s: %s", where, context.error, exc_info=context.error)


class SecretHidingFormatter(logging.Formatter):
    """A formatter that writes ``hidden`` in place of each secret, in messages and tracebacks alike.

    PTB puts the bot token in request URLs (logged by httpx) and in the message of
    ``InvalidToken`` ("The token `...` was rejected by the server"); this keeps it out of every line
    at every level, whatever logged it."""

    def __init__(self, fmt: str, secrets: list[str], hidden: str = "<BOT_TOKEN>") -> None:
        super().__init__(fmt)
        self.secrets = [secret for secret in secrets if secret]
        self.hidden = hidden

    def format(self, record: logging.LogRecord) -> str:
        return self.hide(super().format(record))

    def hide(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret in self.secrets:
            text = text.replace(secret, self.hidden)
        return text


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, token: str | None = None) -> None:
    """Log like PTB's examples, with ``token`` hidden from every line.

    Below DEBUG, httpx and httpcore stay at WARNING: at INFO they log every request URL, one line
    per request (and the URL holds the token, hidden here but noise all the same)."""
    handler = logging.StreamHandler()
    handler.setFormatter(SecretHidingFormatter(LOG_FORMAT, [token] if token else []))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    quiet = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    logging.getLogger("httpx").setLevel(quiet)
    logging.getLogger("httpcore").setLevel(quiet)
