"""Slack events: app_home_opened publishes the Home tab (bot.home). HomeTab keeps the tab fresh for
everyone who opened it since the bot started: when anything it shows changes, it is published again
(at most once per `min_interval` seconds, with the latest state)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.charts import latest_charts
from bot.clock import Clock
from bot.tasks import TaskGroup, detached_task
from handlers.ui.home import home_view

log = logging.getLogger(__name__)
_background = TaskGroup("slack-events")


class HomeTab:
    def __init__(
        self,
        client: AsyncWebClient,
        store: AsyncStore,
        clock: Clock | None = None,
        live: Mapping[int, str] | None = None,
        min_interval: float = 2.0,
    ):
        self.client, self.store, self.clock = client, store, clock or Clock()
        self.live = live if live is not None else {}
        self.min_interval = min_interval
        self.viewers: set[str] = set()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def view(self) -> dict[str, Any]:
        active, locks = await self.store.overview()
        alerts = [
            (a, await self.store.get(a.deployment_id)) for a in await self.store.unacknowledged_alerts()
        ]
        recent = [d for d in await self.store.latest(None, 20) if d.state.terminal][:5]
        charts = await self.store.call(latest_charts, self.store.sync)
        return home_view(active, locks, alerts, self.clock.now(), recent, self.live, charts)

    async def opened(self, user: str) -> None:
        self.viewers.add(user)
        await self._publish(user, await self.view())

    def changed(self) -> None:
        """Something the tab shows changed: publish it again to everyone who has it open."""
        if not self.viewers:
            return
        self._dirty.set()
        if self._task is None or self._task.done():
            self._task = detached_task(self._run(), "home-tab")

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                view = await self.view()
                for user in sorted(self.viewers):
                    await self._publish(user, view)
            except Exception:
                log.exception("could not refresh the Home tab")
            await asyncio.sleep(self.min_interval)  # a burst of changes makes one refresh, not many

    async def _publish(self, user: str, view: dict[str, Any]) -> None:
        try:
            await self.client.views_publish(user_id=user, view=view)
        except SlackApiError as exc:
            log.error("Slack refused the Home tab for %s: %s", user, exc.response.get("error"))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def register(app: AsyncApp, home: HomeTab) -> None:
    @app.event("app_home_opened")
    async def on_app_home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return  # the Messages tab
        _background.spawn(home.opened(event["user"]), "home-opened")
