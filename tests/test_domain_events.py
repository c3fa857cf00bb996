"""bot.domain.events: every event round-trips through storage, knows its alert level without any text."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, fields

import pytest

from bot.domain.alerts import EVENT_LEVELS, SEVERITY
from bot.domain.events import (
    EVENT_TYPES,
    DomainEvent,
    FreezeOverridden,
    Paused,
    RollbackFailed,
    RollingBack,
    StepStarted,
    WindowMissed,
)

SAMPLES = {"str": "x", "int": 3, "float": 1.5, "bool": True, "str | None": None}


def sample(cls: type[DomainEvent]) -> DomainEvent:
    return cls(**{f.name: SAMPLES[str(f.type)] for f in fields(cls)})


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_event_round_trips_through_json_and_has_a_known_alert_event(kind):
    cls = EVENT_TYPES[kind]
    event = sample(cls)
    assert cls.kind == kind
    stored = json.loads(json.dumps(event.to_dict()))
    assert DomainEvent.from_dict(kind, stored) == event
    assert event.alert_event() in EVENT_LEVELS
    # never reported below the level the alert policy gives its alert event
    assert SEVERITY[event.level()] >= SEVERITY[EVENT_LEVELS[event.alert_event()]]


def test_kinds_are_distinct_and_every_subclass_is_registered():
    assert len({cls.kind for cls in EVENT_TYPES.values()}) == len(EVENT_TYPES)
    assert set(EVENT_TYPES.values()) == set(DomainEvent.__subclasses__())


def test_levels_come_from_the_fields_not_from_text():
    assert (RollingBack("5xx", automatic=True).level(), RollingBack("5xx", True).alert_event()) == (
        "critical",
        "automatic_rollback",
    )
    assert RollingBack("5xx", True, unhealthy_after_switch=True).alert_event() == "unhealthy_after_switch"
    assert (RollingBack("by hand", automatic=False).level(), RollingBack("x", False).alert_event()) == (
        "warning",
        "aborted",
    )
    assert (Paused("go on?").level(), Paused("go on?", inconclusive=True).alert_event()) == (
        "info",
        "inconclusive_analysis",
    )
    assert FreezeOverridden("U1", "release freeze").alert_event() == "freeze_override"
    assert WindowMissed(None).alert_event() == "missed_window"
    assert RollbackFailed("boom").level() == "critical"


def test_events_are_frozen_and_bad_stored_data_is_refused():
    e = StepStarted(1, "deploy")
    with pytest.raises(FrozenInstanceError):
        e.index = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown"):
        DomainEvent.from_dict("nonsense", {})
    with pytest.raises(ValueError, match="fields"):
        DomainEvent.from_dict("step_started", {"index": 1})
