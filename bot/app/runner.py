"""The runner: one Run per active deployment (its task, its pause gate, its plan's context), removed when
the deployment's task ends. A run goes through its plan step by step, persisting the step index before
and after each step, rolls back when a step fails, and applies people's actions (pause, resume, abort,
promote)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.app import history
from bot.app.access import button_role
from bot.app.foreground import BACKGROUND, FOREGROUND
from bot.app.leases import FencedBackups, FencedFlags, FencedPlatform
from bot.app.plans import NeedsHuman, Step, StepContext, StepFailed, step_from_dict, verify_live
from bot.app.ports import PlatformError
from bot.app.rollback import FORWARD_ATTEMPTS, NUDGES, Rollbacks, backoff, failure_reason
from bot.app.run import Audit, Run
from bot.domain.errors import Refused
from bot.domain.events import (
    Aborted,
    Cancelled,
    DeployFailed,
    Detail,
    DomainEvent,
    Paused,
    Progress,
    Promoted,
    RestartResumed,
    Resumed,
    RollingBack,
    Started,
    StepStarted,
    Succeeded,
)
from bot.domain.flags import flag_key
from bot.domain.leases import Fenced, deployment_lease
from bot.domain.machine import BEFORE_START, IllegalTransition, State
from bot.domain.model import BOT, Deployment
from bot.logs import bind_deployment

log = logging.getLogger(__name__)


def _done(action: str, user: str) -> list[DomainEvent]:
    """The event of a person's pause, resume or cancel."""
    if action == "pause":
        return [Paused("", by=user)]
    if action == "resume":
        return [Resumed(user)]
    return [Cancelled(user)] if action == "cancel" else []


class Runner(Rollbacks):
    """Runs each deployment's plan forward, step by step, and applies people's actions."""

    def running(self, deployment_id: int) -> bool:
        run = self.runs.get(deployment_id)
        return run is not None and run.task is not None and not run.task.done()

    # ------------------------------------------------------------------------------------ actions

    async def act(
        self, deployment_id: int, action: str, user: str, roles: frozenset[str] | None = None
    ) -> Deployment:
        """A person's action on a deployment. Raises IllegalTransition when its state does not allow it, and
        Forbidden when `roles` (given by handlers; None for the bot itself) lack the role it needs."""
        d = await self.store.get(deployment_id)
        if roles is not None:
            await self.access.check(button_role(action, d), d.env, user, roles, deployment=d)
        if action == "abort":
            if d.state not in (State.RUNNING, State.PAUSED):
                raise IllegalTransition(action, d.state)
            await self._stop_task(deployment_id)
            # facts, not words: who stopped it is named by handlers/ui (blocks.outcome_text)
            stopped = {"how": "aborted", "by": user}
            await self.store.save_progress(deployment_id, context={**d.context, "stopped_by": stopped})
            d = await self.store.transition(
                deployment_id, "abort", user, outcome="aborted", events=[Aborted(user)]
            )
            self.run_of(deployment_id).gate.set()
            self.start(deployment_id)
            return d
        if action == "promote":
            return await self.promote(deployment_id, user)
        if action in NUDGES:
            return await self.nudge(d, action, user)
        if action == "cancel":
            self.unschedule(str(deployment_id))
        d = await self.store.transition(deployment_id, action, user, events=_done(action, user))
        if action == "pause":
            self.run_of(deployment_id).gate.clear()
        elif action == "resume":
            self.run_of(deployment_id).gate.set()
        return d

    async def promote(self, deployment_id: int, user: str, full: bool = False) -> Deployment:
        """Carry a paused deployment on past the step that paused it; `full`: skip straight to 100%."""
        d = await self.store.get(deployment_id)
        run = self.runs.get(deployment_id)
        ctx = run.context if run is not None else None
        if d.state not in (State.PAUSED, State.RUNNING) or (d.state == State.RUNNING and not full):
            if d.state == State.RUNNING:
                raise Refused(
                    f"Deployment #{deployment_id} is running, not waiting for anyone; "
                    f"/promote {deployment_id} --full skips to 100%."
                )
            raise IllegalTransition("promote", d.state)
        if d.strategy == "rolling":
            raise Refused(f"Deployment #{deployment_id} is a rolling deploy: there is nothing to promote.")
        data = ctx.data if ctx is not None else dict(d.context)
        if d.state == State.PAUSED:
            data.setdefault("promoted", []).append(d.step_index)
        if full:
            data["full"] = True
        paused = d.state == State.PAUSED
        promoted = [Promoted(user, full)]
        d = await self.store.save_progress(
            deployment_id,
            context=data,
            event=(user, "promote_requested", {"full": full, "step_index": d.step_index}),
            events=() if paused else promoted,
        )
        if paused:
            d = await self.store.transition(
                deployment_id, "promote", user, details={"full": full}, events=promoted
            )
            self.run_of(deployment_id).gate.set()
        return d

    # ------------------------------------------------------------------------------------ running

    def start(self, deployment_id: int) -> None:
        run = self.run_of(deployment_id)
        run.phase = ""  # set by the new task once it knows (replicas follow the store by it)
        task = asyncio.get_running_loop().create_task(
            self._run(deployment_id), name=f"deployment-{deployment_id}"
        )
        run.task = task

        def ended(t: asyncio.Task[None]) -> None:
            if run.task is t and self.runs.get(deployment_id) is run:
                del self.runs[deployment_id]  # the deployment ended (or was handed to a new task)

        task.add_done_callback(ended)

    async def _stop_task(self, deployment_id: int) -> None:
        run = self.runs.get(deployment_id)
        task = run.task if run is not None else None
        if run is not None:
            run.task = None  # the Run (its gate, its context) outlives the stopped task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def resume(self) -> list[Deployment]:
        """After a restart: release stale locks, then carry on every deployment that was mid-plan."""
        for lock in await self.store.release_stale_locks():
            log.warning(
                "released stale lock on %s/%s (deployment #%s)", lock.service, lock.env, lock.deployment_id
            )
        resumed = []
        for d in await self.store.in_flight():
            self.run_of(d.id).resumed = True
            if self.leases is not None:  # recorded by whichever replica takes its lease (_run)
                if not self.running(d.id):  # a request may have started it since this process began
                    self.start(d.id)
                resumed.append(d)
                continue
            if d.state == State.PAUSED:
                self.run_of(d.id).gate.clear()
            await self.store.record(
                d.id,
                BOT,
                "resume_after_restart",
                {"step_index": d.step_index},
                events=[RestartResumed(d.step_index)],
            )
            self.start(d.id)
            resumed.append(d)
        return resumed

    async def wait(self, deployment_id: int) -> None:
        run = self.runs.get(deployment_id)
        if run is not None and run.task is not None:
            await asyncio.gather(run.task, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop running plans where they are; the store has everything needed to resume them. With
        replicas, their leases are handed back: another replica carries them on at once."""
        if self.leases is not None:
            self.leases.closing = True
        tasks = [r.task for r in self.runs.values() if r.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.leases is not None:
            for run in self.runs.values():
                if run.lease is not None:
                    await self.leases.release(run.lease)
                    run.lease = None

    def _context(self, d: Deployment, data: dict[str, Any]) -> StepContext:
        deployment_id = d.id
        run = self.run_of(deployment_id)

        async def report(text: str) -> None:
            run.journal.audit.append((BOT, "detail", {"text": text}))
            run.journal.events.append(Detail(text))

        async def progress(text: str) -> None:
            run.journal.events.append(Progress(text))

        async def checkpoint() -> None:
            await FOREGROUND.quiet()
            await self._flush(deployment_id)  # before any wait: what the step said is out
            await run.gate.wait()

        async def save() -> None:
            await self._save(deployment_id, context=data)

        async def record(action: str, details: dict[str, Any]) -> None:
            run.journal.audit.append((BOT, action, details))

        async def say(event: DomainEvent) -> None:
            run.journal.events.append(event)

        async def known_good() -> tuple[str, ...]:
            return tuple(await history.known_good_versions(self.store, d.service, d.env))

        platform, backups = self.platform, self.backups
        flags = self.flags if d.strategy == "flag" else None
        if self.leases is not None and run.lease is not None:  # every AWS change passes the fence first
            platform = FencedPlatform(platform, self.leases, run.lease)  # type: ignore[assignment]
            if backups is not None:
                backups = FencedBackups(backups, self.leases, run.lease)  # type: ignore[assignment]
            if flags is not None:  # and every flag share a rollout serves
                flags = FencedFlags(flags, self.leases, run.lease)
        return StepContext(
            deployment_id=d.id,
            version=d.version,
            target=self.settings.target(d.service, d.env),
            platform=platform,
            metrics=self.metrics,
            clock=self.clock,
            data=data,
            report=report,
            progress=progress,
            checkpoint=checkpoint,
            save=save,
            record=record,
            http=self.http,
            say=say,
            known_good=known_good,
            resumed=run.resumed,
            flags=flags,
            backups=backups,
        )

    async def _run(self, deployment_id: int) -> None:
        BACKGROUND.set(True)  # this task's AWS calls wait for people's requests to be answered first
        await FOREGROUND.quiet()
        run = self.run_of(deployment_id)
        if self.leases is not None and not await self._take_lease(deployment_id, run):
            return
        try:
            await self._run_leased(deployment_id)
        except Fenced as exc:
            log.warning(
                "deployment #%s: this replica (%s) lost its lease (%s); it stops running it",
                deployment_id,
                self.leases.owner if self.leases else "?",
                exc,
            )
            return
        if self.leases is not None and run.lease is not None:
            run.lease = None
            await self.leases.release(deployment_lease(deployment_id))

    async def _take_lease(self, deployment_id: int, run: Run) -> bool:
        """The deployment's lease for this replica's run: False while another replica runs it. A run
        taken over (or resumed after a restart) says so, behind the lease, before anything else."""
        assert self.leases is not None
        name = deployment_lease(deployment_id)
        before = await self.leases.store.lease(name) if run.resumed else None

        # a renewal that finds the lease lost stops nothing itself: the run's next write or AWS call
        # is refused by the fence (what a replica that was paused would do next, it cannot do)
        if not await self.leases.acquire(name):
            log.info("deployment #%s is run by another replica", deployment_id)
            return False
        run.lease = name
        if run.resumed:
            d = await self.store.get(deployment_id)
            if d.state.terminal:
                return True
            details: dict[str, Any] = {"step_index": d.step_index, "replica": self.leases.owner}
            if before is not None and before["owner"] != self.leases.owner:
                details["taken_over_from"] = before["owner"]
            await self.leases.fenced(
                name,
                "record",
                deployment_id,
                BOT,
                "resume_after_restart",
                details,
                events=[RestartResumed(d.step_index)],
            )
        return True

    async def _run_leased(self, deployment_id: int) -> None:
        try:
            d = await self.store.get(deployment_id)
            bind_deployment(d.id, d.service, d.env)  # every log line of this task names it
            if d.state in BEFORE_START:
                d = await self.transition(d, "start", events=[Started()])
            await self._tell("started", d)  # (the gate may have made the start transition)
            # the context is built from the row as it started (its version is the last amendment's)
            ctx = self._context(d, dict(d.context))
            self.run_of(deployment_id).context = ctx
            run = self.run_of(deployment_id)
            if d.state in (State.RUNNING, State.PAUSED):
                run.phase = "forward"
                d = await self._forward(d, ctx)
            if d.state == State.ROLLING_BACK:
                run.phase = "rollback"
                await self._rollback(d, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Outside any step (a corrupt plan, a store error): never leave it silently "running" with the
            # lock held. Fail it on the record, loudly, and tell people to look at the service.
            log.exception("deployment #%s stopped: %s", deployment_id, exc)
            await self._fail_outside_a_step(deployment_id, exc)

    async def _fail_outside_a_step(self, deployment_id: int, exc: Exception) -> None:
        try:
            d = await self.store.get(deployment_id)
            if not d.state.terminal:
                why = (
                    f"internal error ({type(exc).__name__}) stopped the deployment at step "
                    f"{d.step_index + 1}; check {d.service} in {d.env} by hand — the bot's log has details"
                )
                await self.transition(d, "fail", outcome=why, events=[DeployFailed(why)])
        except Exception:
            log.exception("deployment #%s: could not record the failure either", deployment_id)

    async def _forward(self, d: Deployment, ctx: StepContext) -> Deployment:
        steps = [step_from_dict(s) for s in d.plan]
        announced = False  # the step's start was written with the previous step's end
        try:
            for index in range(d.step_index, len(steps)):
                step = steps[index]
                ctx.index = index
                while True:
                    await ctx.checkpoint()
                    if not announced:
                        audit, said = _started(index, step)
                        d = await self._save(d.id, context=ctx.data, audit=audit, events=said)
                    announced = False
                    try:
                        await self._attempt(d, ctx, step)
                        break
                    except NeedsHuman as ask:
                        await self._ask_a_human(d, ctx, str(ask))
                d, announced = await self._finish_step(d, ctx, steps, index)
            # the world shows it, or it is not done
            await self._attempt(d, ctx, verify_live(d.strategy, ctx.target, d.plan))
            live = live_words(d)
            d = await self.transition(d, "succeed", outcome=live, events=[Succeeded(d.version)])
        except Exception as exc:
            return await self._after_failed_step(d, ctx, exc)
        await self._tell("succeeded", d)
        return d

    async def _attempt(self, d: Deployment, ctx: StepContext, step: Step) -> None:
        """Run a forward step; a platform error (AWS failing past its client's retries) is tried again a
        few times with backoff before it counts as the step's failure. Steps state where the world should
        be, so running one again is harmless."""
        for attempt in range(1, FORWARD_ATTEMPTS + 1):
            try:
                await step.run(ctx)
                return
            except PlatformError as exc:
                if attempt == FORWARD_ATTEMPTS:
                    raise
                wait = backoff(attempt)
                await ctx.progress(f"{exc}; trying again in {wait:.0f}s ({attempt} of {FORWARD_ATTEMPTS})")
                await self._flush(d.id)
                await self._wait_to_retry(d.id, wait)

    async def _finish_step(
        self, d: Deployment, ctx: StepContext, steps: list[Step], index: int
    ) -> tuple[Deployment, bool]:
        """Step `index` is done: record it, and — unless someone paused the run meanwhile — the next
        step's start with it, in one write. True when the next step's start was written."""
        version = previous = None
        if index == 0 and ctx.data.get("previous_version"):
            previous = ctx.data["previous_version"]
            version = ctx.version = d.version or previous
        audit: list[Audit] = [(BOT, "step_finished", {"index": index, "step": steps[index].kind})]
        said: list[DomainEvent] = []
        announce = index + 1 < len(steps) and self.run_of(d.id).gate.is_set()
        if announce:
            audit_next, said = _started(index + 1, steps[index + 1])
            audit += audit_next
        d = await self._save(
            d.id,
            step_index=index + 1,
            context=ctx.data,
            version=version,
            previous_version=previous,
            audit=audit,
            events=said,
        )
        return d, announce

    async def _after_failed_step(self, d: Deployment, ctx: StepContext, exc: Exception) -> Deployment:
        reason = failure_reason(exc, d.id)
        d = await self._save(d.id, context=ctx.data)
        if not ctx.data.get("changed"):
            if ctx.data.get("migrated") or ctx.data.get("tasks"):  # no slot nor traffic, but the schema
                snapshot = ctx.data.get("snapshot")
                said = f"{reason} (no slot or traffic was changed; a migration task ran" + (
                    f": snapshot {snapshot} holds the data from before it)" if snapshot else ")"
                )
                return await self.transition(d, "fail", outcome=said, events=[DeployFailed(said)])
            failed = DeployFailed(reason, nothing_changed=True)
            return await self.transition(
                d, "fail", outcome=f"{reason} (nothing was changed)", events=[failed]
            )
        unhealthy = isinstance(exc, StepFailed) and exc.unhealthy
        return await self.transition(
            d,
            "rollback",
            outcome=reason,
            details={"reason": reason},
            events=[RollingBack(reason, automatic=True, unhealthy_after_switch=unhealthy)],
        )

    async def _ask_a_human(self, d: Deployment, ctx: StepContext, question: str) -> None:
        """Pause (on the record, with the question) and wait until someone promotes, resumes or aborts."""
        current = await self._save(d.id, context=ctx.data)
        if current.state == State.RUNNING:
            self.run_of(d.id).gate.clear()
            await self.store.transition(
                d.id,
                "pause",
                BOT,
                details={"reason": question},
                events=[Paused(question, inconclusive=True)],
            )
        await ctx.checkpoint()
        # promote/resume wrote the context through the store; the running copy is the same dict
        promoted = (await self.store.get(d.id)).context.get("promoted", [])
        ctx.data["promoted"] = sorted(set(ctx.data.get("promoted", [])) | set(promoted))


def live_words(d: Deployment) -> str:
    key = flag_key(d.service)
    if key is not None and d.kind == "flag_change":
        summary = d.plan[-1].get("summary") if d.plan else None
        return f"{key} in {d.env}: {summary or 'changed as approved'}"
    if key is not None:
        return f"{key} is on ({d.version}) for everyone in {d.env}"
    return f"{d.service} {d.version} is live in {d.env}"


def _started(index: int, step: Step) -> tuple[list[Audit], list[DomainEvent]]:
    """The audit record and the event of step `index` starting."""
    what = step.describe()
    audit: Audit = (BOT, "step_started", {"index": index, "step": step.kind, "description": what})
    return [audit], [StepStarted(index, what)]
