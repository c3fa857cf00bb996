"""Slack request claims, batched onto the store's thread.

Every mutating request is claimed by Slack's identity for it before bolt sees it, and its answer is kept
for replays after the ack. One store call per claim and per answer is one hop to the store's one thread
each; under a burst (50 concurrent slash commands) those hops, each waiting for the GIL, were the ack's
critical path. Here the claims and answers asked for in one turn of the event loop go together: one hop
and one transaction (one commit) for all of them, handed to the store's thread at once, without waiting for an earlier batch to come back
(the thread runs batches in the order they were handed over, so every claim and answer is taken in the
order it was asked: a replay's claim, always asked after the first copy's answer, still finds that
answer)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.adapters.store.aio import AsyncStore
from bot.domain.model import StoredAnswer
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Claim:
    key: str
    now: float
    future: asyncio.Future[StoredAnswer | None]


@dataclass(frozen=True)
class _Answer:
    key: str
    status: int
    content_type: str
    body: str


_Op = _Claim | _Answer


class RequestClaims:
    def __init__(self, store: AsyncStore):
        self.store = store
        self._pending: list[_Op] = []
        self._scheduled = False
        self._tasks = TaskGroup("request-claims")

    async def claim(self, key: str, now: float) -> StoredAnswer | None:
        """As Store.claim_request: None when this call claimed `key`, else what was answered to it."""
        future: asyncio.Future[StoredAnswer | None] = asyncio.get_running_loop().create_future()
        self._add(_Claim(key, now, future))
        return await future

    def answer(self, key: str, status: int, content_type: str, body: str) -> None:
        """Keep the answer for replays, without waiting for the write."""
        self._add(_Answer(key, status, content_type, body))

    def _add(self, op: _Op) -> None:
        self._pending.append(op)
        if not self._scheduled:  # those asked for in this turn of the event loop go together
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Hand the batch to the store's thread now, even while an earlier batch is still there: the thread
        runs them in the order they were handed over, so a burst's later claims do not wait for the earlier
        ones' answers to come back first."""
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            self._tasks.spawn(self._send(batch), "claims-batch")

    async def _send(self, batch: list[_Op]) -> None:
        try:
            results = await self.store.call(self._run, batch)
        except Exception as exc:  # the thread itself failed: every claim of the batch says so
            results = [exc] * len(batch)
        for op, result in zip(batch, results, strict=True):
            self._settle(op, result)

    def _run(self, batch: list[_Op]) -> list[StoredAnswer | BaseException | None]:
        """On the store's thread: each claim and answer in order, in one transaction (one failing never
        failing the others)."""
        return self.store.sync.claims_and_answers(
            [
                (op.key, op.now) if isinstance(op, _Claim) else (op.key, op.status, op.content_type, op.body)
                for op in batch
            ]
        )

    @staticmethod
    def _settle(op: _Op, result: StoredAnswer | BaseException | None) -> None:
        if isinstance(op, _Answer):
            if isinstance(result, BaseException):
                log.error("could not keep the answer to request %s: %s", op.key[:24], result)
            return
        if op.future.done():  # its request was cancelled (the client went away)
            return
        if isinstance(result, BaseException):
            op.future.set_exception(result)
        else:
            op.future.set_result(result)
