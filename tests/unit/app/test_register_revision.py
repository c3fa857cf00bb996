"""RegisterRevision (and blue-green's UseRevision) across a crash, on the in-memory Platform: the revision
registered for a deployment is found again when the step runs again — after a restart (`ctx.resumed`) or
in the same run after a lost answer — instead of a second one being registered; a normal run makes no
lookup and no extra store write."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.app.plans import StepContext
from bot.app.plans.rolling import RegisterRevision
from bot.app.plans.traffic import UseRevision
from bot.app.ports import PlatformError
from tests.unit.test_plans import InstantClock, make_target


class Crash(Exception):
    """The process died here (nothing after this instant ran)."""


class Run:
    """One deployment's step on the fake platform. `saved` is what the store holds: a copy of the
    context taken at each save(), as the runner persists it; a crash loses everything else."""

    def __init__(self, strategy: str = "rolling", deployment_id: int = 7):
        self.target = make_target(strategy, slots=strategy != "rolling")
        self.platform = MemoryPlatform()
        self.platform.add_service(self.target, "web:v1")
        self.deployment_id = deployment_id
        self.saved: dict[str, Any] = {}
        self.lines: list[str] = []
        base = self.platform.slot(self.target, self.target.slots[0]).revision
        live, idle = self.target.slots[0], self.target.slots[-1]
        self.saved = {"slot": idle, "stable_slot": live, "previous_task_definition": base}
        self.saved["previous_version"] = "v1"

    def context(self, resumed: bool = False) -> StepContext:
        data = copy.deepcopy(self.saved)  # a (re)started process begins from what the store has

        async def save() -> None:
            self.saved = copy.deepcopy(data)

        async def line(text: str) -> None:
            self.lines.append(text)

        async def nothing() -> None:
            return None

        return StepContext(
            deployment_id=self.deployment_id,
            version="v2",
            target=self.target,
            platform=self.platform,
            metrics=MemoryMetrics(),
            clock=InstantClock(),
            data=data,
            report=line,
            progress=line,
            checkpoint=nothing,
            save=save,
            resumed=resumed,
        )

    async def step(self, step: RegisterRevision, resumed: bool = False) -> StepContext:
        ctx = self.context(resumed)
        await step.run(ctx)
        self.saved = copy.deepcopy(ctx.data)  # the runner saves the context after the step
        return ctx

    def new_revisions(self) -> list[str]:
        return [r for r in self.platform.revisions if self.platform.revision_keys.get(r)]


@pytest.mark.parametrize("step", [RegisterRevision(), UseRevision()], ids=["rolling", "blue-green"])
async def test_a_crash_after_the_registration_landed_finds_it_instead_of_registering_another(step):
    run = Run("rolling" if type(step) is RegisterRevision else "blue-green")
    run.platform.lose("register_revision", Crash("killed between AWS's answer and the save"))
    with pytest.raises(Crash):
        await run.step(step)
    assert "task_definition" not in run.saved and "registering" not in run.saved  # no extra write
    (made,) = run.new_revisions()  # it landed

    ctx = await run.step(step, resumed=True)  # the restarted process runs the step again

    assert run.new_revisions() == [made]  # one revision, not two
    assert ctx.data["task_definition"] == made and "registering" not in ctx.data
    assert run.platform.revisions[made][run.target.service.container] == run.target.image("v2")
    assert run.platform.calls.count("register_revision") == 1
    assert run.platform.calls.count("find_revision") == 1
    assert "registered for this deployment before a restart" in run.lines[-1]


async def test_a_normal_run_registers_once_and_looks_nothing_up():
    run = Run()
    ctx = await run.step(RegisterRevision())
    (made,) = run.new_revisions()
    assert ctx.data["task_definition"] == made
    assert "find_revision" not in run.platform.calls
    assert run.platform.revision_keys[made] == ("7", run.saved["previous_task_definition"])
    await run.step(RegisterRevision())  # done already: nothing more
    assert run.new_revisions() == [made] and run.platform.calls.count("register_revision") == 1


async def test_a_crash_before_the_registration_landed_registers_on_resume():
    run = Run()
    run.platform.fail("register_revision", PlatformError("RegisterRevision", "connection reset"))
    with pytest.raises(PlatformError):
        await run.step(RegisterRevision())
    assert run.new_revisions() == []

    ctx = await run.step(RegisterRevision(), resumed=True)

    (made,) = run.new_revisions()
    assert ctx.data["task_definition"] == made
    assert run.platform.calls.count("find_revision") == 1  # looked, found none, registered
    assert run.platform.calls.count("register_revision") == 2


async def test_a_retry_in_the_same_run_after_a_lost_answer_finds_what_it_made():
    run = Run()
    run.platform.lose("register_revision", PlatformError("RegisterTaskDefinition", "read timeout"))
    ctx = run.context()
    with pytest.raises(PlatformError):
        await RegisterRevision().run(ctx)  # the runner tries a platform error again, same context
    await RegisterRevision().run(ctx)
    (made,) = run.new_revisions()
    assert ctx.data["task_definition"] == made and run.platform.calls.count("register_revision") == 1
    assert run.platform.calls.count("find_revision") == 1


async def test_another_deployments_revision_is_not_taken():
    first = Run(deployment_id=7)
    await first.step(RegisterRevision())
    second = Run(deployment_id=8)
    second.platform = first.platform  # the same service: deployment 8 crashed before its call landed
    second.saved["registering"] = True
    ctx = await second.step(RegisterRevision())
    made = [r for r, (key, _) in first.platform.revision_keys.items() if key == "8"]
    assert len(made) == 1 and ctx.data["task_definition"] == made[0]
    assert len(first.new_revisions()) == 2
