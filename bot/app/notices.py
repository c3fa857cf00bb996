"""Notices: what the use cases announce about a deployment, handed to every subscriber (the Slack
notifier). A broken subscriber never stops a deployment."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.domain.model import Deployment

log = logging.getLogger(__name__)
BOT = "deploybot"  # the actor of everything the bot does by itself


@dataclass(frozen=True)
class Notice:
    """Something people should see. kind: "update" (the deployment's message should show its new state),
    "progress" (the live line on the message), "detail" (a line for its thread)."""

    deployment: Deployment
    kind: str
    text: str = ""
    level: str = "info"  # info | warning | critical


Listener = Callable[[Notice], Awaitable[None]]


class Publisher:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def emit(self, notice: Notice) -> None:
        for listener in self._listeners:
            try:
                await listener(notice)
            except Exception:  # a broken notifier must never stop a deployment
                log.exception("notice listener failed for deployment #%s", notice.deployment.id)
