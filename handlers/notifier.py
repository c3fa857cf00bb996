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
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.pagerduty import PagerDuty
from bot.adapters.store.aio import AsyncStore
from bot.app.notices import Notice
from bot.app.plan_time import plan_minimum_seconds
from bot.clock import Clock
from bot.domain import alerts as policy
from bot.domain.alerts import CRITICAL, INFO, WARNING, AlertConfig
from bot.domain.machine import State
from bot.domain.model import Alert, Deployment
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
USER_ID = re.compile(r"^[UW][A-Z0-9]{6,}$")
GROUP_ID = re.compile(r"^S[A-Z0-9]{6,}$")


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


# ------------------------------------------------------------------------------------ per-channel queue


@dataclass(eq=False)
class _Post:
    """A new message waiting for its channel's turn: `build` gives chat.postMessage's arguments at send
    time (None: nothing to send any more), or `line` is a plain line for the thread `thread` names then."""

    group: Hashable
    build: Callable[[], Awaitable[dict[str, Any] | None]] | None = None
    line: str | None = None
    thread: Callable[[], Awaitable[str | None]] | None = None
    sent: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    failed: Callable[[], None] | None = None


@dataclass(eq=False)
class _Update:
    """An edit of an existing message; only the latest one per message counts. `after_posts`: wait until
    no new message of the same group is queued (a finished deployment shows so once its thread is out)."""

    group: Hashable
    run: Callable[[], Awaitable[None]]
    after_posts: bool = False
    urgent: bool = False  # a new state: not held back by update_interval (the live line's churn is)


class ChannelOutbox:
    """One channel's outgoing messages. New ones go out in order, at most one per `post_interval` seconds
    (Slack allows about one per second per channel); updates of existing messages are coalesced per message
    and sent at most once per `update_interval` seconds each. When more than `merge_backlog` lines wait for
    one thread, they go out joined in fewer messages, so a flood cannot build an ever longer queue."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        *,
        post_interval: float = 1.0,
        update_interval: float = 1.0,
        merge_backlog: int = 20,
    ):
        self.client, self.channel = client, channel
        self.post_interval, self.update_interval = post_interval, update_interval
        self.merge_backlog = merge_backlog
        self._posts: deque[_Post] = deque()
        self._updates: dict[Hashable, _Update] = {}
        self._last_post = -math.inf
        self._last_update: dict[Hashable, float] = {}
        self._sending: Hashable = None
        self._flooded: set[Hashable] = set()  # threads whose backlog is sent joined until it is gone
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None

    def post(self, op: _Post) -> None:
        self._posts.append(op)
        self._kick()

    def update(self, key: Hashable, op: _Update) -> None:
        old = self._updates.get(key)
        if old is not None:
            op.after_posts = op.after_posts or old.after_posts
            op.urgent = op.urgent or old.urgent
        self._updates[key] = op
        self._kick()

    def pending(self, group: Hashable) -> bool:
        """A new message of `group` is queued or being sent."""
        return self._sending == group or any(p.group == group for p in self._posts)

    async def idle(self) -> None:
        await self._idle.wait()

    @property
    def is_idle(self) -> bool:
        return self._idle.is_set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def post_message(self, **kwargs: Any) -> Any:
        """chat.postMessage, `post_interval` seconds after this channel's previous new message."""
        wait = self._last_post + self.post_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            return await self.client.chat_postMessage(channel=self.channel, **kwargs)
        finally:
            # counted from when Slack answered: Slack then has the previous message, so it sees the two
            # at least `post_interval` apart however long each request took to reach it
            self._last_post = time.monotonic()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"slack-outbox-{self.channel}"
            )

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            job = self._next()
            if job is not None:
                await job
                continue
            if not self._posts and not self._updates:
                self._idle.set()
            try:
                await asyncio.wait_for(self._wake.wait(), self._delay())
            except TimeoutError:
                pass

    def _next(self) -> Awaitable[None] | None:
        now = time.monotonic()
        for key, op in self._updates.items():
            if op.after_posts and self.pending(op.group):
                continue
            if not op.urgent and now < self._last_update.get(key, -math.inf) + self.update_interval:
                continue
            del self._updates[key]
            self._last_update[key] = now
            return self._guard(op.run(), f"update in {self.channel}")
        if self._posts and now >= self._last_post + self.post_interval:
            return self._send(self._posts.popleft())
        return None

    def _delay(self) -> float | None:
        now, waits = time.monotonic(), []
        if self._posts:
            waits.append(self._last_post + self.post_interval - now)
        for key, op in self._updates.items():
            if not (op.after_posts and self.pending(op.group)):
                waits.append(
                    0.0 if op.urgent else self._last_update.get(key, -math.inf) + self.update_interval - now
                )
        return max(0.0, min(waits)) if waits else None

    async def _send(self, op: _Post) -> None:
        self._sending = op.group
        try:
            if op.line is not None:
                thread_ts = await op.thread() if op.thread is not None else None
                if op.thread is not None and thread_ts is None:
                    log.warning(
                        "a line for %s in %s had no message to go under; dropped", op.group, self.channel
                    )
                    return
                resp = await self.post_message(text=self._lines(op), thread_ts=thread_ts)
            else:
                kwargs = await op.build() if op.build is not None else None
                if kwargs is None:
                    return
                resp = await self.post_message(**kwargs)
            if op.sent is not None:
                await op.sent(resp.data if hasattr(resp, "data") else resp)
        except Exception as exc:
            _log_failure(exc, f"a message for {op.group} in {self.channel}")
            if op.failed is not None:
                op.failed()
        finally:
            self._sending = None

    def _lines(self, first: _Post) -> str:
        """The line — with every line queued behind it for the same thread while that thread is flooded
        (more than `merge_backlog` lines waiting, until its backlog is gone)."""
        lines = [first.line or ""]
        same = [p for p in self._posts if p.group == first.group and p.line is not None]
        if not same:
            self._flooded.discard(first.group)
        elif first.group in self._flooded or len(same) + 1 > self.merge_backlog:
            self._flooded.add(first.group)
            size = len(lines[0])
            for p in same:
                if size + len(p.line or "") + 1 > slack_ui.MAX_TEXT:
                    break
                self._posts.remove(p)
                lines.append(p.line or "")
                size += len(p.line or "") + 1
        return "\n".join(lines)

    async def _guard(self, job: Awaitable[None], what: str) -> None:
        try:
            await job
        except Exception as exc:
            _log_failure(exc, what)


def _log_failure(exc: Exception, what: str) -> None:
    if isinstance(exc, SlackApiError):
        log.error("Slack refused %s: %s", what, exc.response.get("error"))
    else:
        log.error("could not send %s", what, exc_info=exc)


# ------------------------------------------------------------------------------------------ the notifier


@dataclass(frozen=True)
class Acknowledgement:
    alert: Alert
    now: bool  # True: this click acknowledged it; False: someone had already (nothing changed)


class SlackNotifier:
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
        self._channels: dict[str, str] = {}
        self._people: dict[str, str] = {}
        self._groups: dict[str, str] = {}
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
                _log_failure(exc, f"the notice for deployment #{notice.deployment.id if notice else '?'}")
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
                    _Post(
                        group,
                        build=lambda: self._first_message(d.id),
                        sent=lambda resp: self._first_message_sent(d.id, resp),
                        failed=lambda: self._posting.discard(d.id),
                    )
                )
            return  # the queued first message renders the latest state when it goes
        self._outbox(channel).update(
            group,
            _Update(
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

        self._outbox(channel).post(_Post(("deployment", d.id), line=text, thread=thread))

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

    async def _raise_critical(self, d: Deployment, event: str, text: str) -> None:
        """A critical alert, unless one about this deployment is still unacknowledged: then the news goes
        to that alert's thread (one alert, one escalation, one page per incident)."""
        standing = [a for a in await self.store.open_alerts(deployment_id=d.id) if a.level == CRITICAL]
        standing = [a for a in standing if not a.acknowledged]
        if standing:
            what = slack_ui.alert_title(event, d, "Update")
            await self._alert_line(standing[-1], f"{what}: {slack_ui.detail_text(d, text)}")
            return
        now = self.clock.now()  # one reading: the escalation is due exactly its delay after the raise
        a = await self.store.raise_alert(
            d.id, event, CRITICAL, text, escalate_at=self.alerts.first_escalation(now), raised_ts=now
        )
        if a is None:  # only keyed alerts are ever refused
            return
        for channel, in_thread in await self._alert_channels(CRITICAL, d, always=True):
            if in_thread:
                await self._ensure_message(d)
            self._post_alert(a.id, d.id, channel, in_thread)
        self._timer_wake.set()
        self._page("trigger", a, d)
        self._changed()

    async def _alert_channels(
        self, level: str, d: Deployment, always: bool = False
    ) -> list[tuple[str, bool]]:
        """(channel id, whether it is the deployment's own channel) for `level` in d's environment. In its
        own channel an alert goes in the deployment's thread: the channel keeps one message per deployment."""
        own = await self._deployment_channel(d)
        out = []
        for name in self.alerts.channels(level, d.env):
            try:
                channel = await self.channel_id(name)
            except LookupError as exc:
                log.error("%s alert for deployment #%s: %s", level, d.id, exc)
                continue
            if (channel, channel == own) not in out:
                out.append((channel, channel == own))
        if not out and always:
            out.append((own, True))
        return out

    def _post_alert(self, alert_id: int, deployment_id: int, channel: str, in_thread: bool) -> None:
        shown: dict[str, Any] = {}

        async def build() -> dict[str, Any] | None:
            a, d = await self.store.alert(alert_id), await self.store.get(deployment_id)
            text, blocks = await self._critical_content(a, d)
            shown.update(text=text, blocks=blocks)
            kwargs: dict[str, Any] = {"text": text, "blocks": blocks}
            if in_thread:
                if d.message_ts is None:
                    log.warning("critical alert #%s: deployment #%s has no message to go under", a.id, d.id)
                    return None
                kwargs["thread_ts"] = d.message_ts
            return kwargs

        async def sent(resp: dict[str, Any]) -> None:
            a = await self.store.add_alert_message(alert_id, resp["channel"], resp["ts"])
            self._shown[(resp["channel"], resp["ts"])] = (shown["text"], shown["blocks"])
            self._refresh_alert(a)  # acknowledged while it was being posted? (skipped if not)
            self._timer_wake.set()

        group = ("deployment", deployment_id) if in_thread else ("alert", alert_id)
        self._outbox(channel).post(_Post(group, build=build, sent=sent))

    async def _ensure_message(self, d: Deployment) -> None:
        """Queue the deployment's first message if it has none and none is queued (an alert goes under it)."""
        if d.message_ts is None and d.id not in self._posting:
            self._render(d, await self._deployment_channel(d))

    async def _critical_content(self, a: Alert, d: Deployment) -> tuple[str, list[dict[str, Any]]]:
        next_target = None
        if a.next_escalation_at is not None and not a.acknowledged:
            next_target = await self.mention(self.alerts.escalation_target(a.rounds_sent + 1))
        text, blocks = slack_ui.critical_alert(
            d,
            a,
            link=await self._deployment_link(d),
            oncall=await self.mention(self.alerts.oncall),
            rounds=max(self.alerts.escalation_rounds, a.rounds_sent),
            next_target=next_target,
        )
        return text, slack_ui.fit(blocks, f"(full record: /deploy audit {d.id})")

    def _refresh_alert(self, a: Alert) -> None:
        """Show an alert's current state (acknowledged, escalated, resolved) on each of its messages."""
        if a.level != CRITICAL:
            return
        for m in a.messages:
            channel, ts = m["channel"], m["ts"]

            async def run(channel: str = channel, ts: str = ts) -> None:
                current = await self.store.alert(a.id)
                text, blocks = await self._critical_content(
                    current, await self.store.get(current.deployment_id)
                )
                await self._update_message(channel, ts, text, blocks)

            self._outbox(channel).update(("alert", a.id, ts), _Update(("alert", a.id), run))

    async def _alert_line(self, a: Alert, text: str) -> None:
        """A line in the thread of an alert's first message."""
        if a.thread is None:
            d = await self.store.get(a.deployment_id)
            places = await self._alert_channels(CRITICAL, d, always=True)
            channel = places[0][0]
        else:
            channel = a.thread["channel"]

        async def thread() -> str | None:
            first = (await self.store.alert(a.id)).thread
            return first["ts"] if first else None

        self._outbox(channel).post(_Post(("alert", a.id), line=text, thread=thread))

    async def acknowledge(self, alert_id: int, user: str) -> Acknowledgement:
        """A person acknowledges a critical alert. Only the first click counts; KeyError for no such alert."""
        won, a = await self.store.acknowledge_alert(alert_id, user)
        if won:
            self._ensure_started()
            self._refresh_alert(a)
            self._page("acknowledge", a, await self.store.get(a.deployment_id))
            self._timer_wake.set()
            self._changed()
        return Acknowledgement(a, won)

    async def _resolve(self, d: Deployment) -> None:
        """The deployment recovered (rolled back, or succeeded): its open alerts are resolved — and, when
        it succeeded, those of earlier deployments of the same service and environment too."""
        candidates = await self.store.open_alerts(deployment_id=d.id)
        if d.state == State.SUCCEEDED:
            earlier = await self.store.open_alerts(service=d.service, env=d.env)
            candidates += [a for a in earlier if a.deployment_id < d.id]
        if not candidates:
            return
        resolution = f"{d.ref} {d.state.word}" + (f" — {slack_ui.clip(d.outcome, 300)}" if d.outcome else "")
        resolved = await self.store.resolve_alerts(
            sorted({a.id for a in candidates}), resolution, stop_escalation=not self.alerts.escalate_resolved
        )
        paged: set[int] = set()
        for a in resolved:
            self._refresh_alert(a)
            if a.level == CRITICAL and a.deployment_id not in paged:
                paged.add(a.deployment_id)
                self._page("resolve", a, await self.store.get(a.deployment_id))
        if resolved:
            self._timer_wake.set()
            self._changed()

    async def _warn(self, d: Deployment, event: str | None, text: str) -> None:
        """A warning goes to the warning channels; the deployment's own channel has it in the thread."""
        for channel, in_own in await self._alert_channels(WARNING, d):
            if not in_own:
                self._post_simple(channel, d, WARNING, text, event)

    async def _inform(self, d: Deployment, notice: Notice) -> None:
        """Info stays in the deployment's thread, unless info channels are configured."""
        places = [c for c, in_own in await self._alert_channels(INFO, d) if not in_own]
        if not places:
            return
        text = notice.text or notice.deployment.state.word
        if notice.kind == "progress":
            text = f"Step {notice.deployment.step_index + 1}/{len(notice.deployment.plan)}: {notice.text}"
        for channel in places:
            self._post_simple(channel, d, INFO, text, None)

    def _post_simple(self, channel: str, d: Deployment, level: str, text: str, event: str | None) -> None:
        async def build() -> dict[str, Any]:
            link = await self._deployment_link(await self.store.get(d.id))
            fallback, blocks = slack_ui.alert(d, level, text, link, event)
            return {"text": fallback, "blocks": slack_ui.fit(blocks, f"(full record: /deploy audit {d.id})")}

        self._outbox(channel).post(_Post((level, d.id), build=build))

    # ------------------------------------------------------------------------------------ timers

    async def _run_timers(self) -> None:
        """Escalations (rebuilt from the store at start) and the timer warnings: approvals waiting too
        long, rollouts running too long."""
        watching = (
            self.alerts.approval_warning_seconds is not None or self.alerts.slow_rollout_seconds is not None
        )
        next_watch = self.clock.now()
        while True:
            self._timer_wake.clear()
            due = None
            try:
                await self._recover_escalations()
                now = self.clock.now()
                for a in await self.store.due_escalations(now):
                    await self._escalate(a, now)
                if watching and now >= next_watch:
                    await self._watch(now)
                    next_watch = now + self.watch_interval
                due = await self.store.next_escalation_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert timers failed; trying again")
                due = self.clock.now() + self.watch_interval
            deadlines = [t for t in (due, next_watch if watching else None) if t is not None]
            await self._sleep_until(min(deadlines) if deadlines else None)

    async def _sleep_until(self, deadline: float | None) -> None:
        """Sleep until `deadline` on the clock (None: for ever), or until something changes the timers."""

        async def until() -> None:
            assert deadline is not None
            while (left := deadline - self.clock.now()) > 0:
                await self.clock.sleep(left)  # measured as the sleep starts: a clock jump cannot stretch it

        waiter = asyncio.ensure_future(self._timer_wake.wait())
        tasks = {waiter}
        if deadline is not None:
            tasks.add(asyncio.ensure_future(until()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _escalate(self, a: Alert, now: float) -> None:
        round_ = a.rounds_sent + 1
        due = a.next_escalation_at if a.next_escalation_at is not None else now
        following = self.alerts.following_escalation(round_, due, now)
        if await self.store.claim_escalation(a.id, round_, following):
            await self._post_escalation(a, round_, waited=now - a.raised_ts)

    async def _post_escalation(self, a: Alert, round_: int, waited: float) -> None:
        """Round `round_` in the alert's thread, mentioning that round's target; confirmed once posted."""
        self._escalating.add((a.id, round_))
        if a.thread is not None:
            channel, thread_ts = a.thread["channel"], a.thread["ts"]
        else:  # its message never went out: the escalation stands on its own
            places = await self._alert_channels(CRITICAL, await self.store.get(a.deployment_id), always=True)
            channel, thread_ts = places[0][0], None
        target_ref = self.alerts.escalation_target(round_)

        async def build() -> dict[str, Any] | None:
            current = await self.store.alert(a.id)
            if current.acknowledged:  # acknowledged while it waited for its turn
                await self.store.confirm_escalation(a.id, round_, {"skipped": "acknowledged"})
                self._escalating.discard((a.id, round_))
                return None
            d = await self.store.get(current.deployment_id)
            target = await self.mention(target_ref)
            rounds = max(self.alerts.escalation_rounds, round_)
            link = await self._deployment_link(d)
            text, blocks = slack_ui.escalation(d, current, round_, rounds, target, waited, link)
            blocks = slack_ui.fit(blocks)
            kwargs: dict[str, Any] = {"text": text, "blocks": blocks}
            if thread_ts is not None:
                kwargs["thread_ts"] = thread_ts
            return kwargs

        async def sent(resp: dict[str, Any]) -> None:
            self._escalating.discard((a.id, round_))
            await self.store.confirm_escalation(a.id, round_, {"target": target_ref, "ts": resp["ts"]})
            self._refresh_alert(await self.store.alert(a.id))
            self._timer_wake.set()
            self._changed()

        def failed() -> None:
            self._escalating.discard((a.id, round_))  # left claimed: the timers try it again

        self._outbox(channel).post(_Post(("alert", a.id), build=build, sent=sent, failed=failed))

    async def _recover_escalations(self) -> None:
        """Rounds claimed but never confirmed (the bot stopped while posting them, or Slack refused): if
        the alert's thread has the round, record it; else post it now. Never twice, never lost."""
        for a in await self.store.in_doubt_escalations():
            round_ = a.rounds_sent + 1
            if (a.id, round_) in self._escalating:
                continue
            if await self._escalation_posted(a, round_):
                await self.store.confirm_escalation(a.id, round_, {"recovered": True})
                continue
            await self._post_escalation(a, round_, waited=self.clock.now() - a.raised_ts)

    async def _escalation_posted(self, a: Alert, round_: int) -> bool:
        if a.thread is None:
            return False
        marker = slack_ui.escalation_block_id(a.id, round_)
        try:
            out = await self.client.conversations_replies(
                channel=a.thread["channel"], ts=a.thread["ts"], limit=200
            )
        except SlackApiError as exc:
            log.warning(
                "cannot read alert #%s's thread (%s); posting round %s",
                a.id,
                exc.response.get("error"),
                round_,
            )
            return False
        return any(
            b.get("block_id") == marker for m in out.get("messages", []) for b in m.get("blocks") or []
        )

    async def _watch(self, now: float) -> None:
        """Warnings raised by time passing: an approval waiting too long, a rollout running too long."""
        for d in await self.store.active():
            if d.state == State.AWAITING_APPROVAL:
                waits = [e for e in await self.store.events(d.id) if e.action == "await_approval"]
                since = _epoch(waits[-1].at if waits else d.created_at)
                if policy.approval_overdue(since, now, self.alerts):
                    waiting_for = (d.context.get("gate") or {}).get("waiting_for") or "approval"
                    text = f"{d.ref} has been waiting {slack_ui.span(now - since)} for {waiting_for}."
                    await self._timer_warning(d, "approval_waiting", text)
            elif d.state == State.RUNNING and self.alerts.slow_rollout_seconds is not None:
                starts = [e for e in await self.store.events(d.id) if e.action == "start"]
                since = _epoch(starts[-1].at) if starts else _epoch(d.created_at)
                if policy.rollout_overdue(since, now, plan_minimum_seconds(d.plan), self.alerts):
                    text = (
                        f"{d.ref} has been running for {slack_ui.span(now - since)}; its plan takes at least "
                        f"{slack_ui.span(plan_minimum_seconds(d.plan))}. Is the rollout stuck?"
                    )
                    await self._timer_warning(d, "slow_rollout", text)

    async def _timer_warning(self, d: Deployment, event: str, text: str) -> None:
        if await self.store.raise_alert(d.id, event, WARNING, text, key=f"{event}:{d.id}") is None:
            return  # raised once already
        channel = await self._deployment_channel(d)
        self._line(d, channel, f":warning: {text}")
        await self._warn(d, event, text)
        self._changed()

    # --------------------------------------------------------------------------------- PagerDuty

    def _page(self, action: str, a: Alert, d: Deployment) -> None:
        if self.pagerduty is not None:
            self._ensure_started()
            self._pages.put_nowait((action, a, d))

    async def _run_pager(self) -> None:
        assert self.pagerduty is not None
        while (item := await self._pages.get()) is not None:
            action, a, d = item
            key = policy.pagerduty_dedup_key(d.id)
            try:
                if action == "trigger":  # at once, Slack or not: the link is there if the message is
                    link = await self._deployment_link(await self.store.get(d.id))
                    what = slack_ui.alert_title(a.event, d)
                    await self.pagerduty.trigger(
                        key,
                        # plain text, not mrkdwn: no markup can ride back into Slack on PD's integration
                        slack_ui.plain(f"{what}: {slack_ui.title(d)}: {a.text}"),
                        component=d.service,
                        group=d.env,
                        event_class=a.event,
                        custom_details={"deployment": d.id, "version": d.version, "state": d.state.value},
                        links=[{"href": link, "text": "The deployment in Slack"}] if link else None,
                    )
                elif action == "acknowledge":
                    await self.pagerduty.acknowledge(key)
                else:
                    await self.pagerduty.resolve(key)
            except Exception as exc:
                log.error("PagerDuty %s for deployment #%s failed: %s", action, d.id, exc)

    # ---------------------------------------------------------------------------------- lookups

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("Home tab refresh failed")

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

    async def mention(self, ref: str | None) -> str | None:
        """How to mention a configured user or group: a group handle ("oncall") or id, "@name" or a user
        id. Unknown names are shown as plain text (and logged), never dropped."""
        if not ref:
            return None
        ref = ref.strip()
        if ref.startswith("<"):
            return ref
        if USER_ID.match(ref):
            return f"<@{ref}>"
        if GROUP_ID.match(ref):
            return f"<!subteam^{ref}>"
        name = ref.lstrip("@")
        try:
            if not ref.startswith("@"):
                group = await self._group_id(name)
                if group:
                    return f"<!subteam^{group}>"
            person = await self._user_id(name)
            if person:
                return f"<@{person}>"
            group = await self._group_id(name)
            if group:
                return f"<!subteam^{group}>"
        except SlackApiError as exc:
            log.warning("cannot look up %s to mention: %s", ref, exc.response.get("error"))
        log.warning("no Slack user or user group %r to mention; check [alerts] in the config", ref)
        return f"@{name}"

    async def _group_id(self, handle: str) -> str | None:
        if not self._groups:
            out = await self.client.usergroups_list()
            self._groups = {g["handle"]: g["id"] for g in out.get("usergroups", [])}
        return self._groups.get(handle)

    async def _user_id(self, name: str) -> str | None:
        if not self._people:
            cursor = None
            while True:
                page = await self.client.users_list(limit=200, cursor=cursor)
                for u in page.get("members", []):
                    self._people[u["name"]] = u["id"]
                cursor = page.get("response_metadata", {}).get("next_cursor")
                if not cursor:
                    break
        return self._people.get(name)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
