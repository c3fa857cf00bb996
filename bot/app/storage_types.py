"""The store as the use cases see it: the typed Storage protocol (bot.app.storage), which the async
store adapter implements."""

from __future__ import annotations

from bot.app.storage import Storage as StoreLike

__all__ = ["StoreLike"]
