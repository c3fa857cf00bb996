"""/promote carries no --reason, so it can never override a freeze: the words it records ("promoted from
staging (deployment #N)") are not a person's reason to break one, even from a role allowed to."""

from __future__ import annotations

import pytest

from bot.domain import commands as cmds
from tests.unit.app.test_engine_on_fakes import until_done
from tests.unit.app.test_migrations import _world, deploy

CONFIG = {
    "bot": {"default_environment": "staging"},
    "alerts": {"oncall": False},
    "environments": {
        "staging": {"load_balancer": "lb-staging", "bake_seconds": 10, "poll_seconds": 5},
        "production": {"load_balancer": "lb-p", "bake_seconds": 10, "poll_seconds": 5},
    },
    "services": {"api": {"ecs_service": "api"}},
}


async def test_a_promotion_into_a_frozen_environment_is_refused_not_overridden(tmp_path):
    engine, store, _, _ = await _world(tmp_path, CONFIG)
    try:
        d = await deploy(engine, "api v2 to staging")
        assert (await until_done(engine, d)).state.value == "succeeded"
        await engine.freeze("production", "+2h", "quarter close", "bob")
        promote = cmds.Promote("api", "staging", "production")
        with pytest.raises(Exception, match="quarter close"):
            await engine.request(
                promote, "bob", roles={"release-managers"}
            )  # no access table: bob may override
        assert [e.action for e in await store.events() if e.action == "freeze_override"] == []
    finally:
        await engine.shutdown()
        store.close()
