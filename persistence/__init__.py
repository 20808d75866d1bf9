"""Persistence classes of the cookbook.

``persistence/sqlite.py`` is the one to copy into your bot (one bot process owns the file);
``shared.py`` adds merging for files other programs write while the bot runs; ``article.py`` is
broken on purpose (stage 2); ``recording.py`` records what Application calls (the lifecycle notebook).
"""

from persistence.shared import SharedSQLitePersistence
from persistence.sqlite import SQLitePersistence

__all__ = ["SQLitePersistence", "SharedSQLitePersistence"]
