"""The canary plan marks its last bake before 100% `final` (the sequential judge passes that one on
evidence only), and the flag survives a stored plan."""

from __future__ import annotations

from bot.app.plans.steps import step_from_dict
from bot.app.plans.traffic import Analyze, canary_plan
from bot.config.load import parse_settings

SETTINGS = parse_settings(
    {
        "environments": {"production": {"load_balancer": "lb", "strategy": "canary"}},
        "services": {"web": {"ecs_service": "web-{slot}"}},
    }
)


def test_only_the_last_bake_before_100_is_final():
    target = SETTINGS.target("web", "production")
    bakes = [s for s in canary_plan(target) if isinstance(s, Analyze)]
    assert [(s.label, s.final) for s in bakes] == [
        ("canary 5%", False),
        ("canary 25%", False),
        ("canary 50%", True),
        ("canary 100%", False),
    ]
    assert [s.final for s in canary_plan(target, (10, "pause", 30)) if isinstance(s, Analyze)] == [
        False,
        True,
    ]
    stored = step_from_dict(bakes[2].to_dict())
    assert isinstance(stored, Analyze) and stored.final
    old = {k: v for k, v in bakes[2].to_dict().items() if k != "final"}  # a plan stored before the flag
    assert step_from_dict(old) == Analyze(60.0, "canary 50%")
