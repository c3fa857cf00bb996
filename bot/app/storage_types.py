"""The store as the use cases see it. Until the typed Storage protocol lands this is the async store."""

from __future__ import annotations

from bot.adapters.store.aio import AsyncStore as StoreLike

__all__ = ["StoreLike"]
