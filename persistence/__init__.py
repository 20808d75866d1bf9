"""Persistence classes of the cookbook.

``persistence/sqlite.py`` is the one to copy into your bot; ``article.py`` is broken on purpose
(stage 2); ``recording.py`` records what Application calls (the lifecycle notebook).
"""

from persistence.sqlite import SQLitePersistence

__all__ = ["SQLitePersistence"]
