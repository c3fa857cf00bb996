"""What each domain event (bot.domain.events) says in Slack: one function per event kind, each returning
the mrkdwn line for the deployment's thread (and its alert). The events carry facts; the wording lives
here. Text a person typed (a reason, a question's answer) is escaped with bot.domain.mrkdwn; the bot's own
words (a step's report, a failure reason) are passed as they are, as before."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from bot.domain import events as ev
from bot.domain.analysis_events import AnalysisPassed
from bot.domain.durations import duration
from bot.domain.model import Deployment
from bot.domain.mrkdwn import code, text
from bot.domain.windows import format_when
from handlers.ui.blocks import outcome_text

E = TypeVar("E", bound=ev.DomainEvent)
_LINES: dict[type[ev.DomainEvent], Callable[[Any, Deployment], str]] = {}

# Events that only add a line to the thread: the deployment's message does not change.
THREAD_ONLY: tuple[type[ev.DomainEvent], ...] = (
    ev.Detail, ev.Approved, ev.Amended, ev.RestartResumed, ev.PagingFailing, ev.PagingRestored,
    ev.FlagChanged, AnalysisPassed,
)  # fmt: skip


def _says(cls: type[E]) -> Callable[[Callable[[E, Deployment], str]], Callable[[E, Deployment], str]]:
    def register(fn: Callable[[E, Deployment], str]) -> Callable[[E, Deployment], str]:
        _LINES[cls] = fn
        return fn

    return register


def line(event: ev.DomainEvent, d: Deployment) -> str | None:
    """The event's line for the thread of deployment `d` (and for its alert); None: it only changes what
    the deployment's message shows."""
    say = _LINES.get(type(event))
    return say(event, d) if say is not None else None


def live(event: ev.DomainEvent) -> str | None:
    """The running step's live line on the message, when the event sets one."""
    if isinstance(event, ev.StepStarted):
        return ("Rollback: " if event.rollback else "") + event.description
    if isinstance(event, ev.Progress):
        return event.text
    return None


def thread_only(event: ev.DomainEvent) -> bool:
    return isinstance(event, THREAD_ONLY)


STATE_OF = {ev.Requested: "requested", ev.Scheduled: "scheduled", ev.Started: "running"}


def headline(event: ev.DomainEvent, d: Deployment) -> str:
    """What an info channel shows of the event: its line, the state it put the deployment in, or the step
    it reached."""
    step = live(event)
    if step is not None:
        index = event.index if isinstance(event, ev.StepStarted) else d.step_index
        return f"Step {index + 1}/{len(d.plan)}: {step}"
    return line(event, d) or STATE_OF.get(type(event)) or d.state.word


# ------------------------------------------------------------------------------------ before start


@_says(ev.EmergencyRequested)
def _emergency(e: ev.EmergencyRequested, d: Deployment) -> str:
    what = "rollback" if e.rollback else "deploy"
    return (
        f":rotating_light: Emergency {what} by <@{e.by}>: {text(e.reason)}. "
        "Manual items and approvals are skipped."
    )


@_says(ev.SnapshotRestoring)
def _restoring(e: ev.SnapshotRestoring, d: Deployment) -> str:
    return (
        f":rotating_light: <@{e.by}> broke glass: snapshot {code(e.snapshot)} is being restored to a new "
        f"database instance {code(e.instance)}: {text(e.reason)}. The old instance is untouched; the outcome "
        "follows in this thread."
    )


@_says(ev.MigrationUndoFailed)
def _undo_failed(e: ev.MigrationUndoFailed, d: Deployment) -> str:
    restore = (
        f" Snapshot {code(e.snapshot)} holds the data from before it: `/deploy restore {d.id} REASON` restores"
        " it to a new instance."
        if e.snapshot
        else ""
    )
    return f":rotating_light: Traffic is back, but undoing the migration failed: {text(e.reason)}.{restore}"


@_says(ev.FreezeOverridden)
def _freeze_override(e: ev.FreezeOverridden, d: Deployment) -> str:
    return f":rotating_light: Freeze override by <@{e.by}>: {text(e.reason or e.freeze_reason)}"


@_says(ev.Amended)
def _amended(e: ev.Amended, d: Deployment) -> str:
    return (
        f"<@{e.by}> changed it to {text(e.version) or 'the current version'} with {e.strategy}; "
        "approvals given so far no longer count."
    )


@_says(ev.Approved)
def _approved(e: ev.Approved, d: Deployment) -> str:
    return f"Approved by <@{e.by}>"


@_says(ev.Rejected)
def _rejected(e: ev.Rejected, d: Deployment) -> str:
    return f"Rejected by <@{e.by}>: {text(e.reason)}"


@_says(ev.Refused)
def _refused(e: ev.Refused, d: Deployment) -> str:
    return e.reason


@_says(ev.WindowMissed)
def _window_missed(e: ev.WindowMissed, d: Deployment) -> str:
    if e.moved_to is None:
        return f"Skipped: {e.why}; no later window to move it to"
    return f":warning: Skipped: {e.why}. Moved to {format_when(datetime.fromisoformat(e.moved_to), e.tz)}."


# ------------------------------------------------------------------------------------------ running


@_says(ev.Detail)
def _detail(e: ev.Detail, d: Deployment) -> str:
    return e.text


@_says(ev.RestartResumed)
def _restart(e: ev.RestartResumed, d: Deployment) -> str:
    return f"Bot restarted; carrying on from step {e.step_index + 1}."


@_says(ev.SlowRollout)
def _slow(e: ev.SlowRollout, d: Deployment) -> str:
    return e.detail


@_says(ev.Paused)
def _paused(e: ev.Paused, d: Deployment) -> str:
    return f"Paused by <@{e.by}>" if e.by else f":raised_hand: Paused: {e.question}"


@_says(ev.Resumed)
def _resumed(e: ev.Resumed, d: Deployment) -> str:
    return f"Resumed by <@{e.by}>"


@_says(ev.Promoted)
def _promoted(e: ev.Promoted, d: Deployment) -> str:
    return f"Promoted by <@{e.by}>" + (" to 100%" if e.full else "")


# ------------------------------------------------------------------------------------------- endings


@_says(ev.Cancelled)
def _cancelled(e: ev.Cancelled, d: Deployment) -> str:
    return f"Cancelled by <@{e.by}>"


@_says(ev.Aborted)
def _aborted(e: ev.Aborted, d: Deployment) -> str:
    return f"Aborted by <@{e.by}>; rolling back"


@_says(ev.Succeeded)
def _succeeded(e: ev.Succeeded, d: Deployment) -> str:
    if d.strategy == "flag":
        return flag_done(d)
    return f"{d.service} {e.version if e.version is not None else d.version} is live in {d.env}"


@_says(ev.RollingBack)
def _rolling_back(e: ev.RollingBack, d: Deployment) -> str:
    return f"Rolling back: {e.reason}"


@_says(ev.RolledBack)
def _rolled_back(e: ev.RolledBack, d: Deployment) -> str:
    why = outcome_text(d, e.reason)
    if not e.changed:
        return f"{why}; nothing had changed yet"
    return f"{why}; back on {e.back_on or 'the previous version'}"


@_says(ev.RollbackFailed)
def _rollback_failed(e: ev.RollbackFailed, d: Deployment) -> str:
    return f"rollback failed: {e.reason} (after: {e.after})"


@_says(ev.RollbackStuck)
def _rollback_stuck(e: ev.RollbackStuck, d: Deployment) -> str:
    step = f" at “{e.step}”" if e.step else ""
    return (
        f"rollback failing{step}: {e.reason} (after: {e.after}). Traffic is not yet whole on the stable "
        f"side, so the bot keeps trying (next in {duration(e.retry_seconds)}) and holds the lock. "
        "On the deployment's message, *Retry now* tries at once and *All traffic to stable* moves all "
        "the traffic back in one change."
    )


@_says(ev.RollbackRetried)
def _rollback_retried(e: ev.RollbackRetried, d: Deployment) -> str:
    if e.by:
        return f"<@{e.by}> asked to retry the rollback now"
    return f"The rollback got through after {e.attempts} failed {'try' if e.attempts == 1 else 'tries'}"


@_says(ev.TrafficForced)
def _traffic_forced(e: ev.TrafficForced, d: Deployment) -> str:
    return (
        f"<@{e.by}> sent all traffic to {e.slot}, which runs {text(e.version)} "
        f"({e.running} of {e.desired} tasks running); the rollback carries on from there"
    )


@_says(ev.TrafficRepaired)
def _traffic_repaired(e: ev.TrafficRepaired, d: Deployment) -> str:
    return (
        f"Traffic was split ({e.was}): all of it now goes to {e.slot}, which runs {text(e.version)}, the last "
        f"version known good in {d.env}"
    )


@_says(ev.DeployFailed)
def _deploy_failed(e: ev.DeployFailed, d: Deployment) -> str:
    return f"{e.reason} (nothing was changed)" if e.nothing_changed else e.reason


# ------------------------------------------------------------------------------------------- paging

PAGE_WORDS = {"trigger": "trigger", "acknowledge": "acknowledgement", "resolve": "resolution"}


@_says(ev.PagingFailing)
def _paging_failing(e: ev.PagingFailing, d: Deployment) -> str:
    what = PAGE_WORDS.get(e.action, e.action)
    # the problem may quote a server's error page: escaped, never markup
    if e.refused:
        return (
            f":warning: PagerDuty paging is failing: PagerDuty rejected this incident's {what} "
            f"({text(e.problem)}). It is not retried; on-call is not paged about it."
        )
    return (
        f":warning: PagerDuty paging is failing: this incident's {what} has not been delivered for "
        f"{duration(e.seconds)} ({text(e.problem)}). Still trying; page on-call another way meanwhile."
    )


@_says(ev.PagingRestored)
def _paging_restored(e: ev.PagingRestored, d: Deployment) -> str:
    sent = ", ".join(PAGE_WORDS.get(a, a) for a in e.delivered.split()) or "nothing"
    return f"PagerDuty paging works again: delivered {sent} ({duration(e.seconds)} after the trouble began)."


# ------------------------------------------------------------------------------------ feature flags


def flag_done(d: Deployment) -> str:
    key = text(d.service.removeprefix("flag:"))
    if d.kind == "flag_change":
        summary = d.plan[-1].get("summary") if d.plan else None
        return f"{key} in {d.env}: {text(summary or 'changed as approved')}"
    return f"{key} is on ({text(d.version)}) for everyone in {d.env}"


@_says(ev.FlagChanged)
def _flag_changed(e: ev.FlagChanged, d: Deployment) -> str:
    who = "" if e.by == "deploybot" else f" by <@{e.by}>"
    return f"{text(e.flag)} in {e.env}{who}: {text(e.summary)}"


@_says(ev.FlagKilled)
def _flag_killed(e: ev.FlagKilled, d: Deployment) -> str:
    return flag_killed_text(e)


def flag_killed_text(e: ev.FlagKilled) -> str:
    why = f": {text(e.reason)}" if e.reason else ""
    stopped = f"; rollout #{e.rollout} stopped" if e.rollout else ""
    return (
        f":octagonal_sign: Kill switch: <@{e.by}> turned {text(e.flag)} off for everyone in {e.env}{why}"
        f"{stopped}"
    )


def flag_notice(event: ev.DomainEvent) -> str | None:
    """A flag event's words when it belongs to no deployment (a person's change, the kill switch)."""
    if isinstance(event, ev.FlagKilled):
        return flag_killed_text(event)
    if isinstance(event, ev.FlagChanged):
        return f":triangular_flag_on_post: <@{event.by}> changed {text(event.flag)} in {event.env}: {text(event.summary)}"
    return None
