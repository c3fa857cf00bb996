"""The state a runner keeps per active deployment (a Run: task, gate, wake, plan context, journal) and
the writes every part of the runner shares: a save with what the running step said, a transition the bot
makes, a wait to try again that a person can cut short."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.app.access import Access
from bot.app.leases import Leases
from bot.app.plans import StepContext
from bot.app.ports import Backups, Http, Metrics, Platform
from bot.app.storage import Storage
from bot.clock import Clock
from bot.config.model import Settings
from bot.domain.events import DomainEvent
from bot.domain.model import BOT, Deployment


def _open_gate() -> asyncio.Event:
    gate = asyncio.Event()
    gate.set()
    return gate


Audit = tuple[str, str, dict[str, Any]]  # (actor, action, details) of an audit event
log = logging.getLogger(__name__)


@dataclass
class Journal:
    """What the running step said since the run's last store write — its reports (thread lines), live
    progress lines and audit records — written with the run's next write, or before the step waits
    (every poll passes a checkpoint), whichever comes first: one round trip instead of one each. A crash
    before then loses only words of a step that is run again on resume."""

    audit: list[Audit] = field(default_factory=list)
    events: list[DomainEvent] = field(default_factory=list)

    def take(self) -> tuple[list[Audit], list[DomainEvent]]:
        audit, events = self.audit, self.events
        self.audit, self.events = [], []
        return audit, events


@dataclass
class Run:
    """An active deployment in this process: its task, its gate (set = may run; cleared while paused),
    the running plan's context (promote writes into it) and the journal of what it said."""

    task: asyncio.Task[None] | None = None
    gate: asyncio.Event = field(default_factory=_open_gate)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set: stop waiting to retry, try now
    resumed: bool = False  # started again after a restart (its first step may have half-happened)
    context: StepContext | None = None
    journal: Journal = field(default_factory=Journal)
    lease: str | None = None  # the lease its writes are fenced by (several replicas), once taken
    phase: str = ""  # "forward" or "rollback": what its task is doing (replicas follow the store's state)


class RunBase:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        platform: Platform,
        metrics: Metrics,
        clock: Clock,
        access: Access,
        unschedule: Callable[[str], bool],
        http: Http | None = None,
    ):
        self.settings, self.store, self.clock = settings, store, clock
        self.platform, self.metrics = platform, metrics
        self.access, self.unschedule, self.http = access, unschedule, http
        self.runs: dict[int, Run] = {}
        self.flags: Any = None  # the FlagBook a flag rollout's steps write through (set by the Engine)
        self.backups: Backups | None = None  # snapshots before migrations (set by the Engine)
        self.lifecycle: Any = None  # told when a deployment starts and succeeds (bot.app.verification)
        self.leases: Leases | None = None  # several replicas: each run holds its deployment's lease

    def run_of(self, deployment_id: int) -> Run:
        return self.runs.setdefault(deployment_id, Run())

    async def _save(
        self,
        deployment_id: int,
        *,
        audit: list[Audit] | None = None,
        events: list[DomainEvent] | None = None,
        **fields: Any,
    ) -> Deployment:
        """save_progress with the journal's audit records and events first, all in one transaction."""
        run = self.run_of(deployment_id)
        said, told = run.journal.take()
        audit, events = [*said, *(audit or [])], [*told, *(events or [])]
        if run.lease is not None and self.leases is not None:  # only while this replica's lease holds
            return await self.leases.fenced(
                run.lease, "save_progress", deployment_id, audit=audit, events=events, **fields
            )
        return await self.store.save_progress(deployment_id, audit=audit, events=events, **fields)

    async def _flush(self, deployment_id: int) -> None:
        journal = self.run_of(deployment_id).journal
        if journal.audit or journal.events:
            await self._save(deployment_id)

    async def transition(
        self,
        d: Deployment,
        action: str,
        *,
        outcome: str | None = None,
        details: dict[str, Any] | None = None,
        events: list[DomainEvent] | None = None,
    ) -> Deployment:
        """A transition the bot makes, with the events that announce it (written in its transaction)."""
        run = self.runs.get(d.id)
        if run is not None and run.lease is not None and self.leases is not None:
            return await self.leases.fenced(
                run.lease,
                "transition",
                d.id,
                action,
                BOT,
                details=details,
                outcome=outcome,
                events=events or (),
            )
        return await self.store.transition(
            d.id, action, BOT, details=details, outcome=outcome, events=events or ()
        )

    async def _tell(self, what: str, d: Deployment) -> None:
        """`lifecycle.started(d)` / `.succeeded(d)`: what follows a deployment hears of it. Its failure is
        logged and never changes the deployment (it is on the record already)."""
        hook = getattr(self.lifecycle, what, None)
        if hook is None:
            return
        try:
            await hook(d)
        except Exception:
            log.exception("deployment #%s: what follows it being %s failed", d.id, what)

    async def _wait_to_retry(self, deployment_id: int, seconds: float) -> None:
        """Sleep `seconds` of clock time, or less if a person asks to retry now."""
        wake = self.run_of(deployment_id).wake
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                t.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
            wake.clear()
