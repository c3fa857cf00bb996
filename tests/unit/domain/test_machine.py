"""The state machine is data: check its shape, not a copy of it."""

import pytest

from bot.domain.machine import (
    ACTIVE,
    BY_ACTION,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    State,
    next_state,
    user_actions,
)


def test_terminal_states_have_no_way_out():
    for t in TRANSITIONS:
        assert not (t.sources & TERMINAL), f"{t.action} leaves a terminal state"


def test_every_active_state_can_reach_a_terminal_state():
    for start in ACTIVE:
        seen, frontier = {start}, [start]
        while frontier:
            s = frontier.pop()
            for t in TRANSITIONS:
                if s in t.sources and t.target not in seen:
                    seen.add(t.target)
                    frontier.append(t.target)
        assert seen & TERMINAL, f"{start} can never finish"


def test_buttons_are_exactly_the_legal_user_moves():
    assert [t.action for t in user_actions(State.RUNNING)] == ["pause", "abort"]
    assert [t.action for t in user_actions(State.PAUSED)] == ["promote", "resume", "abort"]
    assert [t.action for t in user_actions(State.REQUESTED)] == ["cancel"]
    for s in TERMINAL:
        assert user_actions(s) == []
    for s in State:
        for t in user_actions(s):
            assert next_state(s, t.action) == t.target


def test_illegal_moves_are_refused_with_the_state_word():
    with pytest.raises(IllegalTransition, match="cannot pause a deployment that is rolled back"):
        next_state(State.ROLLED_BACK, "pause")
    with pytest.raises(IllegalTransition):
        next_state(State.RUNNING, "no-such-action")
    assert set(BY_ACTION) == {t.action for t in TRANSITIONS}
