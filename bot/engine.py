"""The engine runs deployments as asyncio tasks: it creates them (taking the lock atomically in the store),
runs their plan step by step persisting the step index before and after each step, rolls back when a
step fails, applies people's actions (pause, resume, abort, cancel), and resumes in-flight deployments
after a restart. It emits Notices; it knows nothing of Slack."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot import commands as cmds
from bot.clock import Clock
from bot.cloud import Cloud, CloudError
from bot.machine import BEFORE_START, IllegalTransition, State
from bot.settings import Settings
from bot.store import AsyncStore, Deployment, LockInfo
from bot.strategies import NeedsHuman, Step, StepContext, StepFailed, plan, rollback_plan, step_from_dict

log = logging.getLogger(__name__)
BOT = "deploybot"


@dataclass(frozen=True)
class Notice:
    """Something people should see. kind: "update" (the deployment's message should show its new state),
    "progress" (the live line on the message), "detail" (a line for its thread)."""

    deployment: Deployment
    kind: str
    text: str = ""
    level: str = "info"  # info | warning | critical


class Refused(Exception):
    """A request that cannot be carried out, with a message saying why and what to do instead."""


@dataclass(frozen=True)
class Planned:
    """A dry run's answer: what would happen, touching nothing."""

    service: str
    env: str
    version: str | None
    strategy: str
    steps: list[Step]

    @property
    def eta_seconds(self) -> float:
        return sum(s.min_seconds() for s in self.steps)


Listener = Callable[[Notice], Awaitable[None]]


class Engine:
    def __init__(self, settings: Settings, store: AsyncStore, cloud: Cloud, clock: Clock):
        self.settings, self.store, self.cloud, self.clock = settings, store, cloud, clock
        self._listeners: list[Listener] = []
        self._tasks: dict[int, asyncio.Task] = {}
        self._gates: dict[int, asyncio.Event] = {}  # set = may run; cleared while paused
        self._contexts: dict[int, StepContext] = {}  # the running plans' context, for promote

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def emit(self, notice: Notice) -> None:
        for listener in self._listeners:
            try:
                await listener(notice)
            except Exception:  # a broken notifier must never stop a deployment
                log.exception("notice listener failed for deployment #%s", notice.deployment.id)

    # ----------------------------------------------------------------------------------- requests

    def _plan(
        self, service: str, env: str, strategy: str | None, gradual: bool = False
    ) -> tuple[str, list[Step]]:
        """The strategy (the environment's when none is asked for) and its steps; Refused if unknown."""
        target = self.settings.target(service, env)
        strategy = strategy or target.strategy
        try:
            return strategy, plan(strategy, target, gradual=gradual)
        except StepFailed as exc:
            raise Refused(f"Cannot deploy {service} to {env}: {exc}.") from None

    @staticmethod
    def _rollback_strategy(configured: str, gradual: bool) -> str:
        """Rollbacks go back in one switch (blue-green, using the warm slot when there is one), or, with
        --gradual on a two-slot service, step by step with analysis (canary weights)."""
        if configured == "rolling":
            return "rolling"
        return "canary" if gradual else "blue-green"

    def dry_run(self, command: cmds.Deploy) -> Planned:
        strategy, steps = self._plan(command.service, command.env, command.strategy)
        return Planned(command.service, command.env, command.version, strategy, steps)

    async def request(
        self, command: cmds.Deploy | cmds.Rollback | cmds.Promote, user: str, request_key: str | None = None
    ) -> Deployment | LockInfo:
        """Create the deployment (or answer who holds the lock) and start it in the background."""
        gradual = False
        if isinstance(command, cmds.Deploy):
            service, env, version, kind = command.service, command.env, command.version, "deploy"
            reason, strategy = command.reason, command.strategy
        elif isinstance(command, cmds.Rollback):
            service, env, kind, reason = command.service, command.env, "rollback", command.reason
            version = command.version or await self._known_good(service, env)
            gradual = command.gradual
            strategy = self._rollback_strategy(self.settings.target(service, env).strategy, gradual)
        else:
            service, env, kind, reason, strategy = command.service, command.target_env, "promote", None, None
            source = await self.store.last_succeeded(service, command.source_env)
            if source is None:
                raise Refused(
                    f"Cannot promote {service} from {command.source_env}: no deployment of {service} "
                    f"has succeeded in {command.source_env} yet."
                )
            version = source.version
            reason = f"promoted from {command.source_env} (deployment #{source.id})"
        strategy, steps = self._plan(service, env, strategy, gradual)
        target = self.settings.target(service, env)
        result = await self.store.create_deployment(
            service=service,
            env=env,
            version=version,
            strategy=strategy,
            kind=kind,
            requested_by=user,
            reason=reason,
            plan=[s.to_dict() for s in steps],
            channel=target.env.channel,
            request_key=request_key,
        )
        if isinstance(result, LockInfo) or result.state != State.REQUESTED or result.id in self._tasks:
            return result  # locked, or the same request seen again
        await self.emit(Notice(result, "update"))
        self.start(result.id)
        return result

    async def _known_good(self, service: str, env: str) -> str:
        """The version before the current one that last succeeded here."""
        current = await self.store.last_succeeded(service, env)
        history = await self.store.history(service, env, limit=200)
        for d in history:
            if d.state == State.SUCCEEDED and current is not None and d.version != current.version:
                return d.version
        if current is not None and current.previous_version and current.previous_version != current.version:
            return current.previous_version
        raise Refused(
            f"No known-good version of {service} in {env} to roll back to. "
            f"Name one: /rollback {service} in {env} to VERSION"
        )

    # ------------------------------------------------------------------------------------ actions

    async def act(self, deployment_id: int, action: str, user: str) -> Deployment:
        """A person's action on a deployment. Raises IllegalTransition when its state does not allow it."""
        d = await self.store.get(deployment_id)
        if action == "abort":
            if d.state not in (State.RUNNING, State.PAUSED):
                raise IllegalTransition(action, d.state)
            await self._stop_task(deployment_id)
            d = await self.store.transition(deployment_id, "abort", user, outcome=f"aborted by {user}")
            self._gate(deployment_id).set()
            await self.emit(Notice(d, "update", f"Aborted by {user}; rolling back", "warning"))
            self.start(deployment_id)
            return d
        if action == "promote":
            return await self.promote(deployment_id, user)
        d = await self.store.transition(deployment_id, action, user)
        if action == "pause":
            self._gate(deployment_id).clear()
        elif action == "resume":
            self._gate(deployment_id).set()
        await self.emit(Notice(d, "update", f"{action.title()}d by {user}"))
        return d

    async def promote(self, deployment_id: int, user: str, full: bool = False) -> Deployment:
        """Carry a paused deployment on past the step that paused it; `full`: skip straight to 100%."""
        d = await self.store.get(deployment_id)
        ctx = self._contexts.get(deployment_id)
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
        await self.store.save_progress(
            deployment_id,
            context=data,
            event=(user, "promote_requested", {"full": full, "step_index": d.step_index}),
        )
        if d.state == State.PAUSED:
            d = await self.store.transition(deployment_id, "promote", user, details={"full": full})
            self._gate(deployment_id).set()
        await self.emit(Notice(d, "update", f"Promoted by <@{user}>" + (" to 100%" if full else "")))
        return d

    # ------------------------------------------------------------------------------------ running

    def start(self, deployment_id: int) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(deployment_id), name=f"deployment-{deployment_id}"
        )
        self._tasks[deployment_id] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(deployment_id, None) if self._tasks.get(deployment_id) is t else None
        )

    async def _stop_task(self, deployment_id: int) -> None:
        task = self._tasks.pop(deployment_id, None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _gate(self, deployment_id: int) -> asyncio.Event:
        if deployment_id not in self._gates:
            self._gates[deployment_id] = asyncio.Event()
            self._gates[deployment_id].set()
        return self._gates[deployment_id]

    async def resume_in_flight(self) -> list[Deployment]:
        """After a restart: release stale locks, then carry on every deployment that was mid-plan."""
        for lock in await self.store.release_stale_locks():
            log.warning(
                "released stale lock on %s/%s (deployment #%s)", lock.service, lock.env, lock.deployment_id
            )
        resumed = []
        for d in await self.store.in_flight():
            if d.state == State.PAUSED:
                self._gate(d.id).clear()
            await self.store.record(d.id, BOT, "resume_after_restart", {"step_index": d.step_index})
            await self.emit(Notice(d, "detail", f"Bot restarted; carrying on from step {d.step_index + 1}."))
            self.start(d.id)
            resumed.append(d)
        return resumed

    async def wait(self, deployment_id: int) -> None:
        task = self._tasks.get(deployment_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop running plans where they are; the store has everything needed to resume them."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _context(self, d: Deployment, data: dict[str, Any]) -> StepContext:
        deployment_id = d.id

        async def report(text: str) -> None:
            await self.store.record(deployment_id, BOT, "detail", {"text": text})
            await self.emit(Notice(await self.store.get(deployment_id), "detail", text))

        async def progress(text: str) -> None:
            await self.emit(Notice(await self.store.get(deployment_id), "progress", text))

        async def checkpoint() -> None:
            await self._gate(deployment_id).wait()

        async def save() -> None:
            await self.store.save_progress(deployment_id, context=data)

        async def record(action: str, details: dict) -> None:
            await self.store.record(deployment_id, BOT, action, details)

        target = self.settings.target(d.service, d.env)
        return StepContext(
            deployment_id=d.id,
            version=d.version,
            target=target,
            cloud=self.cloud,
            clock=self.clock,
            data=data,
            report=report,
            progress=progress,
            checkpoint=checkpoint,
            save=save,
            record=record,
        )

    async def _transition(
        self,
        d: Deployment,
        action: str,
        *,
        outcome: str | None = None,
        details: dict | None = None,
        level: str = "info",
        text: str = "",
    ) -> Deployment:
        d = await self.store.transition(d.id, action, BOT, details=details, outcome=outcome)
        await self.emit(Notice(d, "update", text or outcome or "", level))
        return d

    async def _run(self, deployment_id: int) -> None:
        d = await self.store.get(deployment_id)
        ctx = self._context(d, dict(d.context))
        self._contexts[deployment_id] = ctx
        try:
            if d.state in BEFORE_START:
                d = await self._transition(d, "start")
            if d.state in (State.RUNNING, State.PAUSED):
                d = await self._forward(d, ctx)
            if d.state == State.ROLLING_BACK:
                await self._rollback(d, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Outside any step (a corrupt plan, a store error): never leave it silently "running" with the
            # lock held. Fail it on the record, loudly, and tell people to look at the service.
            log.exception("deployment #%s stopped: %s", deployment_id, exc)
            try:
                d = await self.store.get(deployment_id)
                if not d.state.terminal:
                    await self._transition(
                        d,
                        "fail",
                        level="critical",
                        outcome=(
                            f"internal error ({type(exc).__name__}) stopped the deployment at step "
                            f"{d.step_index + 1}; check {d.service} in {d.env} by hand — the bot's log has details"
                        ),
                    )
            except Exception:
                log.exception("deployment #%s: could not record the failure either", deployment_id)

    async def _forward(self, d: Deployment, ctx: StepContext) -> Deployment:
        steps = [step_from_dict(s) for s in d.plan]
        try:
            for index in range(d.step_index, len(steps)):
                step = steps[index]
                ctx.index = index
                while True:
                    await ctx.checkpoint()
                    await self.store.save_progress(
                        d.id,
                        context=ctx.data,
                        event=(
                            BOT,
                            "step_started",
                            {"index": index, "step": step.kind, "description": step.describe()},
                        ),
                    )
                    await self.emit(Notice(await self.store.get(d.id), "progress", step.describe()))
                    try:
                        await step.run(ctx)
                        break
                    except NeedsHuman as ask:
                        await self._ask_a_human(d, ctx, str(ask))
                if index == 0 and ctx.data.get("previous_version"):
                    version = d.version or ctx.data["previous_version"]
                    await self.store.save_progress(
                        d.id, version=version, previous_version=ctx.data["previous_version"]
                    )
                    ctx.version = version
                d = await self.store.save_progress(
                    d.id,
                    step_index=index + 1,
                    context=ctx.data,
                    event=(BOT, "step_finished", {"index": index, "step": step.kind}),
                )
            return await self._transition(d, "succeed", outcome=f"{d.service} {d.version} is live in {d.env}")
        except Exception as exc:
            reason = failure_reason(exc, d.id)
            await self.store.save_progress(d.id, context=ctx.data)
            d = await self.store.get(d.id)
            if not ctx.data.get("changed"):
                return await self._transition(
                    d, "fail", outcome=f"{reason} (nothing was changed)", level="critical"
                )
            return await self._transition(
                d,
                "rollback",
                outcome=reason,
                details={"reason": reason},
                level="critical",
                text=f"Rolling back: {reason}",
            )

    async def _ask_a_human(self, d: Deployment, ctx: StepContext, question: str) -> None:
        """Pause (on the record, with the question) and wait until someone promotes, resumes or aborts."""
        await self.store.save_progress(d.id, context=ctx.data)
        current = await self.store.get(d.id)
        if current.state == State.RUNNING:
            self._gate(d.id).clear()
            paused = await self.store.transition(d.id, "pause", BOT, details={"reason": question})
            await self.emit(Notice(paused, "update", f":raised_hand: Paused: {question}", "warning"))
        await ctx.checkpoint()
        # promote/resume wrote the context through the store; the running copy is the same dict
        promoted = (await self.store.get(d.id)).context.get("promoted", [])
        ctx.data["promoted"] = sorted(set(ctx.data.get("promoted", [])) | set(promoted))

    async def _rollback(self, d: Deployment, ctx: StepContext) -> Deployment:
        why = d.outcome or "rollback requested"
        if not ctx.data.get("changed"):
            return await self._transition(d, "finish_rollback", outcome=f"{why}; nothing had changed yet")
        steps = rollback_plan(d.strategy, ctx.target)
        try:
            for index in range(int(ctx.data.get("rollback_index", 0)), len(steps)):
                step = steps[index]
                await self.store.save_progress(
                    d.id,
                    context=ctx.data,
                    event=(BOT, "rollback_step_started", {"index": index, "step": step.kind}),
                )
                await self.emit(
                    Notice(await self.store.get(d.id), "progress", "Rollback: " + step.describe())
                )
                await step.run(ctx)
                ctx.data["rollback_index"] = index + 1
                await self.store.save_progress(
                    d.id,
                    context=ctx.data,
                    event=(BOT, "rollback_step_finished", {"index": index, "step": step.kind}),
                )
        except Exception as exc:
            return await self._transition(
                d,
                "fail",
                outcome=f"rollback failed: {failure_reason(exc, d.id)} (after: {why})",
                level="critical",
            )
        back_to = ctx.data.get("previous_version", "the previous version")
        return await self._transition(d, "finish_rollback", outcome=f"{why}; back on {back_to}", level="info")


def failure_reason(exc: Exception, deployment_id: int) -> str:
    """Why a step failed, in words for people. Anything but a StepFailed or CloudError is a bug: logged."""
    if isinstance(exc, StepFailed | CloudError):
        return str(exc)
    log.error("deployment #%s: unexpected error in a step", deployment_id, exc_info=exc)
    return f"internal error ({type(exc).__name__}); the bot's log has the details"
