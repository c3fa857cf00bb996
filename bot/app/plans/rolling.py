"""Rolling: update the live slot in place to a new revision, wait for the platform to roll it out and for
its targets to be healthy, bake, succeed. Rollback puts the previous revision back.

Context keys written here: slot, previous_task_definition, previous_version, task_definition, changed."""

from __future__ import annotations

from dataclasses import dataclass

from bot.app.plans import migrations
from bot.app.plans.reads import image_tag, unhealthy_targets
from bot.app.plans.steps import Step, StepContext, StepFailed, duration
from bot.app.plans.truth import AllTrafficTo, repair_split
from bot.config.model import Target

__all__ = ["image_tag", "plan", "rollback_plan", "unhealthy_targets"]


@dataclass
class CaptureCurrent(Step):
    """Remember what runs now (slot, task definition, version): the rollback target."""

    kind = "capture_current"

    def describe(self) -> str:
        return "Record the running version (the rollback target)"

    async def run(self, ctx: StepContext) -> None:
        if "previous_task_definition" in ctx.data:
            return
        # a two-slot service updates the slot with all the traffic: split traffic is repaired first
        slot = await repair_split(ctx) if len(ctx.target.slots) > 1 else None
        now = await ctx.platform.running(ctx.target, slot)
        if now.image is None:
            raise StepFailed(
                f"task definition {now.revision} has no container {ctx.target.service.container!r}"
            )
        ctx.data.update(
            slot=now.slot,
            previous_task_definition=now.revision,
            previous_version=image_tag(now.image),
            desired_count=now.desired,
        )
        await ctx.report(
            f"Running now: {image_tag(now.image)} ({_short(now.revision)}) on "
            f"{ctx.target.ecs_service(now.slot)}, {now.desired} tasks"
        )


@dataclass
class RegisterRevision(Step):
    """A task definition revision like the running one, with the new image, marked with the deployment.

    It registers one revision, not two: a try after one whose answer was lost (`registering` set, no
    `task_definition`) or the first run after a restart (`ctx.resumed`: the call may have landed just
    before the crash) first asks the platform for the revision made for this deployment. A normal run
    makes no lookup and no extra store write."""

    kind = "register_revision"

    def describe(self) -> str:
        return "Register a task definition revision with the new image"

    async def run(self, ctx: StepContext) -> None:
        if "task_definition" in ctx.data:
            return
        version = ctx.version or ctx.data["previous_version"]
        image = ctx.target.image(version)
        base, key = ctx.data["previous_task_definition"], str(ctx.deployment_id)
        arn = None
        if ctx.data.get("registering") or ctx.resumed:
            arn = await ctx.platform.find_revision(ctx.target, base, image, key)
        if arn is None:
            ctx.data["registering"] = True  # a retry of this call must look for what it made
            arn = await ctx.platform.register_revision(ctx.target, base, image, key=key)
            line = f"Registered {_short(arn)} with image {image}"
        else:
            line = f"Found {_short(arn)} with image {image}, registered for this deployment before a restart"
        ctx.data["task_definition"] = arn
        ctx.data.pop("registering", None)
        await ctx.report(line)


@dataclass
class UpdateService(Step):
    """The slot's ECS service should run the task definition named by context key `use`."""

    use: str = "task_definition"
    kind = "update_service"

    def describe(self) -> str:
        what = "the previous" if self.use == "previous_task_definition" else "the new"
        return f"Update the ECS service to {what} revision"

    async def run(self, ctx: StepContext) -> None:
        arn = ctx.data[self.use]
        ctx.data["changed"] = True
        await ctx.save()  # before the call: a crash right after it must still know to roll back
        await ctx.platform.update_slot(ctx.target, ctx.data["slot"], revision=arn)
        await ctx.report(f"Updated {ctx.target.ecs_service(ctx.data['slot'])} to {_short(arn)}")


@dataclass
class WaitForRollout(Step):
    """ECS's newest deployment of the slot runs `use` and has completed."""

    use: str = "task_definition"
    timeout_seconds: float = 900.0
    slot_key: str = "slot"
    kind = "wait_for_rollout"

    def describe(self) -> str:
        return f"Wait for ECS to roll out (at most {duration(self.timeout_seconds)})"

    async def run(self, ctx: StepContext) -> None:
        arn, slot = ctx.data[self.use], ctx.data[self.slot_key]
        deadline = ctx.clock.now() + self.timeout_seconds
        last = None
        while True:
            r = await ctx.platform.rollout(ctx.target, slot)
            if r.revision == arn:
                if r.state == "COMPLETED":
                    await ctx.report(f"Rollout complete: {r.running}/{r.desired} tasks on {_short(arn)}")
                    return
                if r.state == "FAILED":
                    targets = await unhealthy_targets(ctx, slot)
                    raise StepFailed(
                        f"ECS rollout failed: {r.reason or 'no reason given'}"
                        + (f"; {targets}" if targets else ""),
                        unhealthy=targets is not None,
                    )
                line = f"Rolling out {_short(arn)}: {r.running}/{r.desired} tasks running"
            else:
                line = f"Waiting for ECS to start the rollout of {_short(arn)}"
            if line != last:
                await ctx.progress(line)
                last = line
            if ctx.clock.now() >= deadline:
                raise StepFailed(f"rollout did not complete within {duration(self.timeout_seconds)} ({line})")
            await ctx.poll()


@dataclass
class WaitForHealthyTargets(Step):
    """Every target of the slot's target group is healthy, and there are as many as desired tasks."""

    timeout_seconds: float = 300.0
    slot_key: str = "slot"
    kind = "wait_for_healthy_targets"

    def describe(self) -> str:
        return f"Wait for healthy load balancer targets (at most {duration(self.timeout_seconds)})"

    async def run(self, ctx: StepContext) -> None:
        slot = ctx.data[self.slot_key]
        deadline = ctx.clock.now() + self.timeout_seconds
        while True:
            problem = await unhealthy_targets(ctx, slot)
            if problem is None:
                await ctx.report(f"Targets healthy in {ctx.target.target_group(slot)}")
                return
            if ctx.clock.now() >= deadline:
                raise StepFailed(problem, unhealthy=True)
            await ctx.progress(problem)
            await ctx.poll()


@dataclass
class Bake(Step):
    """Watch the new version for a while: the rollout must stay complete and the targets healthy."""

    duration: float = 60.0
    kind = "bake"

    def describe(self) -> str:
        return f"Bake for {duration(self.duration)}, watching rollout and target health"

    def min_seconds(self) -> float:
        return self.duration

    async def run(self, ctx: StepContext) -> None:
        slot = ctx.data["slot"]
        end = ctx.clock.now() + self.duration
        while (left := end - ctx.clock.now()) > 0:
            await ctx.progress(f"Baking: {duration(left)} left")
            r = await ctx.platform.rollout(ctx.target, slot)
            if r.revision != ctx.data["task_definition"] or r.state == "FAILED":
                raise StepFailed(f"during bake the service left the new revision ({r.state}: {r.reason})")
            problem = await unhealthy_targets(ctx, slot)
            if problem is not None:
                raise StepFailed(f"during bake: {problem}", unhealthy=True)
            await ctx.poll(min(ctx.target.poll_seconds, left))
        await ctx.report(f"Baked {duration(self.duration)}: rollout steady, targets healthy")


def plan(target: Target) -> list[Step]:
    return [
        CaptureCurrent(),
        RegisterRevision(),
        *migrations.forward_steps(target),
        UpdateService("task_definition"),
        WaitForRollout("task_definition", target.rollout_timeout_seconds),
        WaitForHealthyTargets(min(target.rollout_timeout_seconds, 300.0)),
        Bake(target.bake_seconds),
    ]


def rollback_plan(target: Target) -> list[Step]:
    steps: list[Step] = [
        UpdateService("previous_task_definition"),
        WaitForRollout("previous_task_definition", target.rollout_timeout_seconds),
        WaitForHealthyTargets(min(target.rollout_timeout_seconds, 300.0)),
    ]
    if len(target.slots) > 1:
        steps.append(AllTrafficTo("slot"))
    return [*steps, *migrations.back_steps(target)]


def _short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]
