"""Every channel has its own queue (ChannelOutbox): new messages in order, at most one per `post_interval`;
updates coalesced per message. Slack's 429 and 5xx answers are retried by slack_sdk's handlers (Retry-After).
A post that must never go twice (`Post.once`: a deployment's top-level message) is retried by slack_sdk on
429 only, when Slack stored nothing; after a 5xx or a lost connection it may be there already, so it fails
to its owner, which looks before posting again."""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.foreground import FOREGROUND
from bot.tasks import detached_task
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)


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
class Post:
    """A new message waiting for its channel's turn: `build` gives chat.postMessage's arguments at send
    time (None: nothing to send any more), or `line` is a plain line for the thread `thread` names then."""

    group: Hashable
    build: Callable[[], Awaitable[dict[str, Any] | None]] | None = None
    line: str | None = None
    thread: Callable[[], Awaitable[str | None]] | None = None
    sent: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    failed: Callable[[], None] | None = None
    once: bool = False  # not retried on an answer that may mean it was posted (see the module's doc)
    error: Exception | None = None  # why it failed, set before `failed` is called


@dataclass(eq=False)
class Update:
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
        self._posts: deque[Post] = deque()
        self._updates: dict[Hashable, Update] = {}
        self._last_post = -math.inf
        self._last_update: dict[Hashable, float] = {}
        self._sending: Hashable = None
        self._flooded: set[Hashable] = set()  # threads whose backlog is sent joined until it is gone
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._once_client: AsyncWebClient | None = None

    def post(self, op: Post) -> None:
        self._posts.append(op)
        self._kick()

    def update(self, key: Hashable, op: Update) -> None:
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

    async def post_message(self, *, once: bool = False, **kwargs: Any) -> Any:
        """chat.postMessage, `post_interval` seconds after this channel's previous new message; `once`:
        retried only on 429 (see the module's doc)."""
        wait = self._last_post + self.post_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        client = self._retried_on_429_only() if once else self.client
        try:
            return await client.chat_postMessage(channel=self.channel, **kwargs)
        finally:
            # counted from when Slack answered: Slack then has the previous message, so it sees the two
            # at least `post_interval` apart however long each request took to reach it
            self._last_post = time.monotonic()

    def _retried_on_429_only(self) -> AsyncWebClient:
        """The client (its token, session, base URL) with only its rate-limit retries: a 429 means Slack
        stored nothing; a 5xx or a broken connection may come after it did."""
        if self._once_client is None:
            once = copy.copy(self.client)
            once.retry_handlers = [  # and the handlers that only observe (handlers/slack_telemetry.py)
                h
                for h in self.client.retry_handlers
                if isinstance(h, AsyncRateLimitErrorRetryHandler) or getattr(h, "observes_only", False)
            ]
            self._once_client = once
        return self._once_client

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = detached_task(self._run(), f"slack-outbox-{self.channel}")

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            if self._posts or self._updates:
                await FOREGROUND.quiet()  # people's requests in flight are answered first
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

    async def _send(self, op: Post) -> None:
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
                resp = await self.post_message(once=op.once, **kwargs)
            if op.sent is not None:
                await op.sent(resp.data if hasattr(resp, "data") else resp)
        except Exception as exc:
            log_failure(exc, f"a message for {op.group} in {self.channel}")
            op.error = exc
            if op.failed is not None:
                op.failed()
        finally:
            self._sending = None

    def _lines(self, first: Post) -> str:
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
            log_failure(exc, what)


def log_failure(exc: Exception, what: str) -> None:
    if isinstance(exc, SlackApiError):
        log.error("Slack refused %s: %s", what, exc.response.get("error"))
    else:
        log.error("could not send %s", what, exc_info=exc)
