"""After a deployment succeeds: its verification (the live version watched for `verify_seconds` against
the pre-deploy baseline, bot.app.verification), the question to its requester, and people's notes.

The typed domain events of all three (registered with the others in bot.domain.events' EVENT_TYPES; the
store's outbox imports this module), and the pure rule that ends a verification from its measurements.
Verification is an event, not a new state: the deployment stays `succeeded`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from bot.domain.analysis import AnalysisConfig, Measurement
from bot.domain.events import EVENT_TYPES, DomainEvent, Level

# How a verification ended: `verified` (a quiet period with passing measurements), `regressed`,
# `inconclusive` (no measurement passed: no data is never a pass), `superseded` (a newer deployment of the
# same service and environment took over; its own verification watches from there).
Outcome = Literal["verified", "regressed", "inconclusive", "superseded"]
OUTCOMES: tuple[Outcome, ...] = ("verified", "regressed", "inconclusive", "superseded")
# The audit action each outcome is recorded with (the delivery report counts `verify_regressed` as a
# change failure).
AUDIT_ACTIONS: dict[str, str] = {
    "verified": "verified",
    "regressed": "verify_regressed",
    "inconclusive": "verify_inconclusive",
    "superseded": "verify_superseded",
}
ANSWERS = ("smooth", "had_issues")  # the requester's answer to "How did it go?" (audit action `feedback`)
NOTE_MAX = 2000  # characters of one note (Slack's plain-text input allows 3000; the audit shows 300 a line)


def regression(config: AnalysisConfig, measurements: Sequence[Measurement]) -> Measurement | None:
    """The measurement that makes a verification a regression, or None: failed measurements beyond the
    analysis' failure_limit (the same rule as a bake's). Inconclusive ones and API errors are not a
    regression of the version (a verification has nobody to pause for): they are noted, and a period
    without any pass ends `inconclusive`, never `verified`."""
    failed = [m for m in measurements if m.verdict == "fail"]
    return failed[-1] if len(failed) > config.failure_limit else None


def outcome_at_end(measurements: Sequence[Measurement]) -> Outcome:
    """How a verification that reached its end without a regression ended."""
    return "verified" if any(m.verdict == "pass" for m in measurements) else "inconclusive"


# ------------------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class VerificationStarted(DomainEvent):
    """The succeeded deployment's live version is watched until `until` (epoch seconds), `seconds` long;
    `baseline`: the pre-deploy numbers it is judged against, in words ("" when there were none)."""

    until: float
    seconds: float
    baseline: str = ""
    kind: ClassVar[str] = "verification_started"
    alert: ClassVar[str] = "verification"


@dataclass(frozen=True)
class VerificationRegressed(DomainEvent):
    """The live version got worse than the pre-deploy baseline during verification (`reason`: the failed
    measurement's reasons); `rollback`: the id of the rollback the bot started by itself
    (rollback_during_verify, the old slot still warm), 0 when a person decides (the Roll back now
    button)."""

    reason: str
    version: str | None = None
    rollback: int = 0
    kind: ClassVar[str] = "verification_regressed"
    alert: ClassVar[str] = "verification_regressed"
    base_level: ClassVar[Level] = "critical"


@dataclass(frozen=True)
class Verified(DomainEvent):
    """A quiet verification: `passed` of `total` measurements passed over `seconds`."""

    seconds: float
    passed: int
    total: int
    kind: ClassVar[str] = "verified"
    alert: ClassVar[str] = "verification"


@dataclass(frozen=True)
class VerificationEnded(DomainEvent):
    """A verification ended without a verdict on the version: `outcome` "inconclusive" (no measurement
    passed; `reason` says why — a warning) or "superseded" (deployment `by` replaced it)."""

    outcome: str
    reason: str = ""
    by: int = 0
    kind: ClassVar[str] = "verification_ended"
    alert: ClassVar[str] = "verification"

    def level(self) -> Level:
        return "warning" if self.outcome == "inconclusive" else "info"

    def alert_event(self) -> str:
        return "verification_inconclusive" if self.outcome == "inconclusive" else "verification"


@dataclass(frozen=True)
class FeedbackAsked(DomainEvent):
    """The deployment's thread asks its requester `requester` how it went (Smooth / Had issues)."""

    requester: str
    kind: ClassVar[str] = "feedback_asked"
    alert: ClassVar[str] = "detail"


@dataclass(frozen=True)
class FeedbackGiven(DomainEvent):
    """`by` answered how it went: `answer` one of ANSWERS."""

    by: str
    answer: str
    kind: ClassVar[str] = "feedback_given"
    alert: ClassVar[str] = "detail"


@dataclass(frozen=True)
class NoteAdded(DomainEvent):
    """`by` wrote a note on the deployment (`text`, their words; escaped where shown)."""

    by: str
    text: str
    kind: ClassVar[str] = "note_added"
    alert: ClassVar[str] = "detail"


VERIFICATION_EVENTS = (
    VerificationStarted,
    VerificationRegressed,
    Verified,
    VerificationEnded,
    FeedbackAsked,
    FeedbackGiven,
    NoteAdded,
)
EVENT_TYPES.update({cls.kind: cls for cls in VERIFICATION_EVENTS})  # the store's outbox imports this module
