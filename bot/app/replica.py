"""One replica among several sharing a store: every third of a lease time it renews its leases, takes
over each mid-plan deployment whose lease expired (a replica that died or stalls) and resumes it from
its persisted step, follows what people did on another replica to the deployments it runs (pause,
resume, abort: the state is in the store, the run's gate in this process), and puts on its timer the
scheduled deployments another replica scheduled (each firing is claimed, so it runs once)."""

from __future__ import annotations

import asyncio
import logging

from bot.app.leases import Leases
from bot.app.runner import Runner
from bot.app.scheduling import Scheduling
from bot.app.storage import Storage
from bot.clock import Clock
from bot.domain.leases import fire_lease
from bot.domain.machine import State

log = logging.getLogger(__name__)


class Replica:
    def __init__(self, store: Storage, clock: Clock, leases: Leases, runner: Runner, scheduling: Scheduling):
        self.store, self.clock, self.leases = store, clock, leases
        self.runner, self.scheduling = runner, scheduling
        self.taken_over: list[int] = []
        scheduling.cache_freezes = False  # another replica may freeze or unfreeze
        runner.leases = leases
        # every replica has the scheduled deployments on its timer; each firing is claimed once
        scheduling.scheduler.bind(self._due, self._missed)

    async def _claim(self, key: str, what: str) -> bool:
        d = await self.store.find(int(key))
        if d is None or d.state != State.SCHEDULED:
            return False
        name = fire_lease(f"{what}:{key}", float(d.context.get("run_at") or 0.0))
        # held for a week: a firing is claimed once; the next one (a moved time) has a name of its own
        return await self.leases.store.acquire_lease(name, self.leases.owner, 7 * 86400.0) is not None

    async def _due(self, key: str) -> None:
        if await self._claim(key, "due"):
            await self.scheduling._due(key)

    async def _missed(self, key: str, due: float) -> None:
        if await self._claim(key, "missed"):
            await self.scheduling._missed(key, due)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: a tick every third of a lease time (clock time)."""
        while not stop.is_set() and not self.leases.closing:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replica %s: lease upkeep failed; trying again", self.leases.owner)
            try:
                await asyncio.wait_for(stop.wait(), self.clock.real_seconds(self.leases.renew_every))
            except TimeoutError:
                pass

    async def tick(self) -> None:
        await self.leases.renew_all()
        await self.follow()
        await self.adopt()
        await self.schedules()

    async def adopt(self) -> list[int]:
        """Take over every mid-plan deployment nobody holds a live lease on."""
        adopted = []
        for d in await self.leases.store.unleased_in_flight():
            if self.leases.closing or self.runner.running(d.id):
                continue
            run = self.runner.run_of(d.id)
            run.resumed = True
            if d.state == State.PAUSED:  # a gate left by a person's action on this replica is not the truth
                run.gate.clear()
            else:
                run.gate.set()
            self.runner.start(d.id)
            adopted.append(d.id)
        if adopted:
            log.info("replica %s: taking over deployments %s", self.leases.owner, adopted)
            self.taken_over += adopted
        return adopted

    async def follow(self) -> None:
        """People act through any replica: the store has their pause, resume and abort; the runs here
        follow it (the gate; a run going forward when the store says it rolls back starts again)."""
        for deployment_id, run in list(self.runner.runs.items()):
            if run.lease is None or run.task is None or run.task.done():
                continue
            d = await self.store.get(deployment_id)
            if d.state == State.PAUSED:
                run.gate.clear()
            elif d.state == State.RUNNING:
                run.gate.set()
            elif (d.state == State.ROLLING_BACK and run.phase == "forward") or d.state.terminal:
                await self.runner._stop_task(deployment_id)
                if not d.state.terminal:
                    self.runner.start(deployment_id)
                else:
                    await self.leases.release(run.lease)
                    run.lease = None

    async def schedules(self) -> None:
        """Scheduled deployments another replica scheduled: on this one's timer too (either may fire)."""
        jobs = getattr(self.scheduling.scheduler, "jobs", None)
        if not callable(jobs):  # a timer that cannot say what it holds (a test's)
            return
        known = jobs()
        for d in await self.store.scheduled():
            if str(d.id) not in known:
                await self.scheduling.reschedule_after_downtime(d.id)
