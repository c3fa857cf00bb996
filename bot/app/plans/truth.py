"""What AWS shows, read back before the bot claims anything, and the repair of split traffic.

Before a deployment is written `succeeded` or `rolled back`, the world is read again: the weights are
whole on the slot that should serve, that slot runs the claimed revision with its container's image, and
its desired count is up (VerifyLive, VerifyRolledBack). Otherwise the deployment is not done, and the
failure says what AWS shows. These steps are not stored in plans: the runner runs them after every plan,
so a deployment started before they existed is checked too.

A deployment of a service whose traffic is split (a rollback that never finished, a person's hand
edit) starts by putting all of it on the slot that runs the newest version known good in the
environment (`repair_split`), and says so (TrafficRepaired)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.app.plans.reads import image_tag, unhealthy_targets
from bot.app.plans.steps import Step, StepContext, StepFailed
from bot.app.ports import SlotState
from bot.domain.events import TrafficRepaired


def split_words(weights: dict[str, int]) -> str:
    """'blue 25%, green 75%' (weights as the platform has them; they need not add up to 100)."""
    total = sum(weights.values()) or 1
    return ", ".join(f"{s} {round(100 * w / total)}%" for s, w in weights.items())


def whole_on(weights: dict[str, int]) -> str | None:
    """The one slot with all the traffic, or None when it is split (or nowhere)."""
    live = [s for s, w in weights.items() if w > 0]
    return live[0] if len(live) == 1 else None


async def problems(ctx: StepContext, slot: str, revision: str, image: str | None, count: int) -> list[str]:
    """What AWS shows wrong for "`slot` serves all the traffic, runs `revision` (with `image`) and has
    at least `count` tasks wanted and one running"; empty when it is all so."""
    found: list[str] = []
    if len(ctx.target.slots) > 1:
        weights = await ctx.platform.weights(ctx.target)
        if whole_on(weights) != slot:
            found.append(f"traffic is {split_words(weights)}, not all on {slot}")
    now: SlotState = await ctx.platform.running(ctx.target, slot)
    if now.revision != revision:
        found.append(f"{slot} runs {_short(now.revision) or 'nothing'}, not {_short(revision)}")
    elif image is not None and now.image != image:
        found.append(f"{slot}'s container runs {now.image}, not {image}")
    if now.desired < count:
        found.append(f"{slot} wants {now.desired} tasks, not {count}")
    elif now.running == 0 and count > 0:
        found.append(f"{slot} has no task running")
    return found


@dataclass
class VerifyLive(Step):
    """The new version serves all the traffic, as AWS shows it."""

    kind = "verify_live"

    def describe(self) -> str:
        return "Check with AWS that the new version serves all the traffic"

    async def run(self, ctx: StepContext) -> None:
        version = ctx.version or ctx.data.get("previous_version")
        image = ctx.target.image(version) if version else None
        wrong = await problems(
            ctx,
            ctx.data["slot"],
            ctx.data["task_definition"],
            image,
            int(ctx.data.get("desired_count", 1)),
        )
        if wrong:
            raise StepFailed(f"not live: AWS shows {'; '.join(wrong)}")


@dataclass
class VerifyRolledBack(Step):
    """The version it rolled back to serves all the traffic, as AWS shows it."""

    kind = "verify_rolled_back"

    def describe(self) -> str:
        return "Check with AWS that the previous version serves all the traffic"

    async def run(self, ctx: StepContext) -> None:
        slot = ctx.data.get("stable_slot") or ctx.data["slot"]
        previous = ctx.data.get("previous_version")
        wrong = await problems(
            ctx,
            slot,
            ctx.data["previous_task_definition"],
            ctx.target.image(previous) if previous else None,
            int(ctx.data.get("desired_count", 1)),
        )
        if wrong:
            raise StepFailed(f"not back yet: AWS shows {'; '.join(wrong)}")


@dataclass
class AllTrafficTo(Step):
    """All the traffic on the slot named by context key `slot_key` (a two-slot service), in one change."""

    slot_key: str = "slot"
    kind = "all_traffic_to"

    def describe(self) -> str:
        return "Make sure all the traffic goes to the service's slot"

    async def run(self, ctx: StepContext) -> None:
        slot = ctx.data[self.slot_key]
        weights = await ctx.platform.weights(ctx.target)
        if whole_on(weights) == slot:
            return
        await ctx.platform.set_weights(ctx.target, {s: 100 if s == slot else 0 for s in ctx.target.slots})
        await ctx.report(f"Traffic was {split_words(weights)}: all of it now goes to {slot}")


async def repair_split(ctx: StepContext) -> str:
    """The slot with all the traffic — after, when traffic is split, putting all of it on the slot that
    runs the newest version known good here (whose targets are healthy) in one change. StepFailed when
    no slot can be trusted with it: a person must decide."""
    weights = await ctx.platform.weights(ctx.target)
    if (whole := whole_on(weights)) is not None:
        return whole
    states = {s: await ctx.platform.running(ctx.target, s) for s in ctx.target.slots}
    runs = {s: image_tag(st.image) for s, st in states.items() if st.image and st.desired > 0}
    was = split_words(weights)
    known_good = await ctx.known_good()
    good = next((s for v in known_good for s in ctx.target.slots if runs.get(s) == v), None)
    if good is None:
        what = ", ".join(f"{s} runs {v}" for s, v in runs.items()) or "neither slot runs tasks"
        known = ", ".join(known_good) or "none yet"
        raise StepFailed(
            f"traffic is split ({was}) and no slot runs a version known good in {ctx.target.env.name} "
            f"({what}; known good: {known}); move the traffic by hand or roll back to a known-good version"
        )
    problem = await unhealthy_targets(ctx, good)
    if problem is not None:
        raise StepFailed(
            f"traffic is split ({was}); {good} runs {runs[good]}, the last known-good version, but "
            f"{problem} — it cannot take all the traffic yet"
        )
    others = {s: 0 for s in ctx.target.slots if s != good}
    await ctx.platform.set_weights(ctx.target, {good: 100, **others})
    ctx.data["repaired"] = {"was": was, "slot": good, "version": runs[good]}
    await ctx.say(TrafficRepaired(was, good, runs[good]))
    return good


def _short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]
