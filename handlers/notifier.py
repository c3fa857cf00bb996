"""Turns the outbox's domain events into Slack messages, and runs the alerts.

- Two consumers read the store's outbox (bot.adapters.store.outbox), each with its own name and cursor:
  "slack" (the deployment's message, its thread, the warning and info channels) and "alerting" (critical
  alerts raised and resolved, which also page PagerDuty). One reader takes the events in batches, oldest
  first, reading each deployment's row once per batch, and hands every event to both in order. It wakes
  when the store appends events (AsyncStore.on_append) and at start, so after a crash it catches up with
  whatever was written and never delivered.
- The guarantee is at-least-once. "slack" moves its cursor only once what a batch queued in the channels'
  ordered ChannelOutboxes has been sent; "alerting" once the batch's alerts are raised in the store. A
  crash in between repeats at most that batch: the deployment's message is an idempotent update (rendered
  from the store's latest state); a repeated critical goes to the standing alert's thread while that
  alert is unacknowledged; a thread line of the repeated batch can show twice. PagerDuty has no cursor:
  the alert lifecycle wakes its delivery (handlers/paging.py), which reads what each alert owes from the
  store.
- A deployment has one top-level message, posted once and then updated in place (chat.update), rendered
  from the store's latest state when its turn comes; details go to its thread. Once, even across a crash
  between Slack's answer and saving its ts: the attempt is stored before the post, the post carries
  message metadata naming the deployment, and a notifier that finds an attempt without a ts (at start,
  or when it next sets out to post) looks for the message in the channel's history and adopts it.
- Alerts go to the channels of their level (bot.alerts). A critical one mentions on-call, links the
  deployment's message and carries an Acknowledge button; unacknowledged, it escalates in its thread on a
  timer kept in the store (so a restart neither loses nor repeats a round); it is resolved when the
  deployment recovers. Optionally each critical alert is also a PagerDuty incident.
- Every channel has its own queue (ChannelOutbox): new messages in order, at most one per second, updates
  coalesced per message, 429 and 5xx retried by slack_sdk's handlers. A shutdown is bounded (`drain`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.pagerduty import PagerDuty
from bot.adapters.store.aio import AsyncStore
from bot.app.foreground import FOREGROUND
from bot.clock import Clock
from bot.domain.alerts import CRITICAL, INFO, WARNING, AlertConfig
from bot.domain.events import RECOVERY, OutboxEntry
from bot.domain.machine import State
from bot.domain.model import Alert, Deployment
from bot.domain.verification import FeedbackAsked
from bot.tasks import detached_task
from handlers.alerting import Acknowledgement, AlertLifecycle
from handlers.charts import ChartPoster
from handlers.directory import SlackDirectory
from handlers.flag_notices import flag_notices
from handlers.history import find_posted
from handlers.slack_outbox import ChannelOutbox, Post, Update, add_retry_handlers, log_failure
from handlers.ui import aftercare_blocks, event_text
from handlers.ui import blocks as slack_ui

__all__ = ["Acknowledgement", "ChannelOutbox", "SlackNotifier", "add_retry_handlers"]
log = logging.getLogger(__name__)
SLACK, ALERTING = "slack", "alerting"  # the notifier's two outbox consumers
BATCH = 100  # outbox events read at a time
FIRST_POST = "deploybot_deployment"  # the metadata event_type of a deployment's top-level message
ADOPT_MARGIN = 300.0  # seconds of history before a recorded attempt searched for its message (clock skew)
FIRST_POST_TRIES = 3  # a failed first message is tried again this many times at once (then at a change)


class SlackNotifier(AlertLifecycle):
    charts: ChartPoster | None = None  # analysis charts in the threads (handlers/charts.py)

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
        self.merge_backlog = merge_backlog  # 1: thread lines piled up in a channel's wait go as one message
        self.watch_interval = watch_interval  # clock seconds between checks for slow approvals/rollouts
        self.live: dict[int, str] = {}  # deployment id -> its live progress line
        self._wake = asyncio.Event()  # set when the store appended events
        self._caught_up = asyncio.Event()  # set when the reader found nothing new
        self._closing = False
        self._cursors: dict[str, int] | None = None  # each consumer's last delivered outbox id
        self._unsubscribe = store.on_append(self._nudge)
        self.directory = directory or SlackDirectory(client)
        self._outboxes: dict[str, ChannelOutbox] = {}
        self._posting: set[int] = set()  # deployments whose first message is queued or being sent
        self._first_tries: dict[int, int] = {}  # deployments whose first message failed: tries so far
        self._shown: dict[tuple[str, str], tuple[str, list]] = {}  # what each message shows now
        self._first_shown: dict[int, tuple[str, list]] = {}
        self._rendered: dict[int, State] = {}  # the state each deployment's message shows
        self._through: dict[int, int] = {}  # the last outbox event shown of each deployment
        self._links: dict[tuple[str, str], str] = {}
        self._escalating: set[tuple[int, int]] = set()  # (alert, round) being posted by this process
        self._timer_wake = asyncio.Event()
        self._pages: asyncio.Queue[tuple[str, Alert, Deployment] | None] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._timers: asyncio.Task | None = None
        self._pager: asyncio.Task | None = None
        self.delivering = True  # False: this replica stands by (handlers/outbox_lease.py)

    # --------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the workers and the alert timers (rebuilt from the store: call it at every start). A
        deployment whose top-level message was set out to be posted, with no ts stored, gets it found
        (or posted) first."""
        for deployment_id in await self.store.unconfirmed_first_posts():
            if deployment_id in self._posting:
                continue
            try:
                d = await self.store.get(deployment_id)
                self._render(d, await self._deployment_channel(d))
            except Exception as exc:  # Slack unreachable: its next change tries again; start regardless
                log_failure(exc, f"the message of deployment #{deployment_id} (looking for it)")
        await self._recover_alerts()
        self._ensure_started()

    def _ensure_started(self) -> None:
        if not self.delivering:  # another replica holds the outbox (handlers/outbox_lease.py)
            return
        if self._worker is None or self._worker.done():
            self._worker = detached_task(self._run(), "slack-notifier")
        if self._timers is None or self._timers.done():
            self._timers = detached_task(self._run_timers(), "alert-timers")
        if self.pagerduty is not None and (self._pager is None or self._pager.done()):
            self._pager = detached_task(self._run_pager(), "pagerduty")

    async def stand_by(self) -> None:
        """Another replica delivers the outbox now: stop reading it and stop the timers (what is queued
        in the channels still goes); read the cursors again if this replica takes it back."""
        self.delivering = False
        tasks = [t for t in (self._worker, self._timers, self._pager) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker = self._timers = self._pager = None
        self._cursors = None

    def _nudge(self) -> None:
        """The store appended events: read them (the reader starts if it is not running)."""
        if self._closing:
            return
        self._caught_up.clear()
        self._wake.set()
        self._ensure_started()

    async def settle(self) -> None:
        """Wait until every event in the outbox is delivered and every channel's queue is empty (tests
        bound it with asyncio.timeout)."""
        self._ensure_started()
        while True:
            await self._caught_up.wait()
            await asyncio.gather(*(b.idle() for b in list(self._outboxes.values())))
            if self._caught_up.is_set() and all(b.is_idle for b in self._outboxes.values()):
                return

    async def drain(self, within: float = 15.0) -> None:
        """Deliver the outbox and send what is queued for up to `within` seconds in all (with Slack down a
        backlog took minutes), then stop; an unread batch stays unmarked, for the next start."""
        deadline = asyncio.get_running_loop().time() + within
        left = lambda: max(0.0, deadline - asyncio.get_running_loop().time())  # noqa: E731
        if self._timers is not None:
            self._timers.cancel()
            await asyncio.gather(self._timers, return_exceptions=True)
            self._timers = None
        self._closing = True  # the reader delivers what is in the outbox, then stops
        self._unsubscribe()
        if self._worker is not None:
            self._wake.set()
            if (await asyncio.wait({self._worker}, timeout=left()))[1]:
                log.warning("shutting down before the outbox was read to its end: the rest at the next start")
                self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        try:
            await asyncio.wait_for(asyncio.gather(*(b.idle() for b in self._outboxes.values())), left())
        except TimeoutError:
            log.warning("shutting down with Slack messages still queued; they are not sent")
        for box in self._outboxes.values():
            await box.close()
        if self._pager is not None:
            self._pages.put_nowait(None)
            if (await asyncio.wait({self._pager}, timeout=max(left(), 1.0)))[1]:
                self._pager.cancel()
            await asyncio.gather(self._pager, return_exceptions=True)
            self._pager = None

    # --------------------------------------------------------------------------------- the outbox

    async def _run(self) -> None:
        """The outbox reader: batches until it is caught up, then waits for the store's nudge."""
        while True:
            self._wake.clear()
            await FOREGROUND.quiet()
            try:
                more = await self._deliver_batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(exc, "reading the outbox")
                more = False
                await asyncio.sleep(1.0)
            if more:
                continue
            if self._closing:
                self._caught_up.set()
                return
            if not self._wake.is_set():
                self._caught_up.set()
                await self._wake.wait()

    async def _deliver_batch(self) -> bool:
        """Deliver the next batch of events to both consumers; False when there was none."""
        if self._cursors is None:
            self._cursors = {c: await self.store.delivered(c) for c in (SLACK, ALERTING)}
        behind = min(self._cursors, key=lambda c: self._cursors[c] if self._cursors else 0)
        read = await self.store.outbox_after(behind, BATCH)
        if not read:
            return False
        flagged = [e for e in read if e.deployment_id is None]
        await flag_notices(
            flagged, self._cursors[SLACK], alerts=self.alerts, channel_id=self.channel_id, outbox=self._outbox
        )
        entries = [e for e in read if e.deployment_id is not None]  # nothing to show for the others
        rows: dict[int, Deployment] = {}
        for entry in entries:
            assert entry.deployment_id is not None
            if entry.deployment_id not in rows:
                rows[entry.deployment_id] = await self.store.get(entry.deployment_id)
        rendered: dict[int, str] = {}  # deployments whose message changes: id -> its channel
        for entry in entries:
            d = rows[entry.deployment_id or 0]
            try:
                if entry.id > self._cursors[SLACK]:
                    await self._show(entry, d, rendered)
                if entry.id > self._cursors[ALERTING]:
                    await self._alert_on(entry, d)
            except Exception as exc:
                log_failure(exc, f"the {entry.event.kind} event of deployment #{d.id}")
        for deployment_id, channel in rendered.items():
            # once per batch, after the batch's thread lines: the update is rendered from the store
            # when it goes (perhaps a later state), so it waits for the lines that came before it
            self._render(rows[deployment_id], channel, after_lines=True)
        last = read[-1].id
        if last > self._cursors[ALERTING]:
            self._cursors[ALERTING] = await self.store.mark_delivered(ALERTING, last)
        if last > self._cursors[SLACK]:
            # delivered = sent: the posts and updates this batch queued have gone out
            await asyncio.gather(*(b.idle() for b in list(self._outboxes.values())))
            self._cursors[SLACK] = await self.store.mark_delivered(SLACK, last)
        return len(read) == BATCH  # a full batch: there may be more

    async def _show(self, entry: OutboxEntry, d: Deployment, rendered: dict[int, str]) -> None:
        """The "slack" consumer: the deployment's message, its thread, the warning and info channels."""
        event = entry.event
        self._through[d.id] = max(entry.id, self._through.get(d.id, 0))
        channel = await self._deployment_channel(d)
        step = event_text.live(event)
        if step is not None:
            self.live[d.id] = step
        changes = not event_text.thread_only(event)
        if changes:
            rendered[d.id] = channel  # rendered at the batch's end: it shows the latest state
            if d.message_ts is None and d.id not in self._posting:
                self._render(d, channel)  # its first message goes before anything in its thread
        if isinstance(event, FeedbackAsked):
            self._ask(d, channel, event.requester)
        words = event_text.line(event, d)
        if words:
            self._line(d, channel, slack_ui.detail_text(d, words))
        if self.charts is not None:  # after the line: the chart follows what it shows in the thread
            self.charts.consider(entry, d, channel)
        level = event.level()
        if words and level == WARNING:
            await self._warn(d, event.alert_event(), words)
        elif level == INFO and changes:
            await self._inform(d, event_text.headline(event, d))
        if changes:
            self._changed()

    async def _alert_on(self, entry: OutboxEntry, d: Deployment) -> None:
        """The "alerting" consumer: a critical event raises an alert (or goes to the standing one's
        thread); a recovery resolves the open ones. By event type, never by its words."""
        event = entry.event
        words = event_text.line(event, d)
        if words and event.level() == CRITICAL:
            await self._raise_critical(d, event.alert_event(), words)
        if isinstance(event, RECOVERY):
            await self._resolve(d)

    # ----------------------------------------------------------------------- deployment message

    def outbox(self, channel: str) -> ChannelOutbox:
        """The channel's one queue: the bot's other messages there (a pipeline's) keep its pace."""
        return self._outbox(channel)

    async def deployment_link(self, d: Deployment) -> str | None:
        return await self._deployment_link(d)

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

    def _render(self, d: Deployment, channel: str, after_lines: bool = False) -> None:
        """Show the deployment's latest state: its first message, or an update of it."""
        group = ("deployment", d.id)
        if d.message_ts is None:
            if d.id not in self._posting:
                self._posting.add(d.id)
                post = Post(
                    group,
                    build=lambda: self._first_message(d.id),
                    sent=lambda resp: self._first_message_sent(d.id, resp),
                    once=True,
                )
                post.failed = lambda: self._first_message_failed(d, channel, post.error)
                self._outbox(channel).post(post)
            return  # the queued first message renders the latest state when it goes
        self._outbox(channel).update(
            group,
            Update(
                group,
                lambda: self._update_deployment(d.id),
                after_posts=d.state.terminal or after_lines,
                urgent=d.state != self._rendered.get(d.id),
            ),
        )

    def _content(self, d: Deployment) -> tuple[str, list[dict[str, Any]]]:
        live = None if d.state.terminal else self.live.get(d.id)
        shown = [*slack_ui.deployment_blocks(d, live), *aftercare_blocks.status(d)]
        blocks = slack_ui.fit(shown, f"(full record: /deploy audit {d.id})")
        return slack_ui.clip(slack_ui.deployment_text(d)), blocks

    async def _first_message(self, deployment_id: int) -> dict[str, Any] | None:
        d = await self.store.get(deployment_id)
        if d.message_ts is None and await self._adopt(d):
            return None
        if d.message_ts is not None:  # posted meanwhile: an update instead
            self._posting.discard(deployment_id)
            self._render(d, d.channel or "")
            return None
        text, blocks = self._content(d)
        self._first_shown[deployment_id] = (text, blocks)
        self._rendered[deployment_id] = d.state
        await self.store.record_first_post_attempt(deployment_id, self.clock.now())  # before the post
        payload = {"deployment_id": d.id, "created_at": d.created_at}
        return {
            "text": text,
            "blocks": blocks,
            "metadata": {"event_type": FIRST_POST, "event_payload": payload},
        }

    async def _adopt(self, d: Deployment) -> bool:
        """A post set out before (by a process that crashed, or whose store write failed) may have reached
        Slack: find it by its metadata in the channel's history and keep its ts. True when adopted."""
        attempted = await self.store.first_post_attempt(d.id)
        if attempted is None:
            return False
        channel = await self._deployment_channel(d)
        try:
            ts = await self._posted(channel, d, attempted - ADOPT_MARGIN)
        except SlackApiError as exc:  # e.g. missing_scope (channels:history / groups:history)
            log.warning("could not look for deployment #%s's message: %s", d.id, exc.response.get("error"))
            return False
        if ts is None:
            return False
        log.info("deployment #%s: adopted its message %s, posted before a restart", d.id, ts)
        await self.store.set_message(d.id, channel, ts)
        self._first_tries.pop(d.id, None)
        self._posting.discard(d.id)
        self._render(await self.store.get(d.id), channel)  # it shows what it showed then: update it
        for a in await self.store.open_alerts(deployment_id=d.id):
            self._refresh_alert(a)
        return True

    async def _posted(self, channel: str, d: Deployment, oldest: float) -> str | None:
        """The ts of the deployment's top-level message in the channel's history since `oldest`, if any."""

        def wanted(payload: dict[str, Any]) -> bool:
            return (
                payload.get("deployment_id") == d.id
                and payload.get("created_at", d.created_at) == d.created_at
            )

        return await find_posted(self.client, channel, oldest, FIRST_POST, wanted)

    def _first_message_failed(self, d: Deployment, channel: str, error: Exception | None) -> None:
        """It may have landed (a 5xx, a lost connection, its ts not stored): try again, a few times; each
        try first looks for it in the channel (the attempt is recorded). Slack's plain refusal (HTTP 200,
        ok false) stored nothing and would be refused again: the next change of the deployment tries."""
        self._posting.discard(d.id)
        tries = self._first_tries.get(d.id, 0) + 1
        refused = isinstance(error, SlackApiError) and getattr(error.response, "status_code", 0) == 200
        if refused or tries > FIRST_POST_TRIES:
            self._first_tries.pop(d.id, None)  # the next change of the deployment tries again
            return
        self._first_tries[d.id] = tries
        self._render(d, channel)

    async def _first_message_sent(self, deployment_id: int, resp: dict[str, Any]) -> None:
        await self.store.set_message(deployment_id, resp["channel"], resp["ts"])
        self._first_tries.pop(deployment_id, None)
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
        if d.state.terminal and await self._lines_to_come(deployment_id):
            return  # it ended after this batch was read: the batch with its end renders it, after its lines
        text, blocks = self._content(d)
        self._rendered[deployment_id] = d.state
        await self._update_message(d.channel, d.message_ts, text, blocks)
        if d.state.terminal:
            self.live.pop(d.id, None)
            self._through.pop(d.id, None)

    async def _lines_to_come(self, deployment_id: int) -> bool:
        """Whether the outbox holds events of this deployment this notifier has not shown yet: its message
        must not say it ended before its thread has the lines that came first."""
        through = self._through.get(deployment_id, 0)
        pending = await self.store.outbox_after(SLACK, BATCH)
        return any(e.deployment_id == deployment_id and e.id > through for e in pending)

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

    def _ask(self, d: Deployment, channel: str, requester: str) -> None:
        """ "How did it go?" in the deployment's thread, with its two buttons."""

        async def build() -> dict[str, Any] | None:
            ts = (await self.store.get(d.id)).message_ts
            text, blocks = aftercare_blocks.question(d, requester)
            return {"text": text, "blocks": blocks, "thread_ts": ts} if ts else None

        self._outbox(channel).post(Post(("deployment", d.id), build=build))

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

    # ---------------------------------------------------------------------------------- lookups

    async def channel_id(self, name: str) -> str:
        return await self.directory.channel_id(name)

    async def mention(self, ref: str | None) -> str | None:
        return await self.directory.mention(ref)
