"""The engine: the one object the Slack adapter talks to, composed of the use cases — access, intake,
the gate, scheduling and the runner — each in its own module with one job. What they announce they write
as typed events in the store's outbox, in the transaction of the change (bot.domain.events); the Slack
notifier reads them from there. It knows nothing of Slack."""

from __future__ import annotations

from bot.app.access import Access
from bot.app.aftercare import Aftercare
from bot.app.evidence import EvidenceReader
from bot.app.flags import FlagBook, FlagControl
from bot.app.gate import Gate
from bot.app.intake import Intake, Planned, Request
from bot.app.locks import Locks
from bot.app.pipelines import Pipelines
from bot.app.ports import Backups, Http, Metrics, Platform, Timer
from bot.app.restore import Restores
from bot.app.runner import Runner
from bot.app.scheduling import Scheduling
from bot.app.storage import Storage
from bot.app.verification import AftercareBook, Verifications
from bot.clock import Clock
from bot.config.model import Settings
from bot.domain import commands as cmds
from bot.domain.errors import Refused
from bot.domain.flags import flag_key
from bot.domain.machine import BEFORE_START, State
from bot.domain.model import Amendment, Deployment, LockInfo


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        platform: Platform,
        metrics: Metrics,
        clock: Clock,
        *,
        timer: Timer,
        http: Http | None = None,
        backups: Backups | None = None,
        aftercare: AftercareBook | None = None,
        evidence: EvidenceReader | None = None,
    ):
        self.settings, self.store, self.clock = settings, store, clock
        self.platform, self.metrics = platform, metrics
        self.access = Access(settings, store)
        gate: Gate | None = None

        async def waiting_for(d: Deployment) -> str | None:
            assert gate is not None
            return await gate.waiting_for(d)

        async def reconsider(deployment_id: int) -> None:
            assert gate is not None
            await gate.reconsider(deployment_id)

        self.scheduling = Scheduling(
            settings,
            store,
            platform,
            metrics,
            clock,
            timer,
            waiting_for=waiting_for,
            reconsider=reconsider,
        )
        self.runner = Runner(
            settings,
            store,
            platform,
            metrics,
            clock,
            self.access,
            timer.cancel,
            http,
        )
        gate = self.gate = Gate(
            settings,
            store,
            platform,
            metrics,
            clock,
            self.access,
            self.runner,
            self.scheduling,
            http,
            evidence,
        )
        self.evidence = evidence
        self.what_changes = gate.evidence.dry_run  # a dry run's commits and missing image, after its ack
        self.locks = Locks(store, self.access)
        self.lock, self.unlock = self.locks.lock, self.locks.unlock
        self.intake = Intake(settings, store, self.access, self.scheduling, gate)
        # the people-facing operations, each owned by one use case
        self.check_access, self.refused = self.access.check, self.access.refused
        self.request, self.dry_run = self.intake.request, self.intake.dry_run
        self.approve, self.reject, self.tick, self.recheck = (
            gate.approve,
            gate.reject,
            gate.tick,
            gate.recheck,
        )
        self.promote, self.wait, self.start = (
            self.runner.promote,
            self.runner.wait,
            self.runner.start,
        )
        # feature flags: the book every evaluation reads, the /flag commands, rollouts through the runner
        self.flag_book = FlagBook(settings, store)
        self.runner.flags = self.flag_book
        self.runner.backups = backups
        self.restores = Restores(settings, store, self.access, backups)
        self.restore = self.restores.restore
        self.flags = FlagControl(
            settings,
            store,
            self.flag_book,
            self.access,
            timing=self.scheduling.timing,
            admit=gate.admit_later,
            stop=self._stop_rollout,
        )
        # a version through environments in order, each through its own gate, tests between them
        self.pipelines = Pipelines(settings, store, self.intake, self.access, platform, clock, http)
        # after success: verification, the requester's answer, notes (only with the store's part for them)
        self.verifications: Verifications | None = None
        self.aftercare: Aftercare | None = None
        if aftercare is not None:
            self.verifications = Verifications(settings, store, aftercare, platform, metrics, clock)
            self.runner.lifecycle = self.verifications
            self.aftercare = Aftercare(store, aftercare, self.intake, self.verifications)  # type: ignore[arg-type]
        self.freeze, self.unfreeze = self.scheduling.freeze, self.scheduling.unfreeze
        self.windows_report, self.freezes = self.scheduling.windows_report, self.scheduling.freezes

    async def act(
        self, deployment_id: int, action: str, user: str, roles: frozenset[str] | None = None
    ) -> Deployment:
        """A person's button on a deployment's message. The Kill button of a flag rollout is the flag's
        kill switch (every evaluation off at once; the rollout stops with it)."""
        if action == "kill":
            d = await self.store.get(deployment_id)
            key = flag_key(d.service)
            if key is None:
                raise Refused(f"Deployment {d.ref} is not a flag rollout: there is nothing to kill.")
            await self.flags.change(cmds.FlagChange(key, d.env, "kill"), user, roles or frozenset())
            return await self.store.get(deployment_id)
        return await self.runner.act(deployment_id, action, user, roles)

    async def _stop_rollout(self, d: Deployment, user: str) -> Deployment:
        """A flag's rollout stopped by its kill switch (or by turning it off): aborted when it runs, cancelled
        before it starts. The person's right to do so was checked already (kill_flag or flag)."""
        action = "cancel" if d.state in BEFORE_START else "abort"
        return await self.runner.act(d.id, action, user)

    @property
    def scheduler(self) -> Timer:
        return self.scheduling.scheduler

    def start_scheduler(self) -> None:
        self.scheduling.start()

    async def resume_in_flight(self) -> list[Deployment]:
        """After a restart: flags' states read, stale locks released, mid-plan deployments carried on,
        scheduled ones put back on the scheduler (or moved on when their time passed), requests whose
        checks a crash cut short checked again, and running pipelines driven on."""
        await self.flag_book.load()
        resumed = await self.runner.resume()
        for d in await self.store.scheduled():
            await self.scheduling.reschedule_after_downtime(d.id)
        for d in await self.store.active():
            if d.state == State.REQUESTED:  # the crash came while its checks ran: check it again
                self.gate.admit_later(d.id)
            elif d.state == State.AWAITING_APPROVAL:  # a CI result it waited for is asked again
                await self.gate.resume_ci(d)
        await self.pipelines.resume()  # every running pipeline carried on from its record
        if self.verifications is not None:
            await self.verifications.resume()  # every verification still watching, from the store
        return resumed

    async def shutdown(self) -> None:
        """Stop running plans where they are; the store has everything needed to resume them."""
        await self.pipelines.shutdown()
        if self.verifications is not None:
            await self.verifications.shutdown()
        self.scheduling.shutdown()
        await self.runner.shutdown()
        await self.gate.shutdown()
        await self.intake.shutdown()
        await self.restores.shutdown()


__all__ = ["Amendment", "Engine", "LockInfo", "Planned", "Request", "cmds"]
