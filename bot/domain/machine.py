"""Deployment states and the legal transitions between them, as data. No I/O.

The store refuses any transition not declared here, and the Slack buttons on a deployment's message are
exactly the user actions legal in its current state, so a button can never offer an illegal move."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    REQUESTED = "requested"
    AWAITING_APPROVAL = "awaiting_approval"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def word(self) -> str:
        """The state as people read it on the deployment's message."""
        return self.value.replace("_", " ")

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.ROLLED_BACK, State.FAILED, State.CANCELLED})
ACTIVE = frozenset(State) - TERMINAL
BEFORE_START = frozenset({State.REQUESTED, State.AWAITING_APPROVAL, State.SCHEDULED})


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[State]
    target: State
    by_user: bool = False  # offered as a button / command to people
    label: str = ""  # button text
    style: str | None = None  # Block Kit button style: primary | danger


def _t(
    action: str, sources: Collection[State], target: State, label: str = "", style: str | None = None
) -> Transition:
    return Transition(action, frozenset(sources), target, bool(label), label, style)


TRANSITIONS: tuple[Transition, ...] = (
    _t("await_approval", {State.REQUESTED}, State.AWAITING_APPROVAL),
    _t("schedule", {State.REQUESTED, State.AWAITING_APPROVAL}, State.SCHEDULED),
    _t("start", BEFORE_START, State.RUNNING),
    _t("pause", {State.RUNNING}, State.PAUSED, "Pause"),
    _t("promote", {State.PAUSED}, State.RUNNING, "Promote", "primary"),
    _t("resume", {State.PAUSED}, State.RUNNING, "Resume"),
    _t("succeed", {State.RUNNING}, State.SUCCEEDED),
    _t("rollback", {State.RUNNING, State.PAUSED}, State.ROLLING_BACK),
    _t("abort", {State.RUNNING, State.PAUSED}, State.ROLLING_BACK, "Abort", "danger"),
    _t("finish_rollback", {State.ROLLING_BACK}, State.ROLLED_BACK),
    _t("fail", {State.RUNNING, State.PAUSED, State.ROLLING_BACK}, State.FAILED),
    _t("cancel", BEFORE_START, State.CANCELLED, "Cancel", "danger"),
)
BY_ACTION = {t.action: t for t in TRANSITIONS}


class IllegalTransition(Exception):
    def __init__(self, action: str, state: State):
        self.action, self.state = action, state
        super().__init__(f"cannot {action} a deployment that is {state.word}")


def next_state(state: State, action: str) -> State:
    t = BY_ACTION.get(action)
    if t is None or state not in t.sources:
        raise IllegalTransition(action, state)
    return t.target


def user_actions(state: State) -> list[Transition]:
    """The transitions a person may take from `state`, in display order."""
    return [t for t in TRANSITIONS if t.by_user and state in t.sources]
