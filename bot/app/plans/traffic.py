"""Blue-green and canary over two slots behind one weighted ALB rule.

The live slot keeps serving; the idle slot gets the new version; weights move traffic (each move is ONE
platform change: on ECS+ALB one ModifyRule call); analysis judges each bake; the old slot stays warm for instant rollback,
then is scaled down after the target group's deregistration delay. Rollback: all traffic back to the stable
slot in one call, then the candidate scaled down.

Context keys written here (besides rolling's): stable_slot, weight, promoted (step indices a person
promoted past), full (skip to 100%), stable_scaled_down."""

from __future__ import annotations

from dataclasses import dataclass

from bot.app.measure import run_analysis
from bot.app.plans import migrations
from bot.app.plans.reads import image_tag
from bot.app.plans.rolling import RegisterRevision, WaitForHealthyTargets, WaitForRollout
from bot.app.plans.steps import NeedsHuman, Step, StepContext, StepFailed, duration, judged
from bot.app.plans.truth import repair_split, split_words
from bot.app.ports import HttpError
from bot.config.model import Target
from bot.config.verification import defers_scale_down
from bot.domain.analysis import Analysis, Measurement
from bot.domain.analysis_events import AnalysisPassed


def other(slot: str, slots: tuple[str, ...]) -> str:
    return next(s for s in slots if s != slot)


@dataclass
class CaptureTraffic(Step):
    """Which slot is live (all the traffic) and what it runs: the stable side and the rollback target."""

    kind = "capture_traffic"

    def describe(self) -> str:
        return "Find the live slot and what it runs (the rollback target)"

    async def run(self, ctx: StepContext) -> None:
        if "stable_slot" in ctx.data:
            return
        if len(ctx.target.slots) != 2:
            raise StepFailed(
                f"{ctx.target.service.name} has one slot; blue-green and canary need two "
                "(ecs_service must use {slot})"
            )
        live = await repair_split(ctx)
        if ctx.data.get("repaired") and not ctx.data.get("repair_judged"):
            await judge_repair(ctx, live)
        now = await ctx.platform.running(ctx.target, live)
        if now.image is None:
            raise StepFailed(
                f"task definition {now.revision} has no container {ctx.target.service.container!r}"
            )
        ctx.data.update(
            stable_slot=now.slot,
            slot=other(now.slot, ctx.target.slots),
            previous_task_definition=now.revision,
            previous_version=image_tag(now.image),
            desired_count=max(1, now.desired),
            weight=0,
        )
        await ctx.report(
            f"Live: {now.slot} runs {image_tag(now.image)} with all the traffic; "
            f"{ctx.data['slot']} gets the new version"
        )


async def judge_repair(ctx: StepContext, slot: str) -> None:
    """Split traffic was just put all on `slot` (the last known-good version): it is analysed at 100% for
    a canary step's bake before anything else moves. A failure stops the deployment there (all traffic
    stays on that slot, nothing else changed); inconclusive carries on, and says so."""

    async def on_measurement(m: Measurement) -> None:
        await ctx.record("measurement", {**m.to_dict(), "repair": True})

    analysis: Analysis = await run_analysis(
        ctx.metrics,
        ctx.target.analysis,
        duration_seconds=ctx.target.step_bake_seconds,
        clock=ctx.clock,
        account=ctx.target.env.aws_role_arn,
        canary=await ctx.platform.metric_scope(ctx.target, slot),
        stable=None,
        label=f"{slot} after the repair",
        on_measurement=on_measurement,
        checkpoint=ctx.checkpoint,
    )
    status = analysis.finish()
    last = next((m for m in reversed(analysis.measurements) if m.reasons), None)
    why = "; ".join(last.reasons) if last else analysis.reason
    if status == "failed":
        raise StepFailed(f"after the repair, {slot} (the last known-good version) fails its analysis: {why}")
    ctx.data["repair_judged"] = True
    await ctx.report(
        f"Analysis of {slot} after the repair "
        + ("passed" if status == "passed" else f"inconclusive ({why}); carrying on")
    )


@dataclass
class UseRevision(RegisterRevision):
    """The idle slot's task definition if it already runs the wanted image (a warm slot), else a new one."""

    kind = "use_revision"

    async def run(self, ctx: StepContext) -> None:
        if "task_definition" in ctx.data:
            return
        version = ctx.version or ctx.data["previous_version"]
        idle = await ctx.platform.running(ctx.target, ctx.data["slot"])
        if idle.image is not None and idle.image == ctx.target.image(version):
            ctx.data["task_definition"] = idle.revision
            await ctx.report(
                f"{ctx.data['slot']} already has {idle.image}"
                + (f" ({idle.running} tasks warm)" if idle.running else "")
            )
            return
        await super().run(ctx)


@dataclass
class PrepareSlot(Step):
    """The idle slot runs the new revision with as many tasks as the live one."""

    kind = "prepare_slot"

    def describe(self) -> str:
        return "Start the new version in the idle slot (no traffic yet)"

    async def run(self, ctx: StepContext) -> None:
        ctx.data["changed"] = True
        await ctx.save()
        await ctx.platform.update_slot(
            ctx.target,
            ctx.data["slot"],
            revision=ctx.data["task_definition"],
            count=int(ctx.data["desired_count"]),
        )
        await ctx.report(
            f"Starting {ctx.data['desired_count']} tasks of {ctx.version} in "
            f"{ctx.target.ecs_service(ctx.data['slot'])}"
        )


@dataclass
class SmokeCheck(Step):
    """Configured HTTP checks against the new slot answer as expected, retried until their deadline."""

    kind = "smoke_check"

    def describe(self) -> str:
        return "Smoke-check the new slot over HTTP"

    async def run(self, ctx: StepContext) -> None:
        for check in ctx.target.smoke_checks:
            url, expect_body = check.resolve(
                ctx.target.service.name,
                ctx.target.env.name,
                ctx.data["slot"],
                ctx.version or ctx.data["previous_version"],
            )
            deadline = ctx.clock.now() + check.timeout_seconds
            last = "no answer"
            if ctx.http is None:
                raise StepFailed("smoke checks are configured but this bot has no HTTP client")
            while True:
                try:
                    status, body = await ctx.http.get(url)
                    if status == check.expect_status and (expect_body or "") in body:
                        await ctx.report(f"Smoke check passed: GET {url} → {status}")
                        break
                    last = f"HTTP {status}, body {body[:120]!r}"
                except HttpError as exc:
                    last = str(exc)
                if ctx.clock.now() >= deadline:
                    want = f"HTTP {check.expect_status}" + (f" with {expect_body!r}" if expect_body else "")
                    raise StepFailed(f"smoke check failed: GET {url} wanted {want}, got {last}")
                await ctx.poll()


@dataclass
class SetWeights(Step):
    """`candidate`% of the traffic to the new slot, the rest to the stable one: one ALB call."""

    candidate: int = 100
    kind = "set_weights"

    def describe(self) -> str:
        return f"Shift traffic: {self.candidate}% to the new version"

    async def run(self, ctx: StepContext) -> None:
        if ctx.data.get("full") and 0 < self.candidate < 100:
            return  # promoted to full: only the 100% step moves traffic
        new, stable = ctx.data["slot"], ctx.data["stable_slot"]
        want = {new: self.candidate, stable: 100 - self.candidate}
        if ctx.resumed and await ctx.platform.weights(ctx.target) == want:
            return  # a run taken over (a crash, another replica) after this change was made: not again
        await ctx.platform.set_weights(ctx.target, want)
        ctx.data["weight"] = self.candidate
        await ctx.report(f"Traffic: {new} {self.candidate}% / {stable} {100 - self.candidate}%")


@dataclass
class Analyze(Step):
    """Bake with metric analysis: the new slot's error rate and latency against thresholds and the stable
    slot's baseline. Failed -> rollback. Inconclusive (no data, too little traffic) -> ask a person."""

    seconds: float = 60.0
    label: str = ""
    final: bool = False  # the last canary bake before 100% (the sequential judge passes it on evidence only)
    kind = "analyze"

    def describe(self) -> str:
        return f"Analyse {self.label or 'the new version'} for {duration(self.seconds)}"

    def min_seconds(self) -> float:
        return self.seconds

    async def run(self, ctx: StepContext) -> None:
        if ctx.index in ctx.data.get("promoted", []):
            await ctx.report(f"Analysis at {self.label} skipped: promoted by a person")
            return
        if ctx.data.get("full") and ctx.data.get("weight", 0) < 100:
            return
        new, stable = ctx.data["slot"], ctx.data["stable_slot"]
        canary = await ctx.platform.metric_scope(ctx.target, new)
        baseline = (
            await ctx.platform.metric_scope(ctx.target, stable) if ctx.data.get("weight", 0) < 100 else None
        )

        config = ctx.target.analysis
        # what its chart draws besides the numbers: the weight it was taken at, the thresholds it met
        drawn = {
            "weight": ctx.data.get("weight", 0),
            "thresholds": {"max_error_rate": config.max_error_rate, "max_latency_ms": config.max_latency_ms},
        }

        async def on_measurement(m: Measurement) -> None:
            await ctx.record("measurement", {**m.to_dict(), **drawn})
            await ctx.report(
                f"{'✓' if m.verdict == 'pass' else '✗' if m.verdict == 'fail' else '?'} {m.line()}"
            )

        # The sequential judge reads every minute since the first canary bake: evidence carries on.
        since = ctx.data.setdefault("judge_since", ctx.clock.now()) if baseline is not None else None
        analysis: Analysis = await run_analysis(
            ctx.metrics,
            ctx.target.analysis,
            duration_seconds=self.seconds,
            clock=ctx.clock,
            account=ctx.target.env.aws_role_arn,
            canary=canary,
            stable=baseline,
            label=self.label,
            on_measurement=on_measurement,
            checkpoint=ctx.checkpoint,
            since=since,
            final=self.final,
        )
        passed = judged(analysis, "analysis", self.label, "Abort to roll back")
        await ctx.report(f"Analysis at {self.label} passed: {passed}")
        await ctx.say(AnalysisPassed(ctx.index, self.label))


@dataclass
class ManualPause(Step):
    """Wait for a person: /promote ID or the Promote button."""

    label: str = ""
    kind = "manual_pause"

    def describe(self) -> str:
        return f"Pause for a person to promote ({self.label})"

    async def run(self, ctx: StepContext) -> None:
        if ctx.index in ctx.data.get("promoted", []) or ctx.data.get("full"):
            return
        raise NeedsHuman(
            f"paused at {self.label} as planned: /promote {ctx.deployment_id} or the Promote button "
            "carries on"
        )


@dataclass
class ScaleDown(Step):
    """After `warm_seconds` (instant rollback stays possible) and the target group's deregistration delay,
    the slot named by `slot_key` runs no tasks."""

    slot_key: str = "stable_slot"
    warm_seconds: float = 0.0
    kind = "scale_down"

    def describe(self) -> str:
        which = "old" if self.slot_key == "stable_slot" else "new"
        warm = f"keep it warm {duration(self.warm_seconds)}, then " if self.warm_seconds else ""
        return f"Scale down the {which} slot ({warm}after the deregistration delay)"

    def min_seconds(self) -> float:
        return self.warm_seconds

    async def run(self, ctx: StepContext) -> None:
        slot = ctx.data[self.slot_key]
        end = ctx.clock.now() + self.warm_seconds
        while (left := end - ctx.clock.now()) > 0:
            await ctx.progress(f"{slot} kept warm for instant rollback: {duration(left)} left")
            problem = await unhealthy_live(ctx)
            if problem:
                raise StepFailed(f"after the switch: {problem}", unhealthy=True)
            await ctx.poll(min(ctx.target.poll_seconds, left))
        delay = await ctx.platform.drain_seconds(ctx.target, slot)
        if delay > 0 and not ctx.data.get(f"drained_{slot}"):
            await ctx.progress(f"Draining {slot}: {duration(delay)}")
            await ctx.clock.sleep(delay)
            ctx.data[f"drained_{slot}"] = True
        weights = await ctx.platform.weights(ctx.target)
        if weights.get(slot, 0) > 0:  # never take the tasks away from traffic: the move did not hold
            raise StepFailed(f"{slot} still has traffic ({split_words(weights)}); it is not scaled down")
        await ctx.platform.update_slot(ctx.target, slot, count=0)
        if self.slot_key == "stable_slot":
            ctx.data["stable_scaled_down"] = True
        await ctx.report(f"Scaled {ctx.target.ecs_service(slot)} down to 0 tasks")


async def unhealthy_live(ctx: StepContext) -> str | None:
    health = await ctx.platform.target_health(ctx.target, ctx.data["slot"])
    bad = [t for t in health if t.state not in ("healthy", "draining", "initial")]
    if bad:
        return (
            f"{len(bad)} of {len(health)} targets unhealthy in {ctx.target.target_group(ctx.data['slot'])} "
            f"({', '.join(sorted({t.reason or t.state for t in bad}))})"
        )
    return None


@dataclass
class RestoreStable(Step):
    """Rollback's first move: the stable slot runs its tasks again (if it had been scaled down)."""

    kind = "restore_stable"

    def describe(self) -> str:
        return "Make sure the stable slot is running"

    async def run(self, ctx: StepContext) -> None:
        stable = ctx.data["stable_slot"]
        now = await ctx.platform.running(ctx.target, stable)
        if now.desired < int(ctx.data["desired_count"]):
            await ctx.platform.update_slot(ctx.target, stable, count=int(ctx.data["desired_count"]))
            await ctx.report(
                f"Scaling {ctx.target.ecs_service(stable)} back up to {ctx.data['desired_count']}"
            )


def _preparation(target: Target) -> list[Step]:
    steps: list[Step] = [
        CaptureTraffic(),
        UseRevision(),
        *migrations.forward_steps(target),
        PrepareSlot(),
        WaitForRollout("task_definition", target.rollout_timeout_seconds),
        WaitForHealthyTargets(min(target.rollout_timeout_seconds, 300.0)),
    ]
    if target.smoke_checks:
        steps.append(SmokeCheck())
    return steps


def blue_green_plan(target: Target) -> list[Step]:
    return [
        *_preparation(target),
        SetWeights(100),
        Analyze(target.bake_seconds, "100% after the switch"),
        *_keep_warm(target),
    ]


def canary_plan(target: Target, weights: tuple[int | str, ...] | None = None) -> list[Step]:
    steps = _preparation(target)
    last = 0
    for w in weights or target.canary_steps:
        if w == "pause":
            steps.append(ManualPause(f"{last}%"))
            continue
        steps += [SetWeights(int(w)), Analyze(target.step_bake_seconds, f"canary {w}%")]
        last = int(w)
    below = [s for s in steps if isinstance(s, Analyze) and not s.label.endswith(" 100%")]
    if below:
        below[-1].final = True
    return [*steps, *_keep_warm(target)]


def _keep_warm(target: Target) -> list[Step]:
    """The old slot kept warm, then scaled down — by the plan, unless the verification after success does
    it when it ends (rollback_during_verify: the warm slot is what a regression rolls back to)."""
    return [] if defers_scale_down(target) else [ScaleDown("stable_slot", target.keep_warm_seconds)]


def rollback_plan(target: Target) -> list[Step]:
    return [
        RestoreStable(),
        WaitForRollout("previous_task_definition", target.rollout_timeout_seconds, slot_key="stable_slot"),
        WaitForHealthyTargets(min(target.rollout_timeout_seconds, 300.0), slot_key="stable_slot"),
        SetWeights(0),
        ScaleDown("slot", 0.0),
        *migrations.back_steps(target),
    ]
