"""Rollbacks that never give up while traffic is not whole: a failed rollback step is tried again with
backoff until AWS shows the deployment back where it was, or a person helps (Retry now, All traffic to
stable). The first failure raises a critical alert (RollbackStuck); the lock stays held throughout."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.app.plans import Step, StepContext, StepFailed, rollback_plan, verify_rolled_back
from bot.app.plans.reads import image_tag
from bot.app.ports import PlatformError
from bot.app.run import RunBase
from bot.domain.errors import Refused
from bot.domain.events import (
    Detail,
    DomainEvent,
    Progress,
    RollbackRetried,
    RollbackStuck,
    RolledBack,
    StepStarted,
    TrafficForced,
)
from bot.domain.machine import State
from bot.domain.model import BOT, Deployment

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 2.0  # a failed rollback step is tried again after 2 s, 4 s, 8 s ... (clock time)
RETRY_CAP_SECONDS = 60.0  # ... at most a minute apart, for as long as it takes
FORWARD_ATTEMPTS = 5  # a forward step failing on a platform error is tried this often (2+4+8+16 s apart)
NUDGES = ("retry_rollback", "all_to_stable")  # a person's help with a stuck rollback (not transitions)


def backoff(attempt: int) -> float:
    """Seconds before try `attempt + 1` after `attempt` failed tries."""
    return float(min(RETRY_CAP_SECONDS, RETRY_FIRST_SECONDS * 2 ** max(0, attempt - 1)))


class Rollbacks(RunBase):
    async def nudge(self, d: Deployment, action: str, user: str) -> Deployment:
        """A person's help with a rollback that keeps failing: try again now (`retry_rollback`), or first
        send all traffic to the stable slot in one change (`all_to_stable`) and carry on from there."""
        if d.state != State.ROLLING_BACK:
            raise Refused(
                f"Deployment #{d.id} is {d.state.word}, not rolling back: there is nothing to retry."
            )
        run = self.runs.get(d.id)
        data = run.context.data if run is not None and run.context is not None else dict(d.context)
        if action == "retry_rollback":
            d = await self.store.save_progress(
                d.id, audit=[(user, "retry_rollback", {})], events=[RollbackRetried(user)]
            )
        else:
            d = await self._all_to_stable(d, data, user)
        self.run_of(d.id).wake.set()
        return d

    async def _all_to_stable(self, d: Deployment, data: dict[str, Any], user: str) -> Deployment:
        stable, new = data.get("stable_slot"), data.get("slot")
        if not stable or not new:
            raise Refused(
                f"Deployment #{d.id} is a {d.strategy} deploy of one slot: its traffic has nowhere else to go."
            )
        target = self.settings.target(d.service, d.env)
        try:
            await self.platform.set_weights(target, {stable: 100, new: 0})
        except PlatformError as exc:
            await self.store.record(d.id, user, "all_to_stable_failed", {"error": str(exc)})
            raise Refused(
                f"AWS did not move the traffic of #{d.id} ({exc}); nothing changed. The rollback keeps "
                "trying; press again to retry the move."
            ) from None
        data["weight"] = 0
        now = await self.platform.running(target, stable)
        forced = TrafficForced(
            user, stable, image_tag(now.image) if now.image else "nothing", now.running, now.desired
        )
        details = {"slot": stable, "running": now.running, "desired": now.desired}
        return await self.store.save_progress(
            d.id, context=data, audit=[(user, "all_to_stable", details)], events=[forced]
        )

    async def _rollback(self, d: Deployment, ctx: StepContext) -> Deployment:
        """Undo a failed deployment, and never give up while the traffic is not whole on the stable
        side: after a failed step the plan is tried again from its first step, with backoff (each try bounded by the step's own timeouts and
        the AWS client's), for as long as it takes or until a person helps (`nudge`). The first failure
        raises a critical alert; the lock stays held. It ends only when AWS shows it rolled back."""
        why = d.outcome or "rollback requested"
        if not ctx.data.get("changed"):
            return await self.transition(
                d,
                "finish_rollback",
                outcome=f"{why}; nothing had changed yet",
                events=[RolledBack(why, changed=False)],
            )
        steps = [
            *rollback_plan(d.strategy, ctx.target, d.plan),
            verify_rolled_back(d.strategy, ctx.target, d.plan),
        ]
        while True:
            try:
                await self._rollback_steps(d, ctx, steps)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                step = steps[min(int(ctx.data.get("rollback_index", 0)), len(steps) - 1)]
                # the next try runs every step again (each states where the world should be): what an
                # earlier step did may have been undone meanwhile (traffic moved by hand, a slot scaled)
                ctx.data["rollback_index"] = 0
                try:
                    await self._rollback_failed(d, ctx, step, failure_reason(exc, d.id), why)
                except asyncio.CancelledError:
                    raise
                except Exception:  # not even the record of it (the store?): keep trying all the same
                    log.exception("deployment #%s: could not record a failed rollback try", d.id)
                    await self._wait_to_retry(d.id, RETRY_CAP_SECONDS)
        attempts = int(ctx.data.pop("rollback_attempts", 0))
        said: list[DomainEvent] = [RollbackRetried(attempts=attempts)] if ctx.data.pop("stuck", None) else []
        await self._save(d.id, context=ctx.data, events=said)
        back_to = ctx.data.get("previous_version")
        return await self.transition(
            d,
            "finish_rollback",
            outcome=f"{why}; back on {back_to or 'the previous version'}",
            events=[RolledBack(why, back_on=back_to)],
        )

    async def _rollback_steps(self, d: Deployment, ctx: StepContext, steps: list[Step]) -> None:
        for index in range(int(ctx.data.get("rollback_index", 0)), len(steps)):
            step = steps[index]
            await self._save(
                d.id,
                context=ctx.data,
                audit=[(BOT, "rollback_step_started", {"index": index, "step": step.kind})],
                events=[StepStarted(index, step.describe(), rollback=True)],
            )
            await step.run(ctx)
            ctx.data["rollback_index"] = index + 1
            await self._save(
                d.id,
                context=ctx.data,
                audit=[(BOT, "rollback_step_finished", {"index": index, "step": step.kind})],
            )

    async def _rollback_failed(
        self, d: Deployment, ctx: StepContext, step: Step, reason: str, why: str
    ) -> None:
        """Record a failed try; the first one (of this rollback, across restarts) is a critical alert,
        a new reason a thread line, the same one only the live line. Then wait to try again."""
        attempt = int(ctx.data.get("rollback_attempts", 0)) + 1
        wait = backoff(attempt)
        ctx.data["rollback_attempts"] = attempt
        before = ctx.data.get("stuck")
        ctx.data["stuck"] = reason
        said: list[DomainEvent]
        if before is None:
            said = [
                RollbackStuck(reason, after=why, step=step.describe(), attempt=attempt, retry_seconds=wait)
            ]
        elif before != reason:
            said = [Detail(f"Rollback still failing (try {attempt}): {reason}")]
        else:
            said = []
        said.append(Progress(f"Rollback try {attempt} failed: {reason}; next try in {wait:.0f}s"))
        details = {"attempt": attempt, "step": step.kind, "reason": reason, "retry_seconds": wait}
        await self._save(d.id, context=ctx.data, audit=[(BOT, "rollback_step_failed", details)], events=said)
        await self._wait_to_retry(d.id, wait)


def failure_reason(exc: Exception, deployment_id: int) -> str:
    """Why a step failed, in words for people. Anything but a StepFailed or PlatformError is a bug: logged."""
    if isinstance(exc, StepFailed | PlatformError):
        return str(exc)
    log.error("deployment #%s: unexpected error in a step", deployment_id, exc_info=exc)
    return f"internal error ({type(exc).__name__}); the bot's log has the details"
