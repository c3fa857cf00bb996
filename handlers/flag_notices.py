"""Flag events of no deployment in the channels of their level (the notifier hands them over)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.domain.alerts import AlertConfig
from bot.domain.events import OutboxEntry
from handlers.slack_outbox import ChannelOutbox, Post
from handlers.ui import event_text

log = logging.getLogger("handlers.notifier")


async def flag_notices(
    entries: list[OutboxEntry],
    delivered: int,
    *,
    alerts: AlertConfig,
    channel_id: Callable[[str], Awaitable[str]],
    outbox: Callable[[str], ChannelOutbox],
) -> None:
    """Flag events of no deployment (a person's change, the kill switch) go to their level's channels
    of their environment (info: none by default — the person's answer in their channel already says
    it; the kill switch: warning)."""
    for entry in entries:
        words = event_text.flag_notice(entry.event)
        env = getattr(entry.event, "env", None)
        if entry.id <= delivered or words is None or not isinstance(env, str):
            continue
        for name in alerts.channels(entry.event.level(), env):
            try:
                channel = await channel_id(name)
            except LookupError as exc:
                log.warning("no channel for a flag notice: %s", exc)
                continue
            outbox(channel).post(Post(("flag", entry.id), line=words))
