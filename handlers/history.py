"""Finding a message the bot posted before a crash in a channel's history (conversations.history with
metadata), so it is adopted instead of posted twice: by the deployment's or the pipeline's first-post
metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ADOPT_PAGES = 5  # conversations.history pages searched at most


async def find_posted(
    client: Any, channel: str, oldest: float, event_type: str, wanted: Callable[[dict[str, Any]], bool]
) -> str | None:
    """The ts of the newest-first page's first top-level message since `oldest` whose metadata is of
    `event_type` and whose payload `wanted` accepts; None when there is none in ADOPT_PAGES pages."""
    cursor = None
    for _ in range(ADOPT_PAGES):
        out = await client.conversations_history(
            channel=channel,
            oldest=f"{max(0.0, oldest):.6f}",
            include_all_metadata=True,
            limit=100,
            cursor=cursor,
        )
        for m in out.get("messages") or []:
            meta = m.get("metadata") or {}
            if meta.get("event_type") == event_type and wanted(meta.get("event_payload") or {}):
                return str(m["ts"])
        cursor = (out.get("response_metadata") or {}).get("next_cursor")
        if not out.get("has_more") or not cursor:
            return None
    return None
