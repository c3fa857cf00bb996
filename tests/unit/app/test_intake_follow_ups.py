"""An amendment's follow-up (the gate's recheck) runs after the answer, one at a time per deployment; the
amendments that land while one runs are followed up once, for the newest (the gate reads the deployment
again, so one recheck covers them all), and a failing follow-up does not stop the next."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from bot.app.intake import Intake
from bot.domain.model import Amendment


def amendment(deployment_id: int, version: str) -> Amendment:
    return Amendment(SimpleNamespace(id=deployment_id), version, "rolling", changed=True)  # type: ignore[arg-type]


class HeldGate:
    """A gate whose follow-ups wait until the test lets them go; it records what it was asked."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[int, str | None]] = []
        self.release = asyncio.Event()
        self.fail_on = fail_on

    async def amended(self, a: Amendment, user: str) -> None:
        self.calls.append((a.deployment.id, a.from_version))
        await self.release.wait()
        if a.from_version == self.fail_on:
            raise RuntimeError("recheck failed")


def intake_with(gate: Any) -> Intake:
    return Intake(settings=None, store=None, access=None, scheduling=None, gate=gate)  # type: ignore[arg-type]


async def test_amendments_landing_during_a_follow_up_are_followed_up_once_for_the_newest():
    gate = HeldGate()
    intake = intake_with(gate)
    intake._amended_later(amendment(7, "v1"), "alice")
    await asyncio.sleep(0)  # the first follow-up starts and waits
    for v in ("v2", "v3", "v4"):
        intake._amended_later(amendment(7, v), "alice")
    intake._amended_later(amendment(8, "w1"), "bob")  # another deployment: its own follow-up
    gate.release.set()
    await intake._after.wait()
    assert gate.calls == [(7, "v1"), (8, "w1"), (7, "v4")]
    intake._amended_later(amendment(7, "v5"), "alice")  # later on: followed up again
    await intake._after.wait()
    assert gate.calls[-1] == (7, "v5")


async def test_a_failing_follow_up_does_not_stop_the_next():
    gate = HeldGate(fail_on="v1")
    intake = intake_with(gate)
    intake._amended_later(amendment(7, "v1"), "alice")
    await asyncio.sleep(0)
    intake._amended_later(amendment(7, "v2"), "alice")
    gate.release.set()
    await intake._after.wait()
    assert gate.calls == [(7, "v1"), (7, "v2")]
