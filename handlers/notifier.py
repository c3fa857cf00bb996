"""Turns the engine's Notices into Slack messages, and runs the alerts.

- A deployment has one top-level message, posted once and then updated in place (chat.update), rendered
  from the store's latest state when its turn comes; details go to its thread.
- Alerts go to the channels of their level (bot.alerts). A critical one mentions on-call, links the
  deployment's message and carries an Acknowledge button; unacknowledged, it escalates in its thread on a
  timer kept in the store (so a restart neither loses nor repeats a round); it is resolved when the
  deployment recovers. Optionally each critical alert is also a PagerDuty incident.
- Every channel has its own queue (ChannelOutbox): new messages in order, at most one per second; updates
  coalesced per message. Slack's 429 and 5xx answers are retried by slack_sdk's handlers (Retry-After)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.pagerduty import PagerDuty
from bot.adapters.store.aio import AsyncStore
from bot.app.notices import Notice
from bot.clock import Clock
from bot.domain import alerts as policy
from bot.domain.alerts import CRITICAL, INFO, WARNING, AlertConfig
from bot.domain.machine import State
from bot.domain.model import Alert, Deployment
from handlers.alerting import Acknowledgement, AlertLifecycle
from handlers.directory import SlackDirectory
from handlers.slack_outbox import ChannelOutbox, Post, Update, add_retry_handlers, log_failure
from handlers.ui import blocks as slack_ui

__all__ = ["Acknowledgement", "ChannelOutbox", "SlackNotifier", "add_retry_handlers"]
log = logging.getLogger(__name__)


class SlackNotifier(AlertLifecycle):
    def __init__(
        self,
        client: AsyncWebClient,
        store: AsyncStore,
        alerts: AlertConfig | None = None,
        *,
        clock: Clock | None = None,
        pagerduty: PagerDuty | None = None,
        on_change: Callable[[], None] | None = None,
        post_interval: float = 1.0,
        update_interval: float = 1.0,
        merge_backlog: int = 1,
        watch_interval: float = 60.0,
        directory: SlackDirectory | None = None,
    ):
        self.client, self.store = client, store
        self.alerts = alerts or AlertConfig()
        self.clock = clock or Clock()
        self.pagerduty, self.on_change = pagerduty, on_change
        self.post_interval = post_interval  # the least time between two new messages in a channel
        self.update_interval = update_interval  # ... between two updates of one message
        # thread lines waiting before they are sent joined: 1 = whatever piled up while the channel waited
        # its second goes out as one message (fewer notifications, and a busy canary's thread keeps pace)
        self.merge_backlog = merge_backlog
        self.watch_interval = watch_interval  # clock seconds between checks for slow approvals/rollouts
        self.live: dict[int, str] = {}  # deployment id -> its live progress line
        self._queue: asyncio.Queue[Notice | None] = asyncio.Queue()
        self._dirty: set[int] = set()
        self.directory = directory or SlackDirectory(client)
        self._outboxes: dict[str, ChannelOutbox] = {}
        self._posting: set[int] = set()  # deployments whose first message is queued or being sent
        self._shown: dict[tuple[str, str], tuple[str, list]] = {}  # what each message shows now
        self._first_shown: dict[int, tuple[str, list]] = {}
        self._rendered: dict[int, State] = {}  # the state each deployment's message shows
        self._links: dict[tuple[str, str], str] = {}
        self._escalating: set[tuple[int, int]] = set()  # (alert, round) being posted by this process
        self._timer_wake = asyncio.Event()
        self._pages: asyncio.Queue[tuple[str, Alert, Deployment] | None] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._timers: asyncio.Task | None = None
        self._pager: asyncio.Task | None = None

    # --------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the workers and the alert timers (rebuilt from the store: call it at every start)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="slack-notifier")
        if self._timers is None or self._timers.done():
            self._timers = loop.create_task(self._run_timers(), name="alert-timers")
        if self.pagerduty is not None and (self._pager is None or self._pager.done()):
            self._pager = loop.create_task(self._run_pager(), name="pagerduty")

    async def __call__(self, notice: Notice) -> None:
        self._ensure_started()
        if notice.kind == "progress":
            self.live[notice.deployment.id] = notice.text
        if notice.kind in ("update", "progress"):
            # A bare re-render can wait for the one already queued (it renders the latest state); a notice
            # that carries words for the thread or an alert (or an info channel) is never dropped.
            wants_info = bool(self.alerts.channels(INFO, notice.deployment.env))
            if (
                notice.deployment.id in self._dirty
                and not wants_info
                and (notice.kind == "progress" or not notice.text)
            ):
                return
            self._dirty.add(notice.deployment.id)
        self._queue.put_nowait(notice)

    async def settle(self) -> None:
        """Wait until every queued notice is handled and every channel's queue is empty (tests bound it
        with asyncio.timeout)."""
        while True:
            await self._queue.join()
            await asyncio.gather(*(b.idle() for b in list(self._outboxes.values())))
            if self._queue.empty() and all(b.is_idle for b in self._outboxes.values()):
                return

    async def drain(self, within: float = 15.0) -> None:
        """Send what is queued (for up to `within` seconds), then stop the workers."""
        if self._timers is not None:
            self._timers.cancel()
            await asyncio.gather(self._timers, return_exceptions=True)
            self._timers = None
        if self._worker is not None:
            self._queue.put_nowait(None)
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        try:
            await asyncio.wait_for(asyncio.gather(*(b.idle() for b in self._outboxes.values())), within)
        except TimeoutError:
            log.warning("shutting down with Slack messages still queued; they are not sent")
        for box in self._outboxes.values():
            await box.close()
        if self._pager is not None:
            self._pages.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.gather(self._pager, return_exceptions=True), within)
            except TimeoutError:
                self._pager.cancel()
            self._pager = None

    # ------------------------------------------------------------------------------- notices

    async def _run(self) -> None:
        while True:
            notice = await self._queue.get()
            try:
                if notice is None:
                    return
                await self._handle(notice)
            except Exception as exc:
                log_failure(exc, f"the notice for deployment #{notice.deployment.id if notice else '?'}")
            finally:
                self._queue.task_done()

    async def _handle(self, notice: Notice) -> None:
        seen = notice.deployment  # the deployment as it was when the notice was emitted
        d = await self.store.get(seen.id)
        event, level = policy.classify(seen, notice.kind, notice.level, notice.text)
        channel = await self._deployment_channel(d)
        if notice.kind in ("update", "progress") and d.id in self._dirty:
            self._dirty.discard(d.id)
            self._render(d, channel)
        if notice.kind == "detail" or (notice.kind == "update" and notice.text):
            self._line(d, channel, slack_ui.detail_text(d, notice.text))
        if notice.text and level == CRITICAL:
            await self._raise_critical(d, event, notice.text)
        elif notice.text and level == WARNING:
            await self._warn(d, event, notice.text)
        elif level == INFO and notice.kind in ("update", "progress"):
            await self._inform(d, notice)
        if notice.kind == "update" and seen.state in policy.RECOVERED:
            await self._resolve(seen)
        if notice.kind == "update":
            self._changed()

    # ----------------------------------------------------------------------- deployment message

    def _outbox(self, channel: str) -> ChannelOutbox:
        if channel not in self._outboxes:
            self._outboxes[channel] = ChannelOutbox(
                self.client,
                channel,
                post_interval=self.post_interval,
                update_interval=self.update_interval,
                merge_backlog=self.merge_backlog,
            )
        return self._outboxes[channel]

    def _render(self, d: Deployment, channel: str) -> None:
        """Show the deployment's latest state: its first message, or an update of it."""
        group = ("deployment", d.id)
        if d.message_ts is None:
            if d.id not in self._posting:
                self._posting.add(d.id)
                self._outbox(channel).post(
                    Post(
                        group,
                        build=lambda: self._first_message(d.id),
                        sent=lambda resp: self._first_message_sent(d.id, resp),
                        failed=lambda: self._posting.discard(d.id),
                    )
                )
            return  # the queued first message renders the latest state when it goes
        self._outbox(channel).update(
            group,
            Update(
                group,
                lambda: self._update_deployment(d.id),
                after_posts=d.state.terminal,
                urgent=d.state != self._rendered.get(d.id),
            ),
        )

    def _content(self, d: Deployment) -> tuple[str, list[dict[str, Any]]]:
        live = None if d.state.terminal else self.live.get(d.id)
        blocks = slack_ui.fit(slack_ui.deployment_blocks(d, live), f"(full record: /deploy audit {d.id})")
        return slack_ui.clip(slack_ui.deployment_text(d)), blocks

    async def _first_message(self, deployment_id: int) -> dict[str, Any] | None:
        d = await self.store.get(deployment_id)
        if d.message_ts is not None:  # posted meanwhile: an update instead
            self._posting.discard(deployment_id)
            self._render(d, d.channel or "")
            return None
        text, blocks = self._content(d)
        self._first_shown[deployment_id] = (text, blocks)
        self._rendered[deployment_id] = d.state
        return {"text": text, "blocks": blocks}

    async def _first_message_sent(self, deployment_id: int, resp: dict[str, Any]) -> None:
        await self.store.set_message(deployment_id, resp["channel"], resp["ts"])
        self._shown[(resp["channel"], resp["ts"])] = self._first_shown.pop(deployment_id, ("", []))
        self._posting.discard(deployment_id)
        d = await self.store.get(deployment_id)
        self._render(d, resp["channel"])  # whatever changed while it was being posted (skipped if nothing)
        for a in await self.store.open_alerts(deployment_id=deployment_id):
            self._refresh_alert(a)  # alerts raised before the message existed can link to it now

    async def _update_deployment(self, deployment_id: int) -> None:
        d = await self.store.get(deployment_id)
        if d.message_ts is None or d.channel is None:
            return
        text, blocks = self._content(d)
        self._rendered[deployment_id] = d.state
        await self._update_message(d.channel, d.message_ts, text, blocks)
        if d.state.terminal:
            self.live.pop(d.id, None)

    async def _update_message(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        if self._shown.get((channel, ts)) == (text, blocks):
            return
        await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        self._shown[(channel, ts)] = (text, blocks)

    def _line(self, d: Deployment, channel: str, text: str) -> None:
        """A line for the deployment's thread (its message is posted first when it has none yet)."""
        if d.message_ts is None and d.id not in self._posting:
            self._render(d, channel)

        async def thread() -> str | None:
            return (await self.store.get(d.id)).message_ts

        self._outbox(channel).post(Post(("deployment", d.id), line=text, thread=thread))

    async def _deployment_channel(self, d: Deployment) -> str:
        return await self.channel_id(d.channel or "deploys")

    async def _deployment_link(self, d: Deployment) -> str | None:
        if d.message_ts is None or d.channel is None:
            return None
        key = (d.channel, d.message_ts)
        if key not in self._links:
            try:
                out = await self.client.chat_getPermalink(channel=d.channel, message_ts=d.message_ts)
                self._links[key] = out["permalink"]
            except SlackApiError as exc:
                log.warning("no permalink for deployment #%s: %s", d.id, exc.response.get("error"))
                return None
        return self._links[key]

    # ---------------------------------------------------------------------------------- alerts

    # ---------------------------------------------------------------------------------- lookups

    async def channel_id(self, name: str) -> str:
        return await self.directory.channel_id(name)

    async def mention(self, ref: str | None) -> str | None:
        return await self.directory.mention(ref)
