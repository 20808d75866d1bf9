"""The offline Bot API: run, test and demo any stage of the cookbook with no network and no token.

Split along its seams, each usable on its own:

* :mod:`bots.offline.api` - :class:`OfflineBotAPI`, a ``telegram.request.BaseRequest`` subclass and
  the *only* thing replaced (the Application, its handlers, ``ExtBot`` and the persistence are all
  real), plus the people and chats of the offline world (:data:`ALICE`, :data:`BOB`, ...);
* :mod:`bots.offline.updates` - update factories (:func:`message_update`, :func:`sticker_update`,
  :func:`callback_query_update`, :func:`migration_updates`, ...): the JSON Telegram would send,
  turned into ``Update`` objects;
* :mod:`bots.offline.chat` - :class:`OfflineChat`, the driver tests, notebooks and ``--demo`` use:
  ``send()``, ``click()``, ``save()``, ``restart()``;
* :mod:`bots.offline.cli` - :func:`run_stage`, the command line of every stage's ``main()``.

Everything is re-exported here: ``from bots.offline import OfflineChat, message_update``.
"""

from bots.offline.api import (
    ALICE,
    BOB,
    BOT_USER,
    OFFLINE_TOKEN,
    ApiCall,
    Chat,
    OfflineBotAPI,
    User,
    application_builder,
    group_chat,
    private_chat,
    supergroup_chat,
)
from bots.offline.chat import BuildApplication, OfflineChat
from bots.offline.cli import Stage, StartupError, run_stage
from bots.offline.updates import (
    callback_query_update,
    message_update,
    migration_updates,
    photo_update,
    sticker_update,
)

__all__ = [
    "ALICE",
    "BOB",
    "BOT_USER",
    "OFFLINE_TOKEN",
    "ApiCall",
    "BuildApplication",
    "Chat",
    "OfflineBotAPI",
    "OfflineChat",
    "Stage",
    "StartupError",
    "User",
    "application_builder",
    "callback_query_update",
    "group_chat",
    "message_update",
    "migration_updates",
    "photo_update",
    "private_chat",
    "run_stage",
    "sticker_update",
    "supergroup_chat",
]
