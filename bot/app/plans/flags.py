"""A feature flag's gradual rollout, as a plan: the on variant's share walks the environment's rollout
steps (FlagAt), each judged like a canary (FlagBake: the on variant's requests, errors and latency
against the off variant's, read with one GetMetricData per measurement), then everyone gets it (FlagOn).
A failed judgement rolls back: the flag is turned off at once (FlagOff). Every write goes through the
FlagSwitch (bot.app.flags.FlagBook): audited, and refused once the kill switch turned the flag off."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.app.measure import run_analysis
from bot.app.plans.steps import Step, StepContext, StepFailed, duration, judged
from bot.config.model import Target
from bot.domain.analysis import Analysis, GroupMetrics, Measurement
from bot.domain.errors import Conflict
from bot.domain.flags import (
    FlagDef,
    FlagRecord,
    FlagState,
    at_percent,
    describe,
    flag_key,
    turned_off,
    turned_on,
)


class FlagSwitch(Protocol):
    """What a flag rollout's steps may do to flags (bot.app.flags.FlagBook implements it)."""

    def flag(self, key: str) -> FlagDef: ...

    async def record(self, env: str, key: str) -> FlagRecord: ...

    async def change(
        self,
        env: str,
        key: str,
        make: Callable[[FlagDef, FlagState], FlagState],
        *,
        actor: str,
        action: str,
        summary: str,
        deployment_id: int | None = None,
        unless_killed: bool = False,
        expected_revision: int | None = None,
    ) -> FlagRecord: ...


def _switch(ctx: StepContext) -> FlagSwitch:
    if ctx.flags is None:
        raise StepFailed("this run has no access to flags (internal error)")
    return ctx.flags  # type: ignore[no-any-return]


def _pct(percent: float) -> str:
    return f"{percent:g}%"


async def _write(
    ctx: StepContext,
    key: str,
    make: Callable[[FlagDef, FlagState], FlagState],
    action: str,
    summary: str,
    expected_revision: int | None = None,
) -> FlagRecord:
    try:
        return await _switch(ctx).change(
            ctx.target.env.name,
            key,
            make,
            actor="deploybot",
            action=action,
            summary=summary,
            deployment_id=ctx.deployment_id,
            unless_killed=True,
            expected_revision=expected_revision,
        )
    except Conflict as exc:
        raise StepFailed(str(exc)) from None


@dataclass
class FlagAt(Step):
    """The on variant for `percent` of targeting keys (the rest: off); rules still come first."""

    key: str = ""
    percent: float = 0.0
    kind = "flag_at"

    def describe(self) -> str:
        return f"Turn {self.key} on for {_pct(self.percent)} of users"

    async def run(self, ctx: StepContext) -> None:
        ctx.data["changed"] = True  # from here on, a failure turns the flag off
        await ctx.save()
        await _write(
            ctx,
            self.key,
            lambda f, s: at_percent(f, s, self.percent),
            "flag_rollout_step",
            f"rollout: on for {_pct(self.percent)}",
        )
        ctx.data["percent"] = self.percent
        await ctx.progress(f"{self.key} is on for {_pct(self.percent)} of users")


@dataclass
class FlagBake(Step):
    """Judge the on variant against the off variant for `seconds` (the project's analysis: absolute and
    relative thresholds; no data is inconclusive: pause and ask). Failed: turn the flag off."""

    key: str = ""
    seconds: float = 60.0
    label: str = ""
    kind = "flag_bake"

    def describe(self) -> str:
        return f"Analyse {self.key} at {self.label} for {duration(self.seconds)}"

    def min_seconds(self) -> float:
        return self.seconds

    async def run(self, ctx: StepContext) -> None:
        if ctx.index in ctx.data.get("promoted", []):
            await ctx.report(f"Analysis at {self.label} skipped: promoted by a person")
            return
        flag = _switch(ctx).flag(self.key)
        env = ctx.target.env
        whole = float(ctx.data.get("percent", 0)) >= 100
        variants = [flag.on_variant] if whole else [flag.on_variant, flag.off_variant]

        async def reader(start: datetime, end: datetime) -> dict[str, GroupMetrics]:
            read = await ctx.metrics.flag_metrics(
                env.aws_role_arn,
                env.flags.metrics,
                self.key,
                env.name,
                variants,
                start,
                end,
                env.flags.analysis.latency_statistic,
            )
            got = {"canary": read.get(flag.on_variant, GroupMetrics())}
            if not whole:
                got["stable"] = read.get(flag.off_variant, GroupMetrics())
            return got

        async def on_measurement(m: Measurement) -> None:
            await ctx.record("measurement", {**m.to_dict(), "flag": self.key})
            mark = "✓" if m.verdict == "pass" else "✗" if m.verdict == "fail" else "?"
            await ctx.report(f"{mark} {m.line()}")

        # Applications pick a change up when they next ask (a provider's poll or cache), and a measurement
        # looks back a whole window: the first one must not judge traffic from before the change. The
        # analysis measures one interval in; this waits out the rest of a window first.
        config = env.flags.analysis
        settle = max(0.0, config.window_seconds - config.interval_seconds)
        if settle > 0 and not ctx.data.get("settled_at_" + str(ctx.index)):
            await ctx.progress(f"Waiting {duration(settle)} for applications to pick up {self.label}")
            await ctx.poll(settle)
            ctx.data["settled_at_" + str(ctx.index)] = True
        analysis: Analysis = await run_analysis(
            ctx.metrics,
            env.flags.analysis,
            duration_seconds=self.seconds,
            clock=ctx.clock,
            account=env.aws_role_arn,
            canary=None,
            stable=None,
            label=f"{flag.on_variant} at {self.label}",
            on_measurement=on_measurement,
            checkpoint=ctx.checkpoint,
            reader=reader,
        )
        passed = judged(analysis, f"{self.key} analysis", self.label, "Kill to turn it off")
        await ctx.report(f"Analysis of {self.key} at {self.label} passed: {passed}")


@dataclass
class FlagOn(Step):
    """Everyone gets the on variant (the split is no longer needed)."""

    key: str = ""
    kind = "flag_on"

    def describe(self) -> str:
        return f"Turn {self.key} on for everyone"

    async def run(self, ctx: StepContext) -> None:
        ctx.data["changed"] = True
        await _write(ctx, self.key, turned_on, "flag_rollout_done", "rollout: on for everyone")
        ctx.data["percent"] = 100.0


@dataclass
class FlagOff(Step):
    """The rollback: everyone gets the off variant, at once."""

    key: str = ""
    kind = "flag_off"

    def describe(self) -> str:
        return f"Turn {self.key} off for everyone"

    async def run(self, ctx: StepContext) -> None:
        record = await _switch(ctx).record(ctx.target.env.name, self.key)
        if not record.state.enabled:  # killed or off already: nothing to write (and no Conflict)
            return
        await _switch(ctx).change(
            ctx.target.env.name,
            self.key,
            lambda f, s: turned_off(f, s),
            actor="deploybot",
            action="flag_rolled_back",
            summary="rollout rolled back: off for everyone",
            deployment_id=ctx.deployment_id,
        )


@dataclass
class FlagVerifyOn(Step):
    """The store (what every evaluation reads) shows the flag on for everyone."""

    key: str = ""
    kind = "flag_verify_on"

    def describe(self) -> str:
        return f"Check that {self.key} answers on for everyone"

    async def run(self, ctx: StepContext) -> None:
        flag = _switch(ctx).flag(self.key)
        state = (await _switch(ctx).record(ctx.target.env.name, self.key)).state
        if state.killed or not state.enabled or state.split or state.default_variant != flag.on_variant:
            raise StepFailed(f"not on for everyone: {self.key} is {_state_words(flag, state)}")


@dataclass
class FlagVerifyOff(Step):
    kind = "flag_verify_off"
    key: str = ""

    def describe(self) -> str:
        return f"Check that {self.key} answers off for everyone"

    async def run(self, ctx: StepContext) -> None:
        flag = _switch(ctx).flag(self.key)
        state = (await _switch(ctx).record(ctx.target.env.name, self.key)).state
        if state.enabled:
            raise StepFailed(f"not off: {self.key} is {_state_words(flag, state)}")


def _state_words(flag: FlagDef, state: FlagState) -> str:
    return describe(flag, state)


def rollout_plan(target: Target, steps: Sequence[int] | None = None) -> list[Step]:
    key = _key(target)
    plan: list[Step] = []
    for percent in steps or [int(s) for s in target.canary_steps if s != "pause"]:
        plan.append(FlagAt(key=key, percent=float(percent)))
        plan.append(FlagBake(key=key, seconds=target.step_bake_seconds, label=_pct(percent)))
    plan.append(FlagOn(key=key))
    return plan


def rollback_plan(target: Target, plan: Sequence[dict[str, Any]] = ()) -> list[Step]:
    """A rollout is undone by turning the flag off; an approved change is left as it is."""
    return [NothingToUndo(key=_key(target))] if _is_change(plan) else [FlagOff(key=_key(target))]


def verify_live(target: Target, plan: Sequence[dict[str, Any]] = ()) -> Step:
    if _is_change(plan):
        return FlagVerifyState(key=_key(target), state=plan[-1].get("state"))
    return FlagVerifyOn(key=_key(target))


def verify_rolled_back(target: Target, plan: Sequence[dict[str, Any]] = ()) -> Step:
    return NothingToUndo(key=_key(target)) if _is_change(plan) else FlagVerifyOff(key=_key(target))


def _key(target: Target) -> str:
    key = flag_key(target.service.name)
    if key is None:
        raise StepFailed(f"{target.service.name} is not a flag")
    return key


def steps_summary(plan: Sequence[dict[str, Any]]) -> list[float]:
    """The percentages a stored rollout plan walks."""
    return [float(s["percent"]) for s in plan if s.get("kind") == FlagAt.kind]


@dataclass
class FlagSet(Step):
    """An approved change: the flag answers as `state` (a FlagState's dict) says — if nobody changed it
    since it was asked for (`revision`): an approval is for a change of what the approver saw."""

    key: str = ""
    state: dict[str, Any] | None = None
    summary: str = ""
    revision: int | None = None
    kind = "flag_set"

    def describe(self) -> str:
        return f"Change {self.key}: {self.summary}"

    async def run(self, ctx: StepContext) -> None:
        wanted = FlagState.from_dict(self.state or {})
        now = await _switch(ctx).record(ctx.target.env.name, self.key)
        if now.state == wanted:  # done already (a restart after the write)
            return
        await _write(ctx, self.key, lambda f, s: wanted, "flag_changed", self.summary, self.revision)


@dataclass
class NothingToUndo(Step):
    """An approved change that failed wrote nothing (FlagSet writes all or nothing); or it was written
    and then someone changed the flag again: theirs stands."""

    key: str = ""
    kind = "flag_nothing_to_undo"

    def describe(self) -> str:
        return f"Leave {self.key} as it is"

    async def run(self, ctx: StepContext) -> None:
        return None


@dataclass
class FlagVerifyState(Step):
    """The store (what every evaluation reads) shows the approved state."""

    key: str = ""
    state: dict[str, Any] | None = None
    kind = "flag_verify_state"

    def describe(self) -> str:
        return f"Check that {self.key} answers as approved"

    async def run(self, ctx: StepContext) -> None:
        flag = _switch(ctx).flag(self.key)
        state = (await _switch(ctx).record(ctx.target.env.name, self.key)).state
        if state != FlagState.from_dict(self.state or {}):
            raise StepFailed(f"{self.key} is {_state_words(flag, state)}, not as approved")


def change_plan(target: Target, state: FlagState, summary: str, revision: int) -> list[Step]:
    return [FlagSet(key=_key(target), state=state.to_dict(), summary=summary, revision=revision)]


def _is_change(plan: Sequence[dict[str, Any]]) -> bool:
    return bool(plan) and plan[-1].get("kind") == FlagSet.kind
