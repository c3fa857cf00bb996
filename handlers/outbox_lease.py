"""Several replicas, one outbox: only the replica holding the outbox lease (bot.domain.leases.OUTBOX)
delivers it — the Slack notifier's consumers, the alert timers, PagerDuty and the pipelines' messages —
so nothing is posted, escalated or paged twice. It polls the outbox's head for events other replicas
appended (their appends wake only their own readers); the others stand by and take the lease when it
expires or is handed back. The lease is renewed with the replica's others (bot.app.replica)."""

from __future__ import annotations

import asyncio
import logging

from bot.adapters.store.aio import AsyncStore
from bot.app.leases import Leases
from bot.domain.leases import OUTBOX, Fenced
from bot.tasks import TaskGroup
from handlers.notifier import SlackNotifier
from handlers.pipeline_notifier import PipelineNotifier

log = logging.getLogger(__name__)


class OutboxLease:
    def __init__(
        self,
        notifier: SlackNotifier,
        pipelines: PipelineNotifier,
        leases: Leases,
        store: AsyncStore,
        poll_seconds: float = 0.1,
    ):
        self.notifier, self.pipelines, self.leases, self.store = notifier, pipelines, leases, store
        self.poll_seconds = poll_seconds  # wall seconds between two looks at the outbox's head
        notifier.delivering = pipelines.delivering = False
        self._tasks = TaskGroup("outbox-lease")

    async def run(self, stop: asyncio.Event) -> None:
        head = -1
        while not stop.is_set() and not self.leases.closing:
            try:
                if not self.leases.holds(OUTBOX):
                    head = -1
                    if await self.leases.acquire(OUTBOX, on_lost=self._lost):
                        await self._deliver()
                else:
                    now = await self.store.outbox_head()
                    if now != head:
                        head = now
                        self.notifier._nudge()
                        self.pipelines._nudge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox lease: trying again")
            try:
                await asyncio.wait_for(stop.wait(), self.poll_seconds)
            except TimeoutError:
                pass

    async def _deliver(self) -> None:
        log.info("replica %s delivers the outbox", self.leases.owner)
        self.notifier.delivering = self.pipelines.delivering = True
        await self.notifier.start()
        await self.pipelines.start()

    def _lost(self, fenced: Fenced) -> None:
        log.warning("replica %s no longer delivers the outbox (%s)", self.leases.owner, fenced)
        self.pipelines.delivering = False
        reader = self.pipelines._reader
        if reader is not None:
            reader.cancel()
        self._tasks.spawn(self.notifier.stand_by(), "outbox stand-by")
