"""A pipeline's one Slack message, posted once and updated in place, and its thread — from the outbox.

Its own consumer ("slack-pipelines", its own cursor) reads the store's outbox: a pipeline's events
(bot.domain.pipelines) change its message and add a line to its thread; an event of a deployment that is
a stage of a running pipeline (an approval came in, a step started) changes only the message. The message
is rendered from the store's latest state when its turn comes, in the deployment channel's own queue (the
SlackNotifier's ChannelOutbox, so the channel keeps one pace). The cursor moves once the batch's posts
and updates are sent: a crash repeats at most that batch (an update is idempotent; a thread line may show
twice). The first post is recorded before it goes and carries metadata naming the pipeline; a restart
that finds an attempt without a ts looks for the message in the channel instead of posting again. While
no pipeline runs it reads nothing; the pipelines use case says when one may (Pipelines.on_watch)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.adapters.store.aio import AsyncStore
from bot.clock import Clock
from bot.domain.events import OutboxEntry
from bot.domain.model import Deployment
from bot.domain.pipelines import PIPELINE_EVENTS, Pipeline
from bot.tasks import TaskGroup, detached_task
from handlers.history import find_posted
from handlers.notifier import SlackNotifier
from handlers.slack_outbox import Post, Update, log_failure
from handlers.ui import blocks as slack_ui
from handlers.ui import pipeline_blocks

log = logging.getLogger(__name__)
CONSUMER = "slack-pipelines"
BATCH = 100
FIRST_POST = "deploybot_pipeline"  # the metadata event_type of a pipeline's message
ADOPT_MARGIN = 300.0  # seconds of history before a recorded attempt searched for its message
LINK_RETRY_SECONDS = 1.0  # a stage's deployment whose message is not posted yet: rendered again then
LINK_RETRIES = 10


class PipelineNotifier:
    def __init__(self, notifier: SlackNotifier, store: AsyncStore, clock: Clock | None = None):
        self.notifier, self.store = notifier, store
        self.client = notifier.client
        self.clock = clock or notifier.clock
        self._posting: set[int] = set()  # pipelines whose first message is queued or being sent
        self._shown: dict[int, tuple[str, list[dict[str, Any]]]] = {}
        self._wake = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._channels: set[str] = set()
        self._relink = TaskGroup("pipeline-links")
        self._relinking: dict[int, int] = {}  # pipeline -> renders waiting for a deployment's message
        # While no pipeline runs and none has events to show, the outbox is not read (the store's thread
        # serves requests first); `watch` starts reading again, `_generation` counts its calls.
        self._watching = True
        self._generation = 0
        self._unsubscribe = store.on_append(self._nudge)
        self.delivering = True  # False: this replica stands by (handlers/outbox_lease.py)

    # --------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Read the outbox from the cursor on; a message set out to be posted before a restart, with no ts
        stored, is looked for first."""
        for pipeline_id in await self.store.unconfirmed_pipeline_posts():
            try:
                await self._adopt(await self.store.pipeline(pipeline_id))
            except Exception as exc:
                log_failure(exc, f"the message of pipeline #{pipeline_id} (looking for it)")
        self._ensure_reading()

    def _nudge(self) -> None:
        if self._closing or not self._watching:
            return
        self._caught_up.clear()
        self._wake.set()
        self._ensure_reading()

    def watch(self) -> None:
        """A pipeline may run (bot.app.pipelines.Pipelines.on_watch): read the outbox again."""
        self._watching = True
        self._generation += 1
        self._nudge()

    def _ensure_reading(self) -> None:
        if not self.delivering:  # another replica holds the outbox (handlers/outbox_lease.py)
            return
        if not self._closing and (self._reader is None or self._reader.done()):
            self._reader = detached_task(self._read(), "pipeline-messages")

    async def drain(self) -> None:
        """Stop reading (what is queued in the channels goes with the SlackNotifier's drain)."""
        self._closing = True
        self._unsubscribe()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._relink.aclose()

    async def _read(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                more = await self._deliver()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(exc, "reading the outbox for pipeline messages")
                more = False
                await asyncio.sleep(1.0)
            if more:
                continue
            if not self._wake.is_set():
                self._caught_up.set()
                await self._wake.wait()

    # --------------------------------------------------------------------------------- the outbox

    async def _deliver(self) -> bool:
        generation = self._generation
        read = await self.store.outbox_after(CONSUMER, BATCH)
        if not read:
            return False
        running = await self.store.running_pipelines()
        self._channels = set()  # the queues this batch used
        touched = await self._touch(read, running)
        for p in touched.values():
            await self._show(p, after_lines=True)
        await asyncio.gather(*(self.notifier.outbox(c).idle() for c in self._channels))
        await self.store.mark_delivered(CONSUMER, read[-1].id)
        if not touched and not running and not self._posting and generation == self._generation:
            self._watching = False  # nothing to show until a pipeline runs again
            return False
        return len(read) == BATCH

    async def _touch(self, read: list[OutboxEntry], running: list[Pipeline]) -> dict[int, Pipeline]:
        """The pipelines whose message the batch changes: its own events (each with its thread line),
        and the running ones whose stage's deployment an event is about."""
        stages = {s.deployment_id: p for p in running for s in p.stages if s.deployment_id is not None}
        touched: dict[int, Pipeline] = {}
        for entry in read:
            event = entry.event
            if isinstance(event, PIPELINE_EVENTS):
                p = touched.get(event.pipeline) or await self.store.find_pipeline(event.pipeline)
                if p is None:
                    continue
                touched[p.id] = p
                await self._show(p)
                words = pipeline_blocks.thread_line(event, p)
                if words:
                    await self._line(p, words)
            elif entry.deployment_id in stages:
                found = stages[entry.deployment_id]
                touched.setdefault(found.id, found)
        return touched

    async def _channel(self, p: Pipeline) -> str:
        channel = await self.notifier.channel_id(p.channel or "deploys")
        self._channels.add(channel)
        return channel

    async def _show(self, p: Pipeline, after_lines: bool = False) -> None:
        """Its first message, or an update of it (rendered from the store when it goes)."""
        channel = await self._channel(p)
        group = ("pipeline", p.id)
        if p.message_ts is None:
            fresh = await self.store.pipeline(p.id)
            if fresh.message_ts is None:
                if p.id not in self._posting:
                    self._posting.add(p.id)
                    post = Post(
                        group, build=lambda: self._first(p.id), sent=lambda r: self._sent(p.id, r), once=True
                    )
                    post.failed = lambda: self._posting.discard(p.id)  # its next change tries again
                    self.notifier.outbox(channel).post(post)
                return
        self.notifier.outbox(channel).update(
            group, Update(group, lambda: self._update(p.id), after_posts=after_lines, urgent=True)
        )

    async def _line(self, p: Pipeline, words: str) -> None:
        channel = await self._channel(p)

        async def thread() -> str | None:
            return (await self.store.pipeline(p.id)).message_ts

        self.notifier.outbox(channel).post(Post(("pipeline", p.id), line=slack_ui.clip(words), thread=thread))

    # ------------------------------------------------------------------------------- the message

    async def _content(self, p: Pipeline) -> tuple[str, list[dict[str, Any]]]:
        deployments: dict[int, Deployment] = {}
        links: dict[int, str] = {}
        for stage in p.stages:
            if stage.deployment_id is None:
                continue
            d = await self.store.get(stage.deployment_id)
            deployments[d.id] = d
            link = await self.notifier.deployment_link(d)
            if link:
                links[d.id] = link
            elif d.message_ts is None:
                self._link_later(p.id)
        blocks = slack_ui.fit(pipeline_blocks.pipeline_blocks(p, deployments, links))
        return slack_ui.clip(pipeline_blocks.pipeline_text(p)), blocks

    def _link_later(self, pipeline_id: int) -> None:
        """A stage's deployment has no message yet (its first post is queued behind this): render the
        pipeline again in a moment, so its link appears (a few times at most)."""
        tries = self._relinking.get(pipeline_id, 0)
        if tries >= LINK_RETRIES or self._closing:
            return
        self._relinking[pipeline_id] = tries + 1

        async def again() -> None:
            await asyncio.sleep(LINK_RETRY_SECONDS)
            p = await self.store.pipeline(pipeline_id)
            if p.message_ts is not None:
                await self._show(p)

        self._relink.spawn(again(), f"pipeline-{pipeline_id}-link")

    async def _first(self, pipeline_id: int) -> dict[str, Any] | None:
        p = await self.store.pipeline(pipeline_id)
        if p.message_ts is None and await self._adopt(p):
            return None
        if p.message_ts is not None:
            self._posting.discard(pipeline_id)
            return None
        text, blocks = await self._content(p)
        self._shown[pipeline_id] = (text, blocks)
        await self.store.record_pipeline_post(pipeline_id, self.clock.now())  # before the post
        payload = {"pipeline_id": p.id, "created_at": p.created_at}
        return {
            "text": text,
            "blocks": blocks,
            "metadata": {"event_type": FIRST_POST, "event_payload": payload},
        }

    async def _sent(self, pipeline_id: int, resp: dict[str, Any]) -> None:
        await self.store.set_pipeline_message(pipeline_id, resp["channel"], resp["ts"])
        self._posting.discard(pipeline_id)
        await self._show(await self.store.pipeline(pipeline_id))  # whatever changed while it was posted

    async def _update(self, pipeline_id: int) -> None:
        p = await self.store.pipeline(pipeline_id)
        if p.message_ts is None or p.channel is None:
            return
        text, blocks = await self._content(p)
        if self._shown.get(pipeline_id) == (text, blocks):
            return
        await self.client.chat_update(channel=p.channel, ts=p.message_ts, text=text, blocks=blocks)
        self._shown[pipeline_id] = (text, blocks)

    async def _adopt(self, p: Pipeline) -> bool:
        """A post set out before a crash may have reached Slack: find it by its metadata. True if found."""
        attempted = await self.store.pipeline_post_attempted(p.id)
        if attempted is None:
            return False
        channel = await self._channel(p)
        try:
            ts = await self._posted(channel, p, attempted - ADOPT_MARGIN)
        except SlackApiError as exc:
            log.warning("could not look for pipeline #%s's message: %s", p.id, exc.response.get("error"))
            return False
        if ts is None:
            return False
        await self.store.set_pipeline_message(p.id, channel, ts)
        self._posting.discard(p.id)
        await self._show(await self.store.pipeline(p.id))
        return True

    async def _posted(self, channel: str, p: Pipeline, oldest: float) -> str | None:
        return await find_posted(
            self.client, channel, oldest, FIRST_POST, lambda payload: payload.get("pipeline_id") == p.id
        )
