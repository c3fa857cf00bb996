"""Typed domain events of a bake's analysis (bot.domain.events), registered with the others: facts the
chart of a deployment's analysis is drawn on (handlers/charts.py). The store's outbox imports this module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bot.domain.events import EVENT_TYPES, DomainEvent


@dataclass(frozen=True)
class AnalysisPassed(DomainEvent):
    """The analysis of plan step `index` (`label`, e.g. "canary 50%") passed; its measurements are in the
    audit. Thread-only: the deployment's message does not change for it."""

    index: int
    label: str
    kind: ClassVar[str] = "analysis_passed"


ANALYSIS_EVENTS = (AnalysisPassed,)
EVENT_TYPES.update({cls.kind: cls for cls in ANALYSIS_EVENTS})
