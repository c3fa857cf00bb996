"""Turns the engine's Notices into Slack messages: one top-level message per deployment, posted once and
then updated in place (chat.update); details go to its thread.

One worker drains a queue, so messages keep their order and a slow Slack never holds up a deployment.
Updates are coalesced: the message is rendered from the store's latest state when the worker gets to it."""

from __future__ import annotations

import asyncio
import logging
import re

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import slack_ui
from bot.engine import Notice
from bot.settings import AlertRouting
from bot.store import AsyncStore, Deployment

log = logging.getLogger(__name__)
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


def add_retry_handlers(client: AsyncWebClient) -> AsyncWebClient:
    """Rate limits (honouring Retry-After), 5xx and connection errors are retried by slack_sdk itself."""
    client.retry_handlers.extend(
        [
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=3),
            AsyncConnectionErrorRetryHandler(max_retry_count=3),
        ]
    )
    return client


class SlackNotifier:
    def __init__(self, client: AsyncWebClient, store: AsyncStore, alerts: AlertRouting | None = None):
        self.client, self.store = client, store
        self.alerts = alerts or AlertRouting()
        self._queue: asyncio.Queue[Notice | None] = asyncio.Queue()
        self._dirty: set[int] = set()
        self._live: dict[int, str] = {}
        self._channels: dict[str, str] = {}
        self._worker: asyncio.Task | None = None

    async def __call__(self, notice: Notice) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="slack-notifier")
        if notice.kind == "progress":
            self._live[notice.deployment.id] = notice.text
        if notice.kind in ("update", "progress"):
            # A bare re-render can wait for the one already queued (it renders the latest state); a notice
            # that carries words for the thread or an alert is never dropped.
            if notice.deployment.id in self._dirty and (notice.kind == "progress" or not notice.text):
                return
            self._dirty.add(notice.deployment.id)
        self._queue.put_nowait(notice)

    async def drain(self) -> None:
        """Wait until every queued notice is sent, then stop the worker."""
        if self._worker is not None:
            self._queue.put_nowait(None)
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    async def _run(self) -> None:
        while (notice := await self._queue.get()) is not None:
            try:
                await self._handle(notice)
            except SlackApiError as exc:
                log.error(
                    "Slack refused a message for deployment #%s: %s",
                    notice.deployment.id,
                    exc.response.get("error"),
                )
            except Exception:
                log.exception("could not post to Slack for deployment #%s", notice.deployment.id)

    async def _handle(self, notice: Notice) -> None:
        d = await self.store.get(notice.deployment.id)
        if notice.kind in ("update", "progress") and d.id in self._dirty:
            self._dirty.discard(d.id)
            await self._render(d)
        if notice.kind == "detail" or (notice.kind == "update" and notice.text):
            d = await self._ensure_message(d)
            await self.client.chat_postMessage(
                channel=d.channel, thread_ts=d.message_ts, text=slack_ui.detail_text(d, notice.text)
            )
        if notice.level in ("critical", "warning") and notice.text:
            await self._alert(d, notice)

    async def _alert(self, d: Deployment, notice: Notice) -> None:
        """A critical or warning notice also goes to the channels configured for its level."""
        channels = self.alerts.critical if notice.level == "critical" else self.alerts.warning
        link = None
        if d.message_ts:
            out = await self.client.chat_getPermalink(channel=d.channel, message_ts=d.message_ts)
            link = out.get("permalink")
        for name in channels:
            channel = await self.channel_id(name)
            if channel == d.channel:
                continue  # the deployment's own thread has it already
            text, blocks = slack_ui.alert(d, notice.level, notice.text, link)
            await self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)

    async def _ensure_message(self, d: Deployment) -> Deployment:
        if d.message_ts is None:
            await self._render(d)
            d = await self.store.get(d.id)
        return d

    async def _render(self, d: Deployment) -> None:
        live = None if d.state.terminal else self._live.get(d.id)
        text, blocks = slack_ui.deployment_text(d), slack_ui.deployment_blocks(d, live)
        if d.message_ts is None:
            channel = await self.channel_id(d.channel or "deploys")
            out = await self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
            await self.store.set_message(d.id, out["channel"], out["ts"])
        else:
            await self.client.chat_update(channel=d.channel, ts=d.message_ts, text=text, blocks=blocks)
        if d.state.terminal:
            self._live.pop(d.id, None)

    async def channel_id(self, name: str) -> str:
        """Config names channels ("deploys"); Slack wants ids. Resolved once through conversations.list."""
        name = name.lstrip("#")
        if CHANNEL_ID.match(name):
            return name
        if name not in self._channels:
            cursor = None
            while True:
                page = await self.client.conversations_list(
                    limit=200, cursor=cursor, types="public_channel,private_channel"
                )
                for ch in page.get("channels", []):
                    self._channels[ch["name"]] = ch["id"]
                cursor = page.get("response_metadata", {}).get("next_cursor")
                if not cursor or name in self._channels:
                    break
        if name not in self._channels:
            raise LookupError(
                f"no Slack channel named #{name} visible to the bot (invite it, or fix the config)"
            )
        return self._channels[name]
