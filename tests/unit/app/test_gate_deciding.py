"""A request that may amend its requester's pending deployment is answered without waiting for the
admission lock; the gate never starts a deployment of that service+env while such a request is being
decided, and reads again when one was asked for since its reads. So an amendment never lands between the
readiness check and the start, and the deployment starts with the last amendment accepted."""

from __future__ import annotations

import asyncio

from bot.domain.model import Amendment, Deployment, LockInfo
from tests.unit.app.test_engine_on_fakes import deploy, until_done, world  # noqa: F401 - the fixture


async def test_a_burst_of_amendments_never_lands_after_the_start_and_the_newest_accepted_runs(world):  # noqa: F811
    engine, platform, _, target = world
    answers = await asyncio.gather(
        *(engine.request(deploy(f"web v{n} to staging"), "alice", roles={"engineers"}) for n in range(2, 12))
    )
    created = [a for a in answers if isinstance(a, Deployment)]
    assert len(created) == 1
    assert all(isinstance(a, Deployment | Amendment | LockInfo) for a in answers)
    d = await until_done(engine, created[0].id)
    assert d.state.value == "succeeded", d.outcome
    events = await engine.store.events(d.id)
    actions = [e.action for e in events]
    start = actions.index("start")
    assert "amend" not in actions[start:]  # nothing was amended once it had started
    amended = [e.details["to"]["version"] for e in events if e.action == "amend"]
    assert d.version == (amended[-1] if amended else created[0].version)  # the newest accepted is what ran
    assert f"web:{d.version}" in {platform.image_of(target, s) for s in target.slots}


async def test_the_gate_does_not_start_while_a_request_that_may_amend_is_being_decided(world):  # noqa: F811
    engine, _, _, _ = world
    gate, key = engine.gate, ("web", "staging")
    entered = asyncio.Event()
    left_while_deciding: list[bool] = []
    real = gate._after_deciding

    async def watched(k: tuple[str, str]) -> int:
        entered.set()
        asked = await real(k)
        left_while_deciding.append(bool(gate._deciding.get(k)))
        return asked

    gate._after_deciding = watched  # type: ignore[method-assign]
    with gate.deciding(*key):
        d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
        assert isinstance(d, Deployment)
        await asyncio.wait_for(entered.wait(), 10)  # the admission reached the gate
        assert (await engine.store.get(d.id)).state.value == "requested"
    done = await until_done(engine, d.id)
    assert done.state.value == "succeeded", done.outcome
    assert left_while_deciding and not any(left_while_deciding)  # it went on only once nothing was decided


def test_asked_since_counts_requests_asked_for_and_those_still_being_decided(world):  # noqa: F811
    gate = world[0].gate
    key = ("web", "staging")
    asked = gate._asked.get(key, 0)
    assert not gate._asked_since(key, asked)
    with gate.deciding(*key):
        assert gate._asked_since(key, asked)  # asked for, and not decided yet
        assert gate._asked_since(key, asked + 1)  # still being decided
    assert gate._asked_since(key, asked) and not gate._asked_since(key, asked + 1)
