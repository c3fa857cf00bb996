"""What follows a success, in Slack: the verification's lines and its status on the deployment's message,
the Roll back now button of a regression alert, the "How did it go?" question and its modal, and the
answers to those clicks and to /deploy note. Pure, no I/O; people's words are escaped (bot.domain.mrkdwn).
The event lines register with handlers.ui.event_text (the notifier imports this module)."""

from __future__ import annotations

from typing import Any

from bot.domain.durations import duration
from bot.domain.model import Deployment
from bot.domain.verification import (
    NOTE_MAX,
    FeedbackGiven,
    NoteAdded,
    VerificationEnded,
    VerificationRegressed,
    VerificationStarted,
    Verified,
)
from handlers.ui import event_text
from handlers.ui.blocks import at_time, clip, context, ephemeral, section, text, title

SMOOTH = "aftercare:smooth"  # the question's buttons; value = the deployment's id
HAD_ISSUES = "aftercare:had_issues"
ROLLBACK_NOW = "aftercare:rollback"  # on a regression alert; value = the deployment's id
NOTE_VIEW = "aftercare:note"  # the modal's callback_id; private_metadata = the deployment's id
NOTE_BLOCK, NOTE_INPUT = "note", "text"
REJECT_VIEW = "approval:reject_reason"  # the Reject button's modal; private_metadata = the deployment's id
REASON_BLOCK, REASON_INPUT = "reason", "text"
ANSWER_WORDS = {"smooth": "Smooth", "had_issues": "Had issues"}
REGRESSION_ALERT = "verification_regressed"


# ------------------------------------------------------------------------------------ event lines


@event_text._says(VerificationStarted)
def _started(e: VerificationStarted, d: Deployment) -> str:
    against = (
        f"the pre-deploy baseline ({e.baseline})"
        if e.baseline
        else "absolute thresholds (no pre-deploy data)"
    )
    return (
        f":eyes: Verifying: the live version is watched until {at_time(e.until)} ({duration(e.seconds)}), "
        f"judged against {against}"
    )


@event_text._says(VerificationRegressed)
def _regressed(e: VerificationRegressed, d: Deployment) -> str:
    what = f"{d.service} {text(e.version) or 'the live version'} in {d.env}"
    then = (
        f" Rolling back by itself: rollback #{e.rollback} (the old slot was still warm)."
        if e.rollback
        else f" *Roll back now* on the alert, or `/rollback {d.service} in {d.env}`."
    )
    return f":rotating_light: {what} regressed during verification: {e.reason}.{then}"


@event_text._says(Verified)
def _verified(e: Verified, d: Deployment) -> str:
    return (
        f":white_check_mark: Verified: {e.passed} of {e.total} measurements passed over "
        f"{duration(e.seconds)} after the deploy"
    )


@event_text._says(VerificationEnded)
def _ended(e: VerificationEnded, d: Deployment) -> str:
    if e.outcome == "superseded":
        return f"Verification ended: deployment #{e.by} of {d.service} in {d.env} took over"
    return f":warning: Verification inconclusive — not verified: no measurement passed ({e.reason})"


@event_text._says(FeedbackGiven)
def _feedback(e: FeedbackGiven, d: Deployment) -> str:
    return f"<@{e.by}> says it went: *{ANSWER_WORDS.get(e.answer, text(e.answer))}*"


@event_text._says(NoteAdded)
def _note(e: NoteAdded, d: Deployment) -> str:
    return f":memo: Note by <@{e.by}>: {text(e.text, NOTE_MAX)}"


# --------------------------------------------------------------------------------- on the message

STATUS = {
    "verified": ":white_check_mark: Verified after the deploy",
    "regressed": ":rotating_light: Regressed during verification",
    "inconclusive": ":warning: Verification inconclusive (not verified)",
    "superseded": "Verification ended: a newer deployment took over",
}


def status(d: Deployment) -> list[dict[str, Any]]:
    """The verification's line on the deployment's message: watched until when, or how it ended."""
    v = d.context.get("verification")
    if not isinstance(v, dict) or "until" not in v:
        return []
    outcome = v.get("outcome")
    if outcome in STATUS:
        return [context(STATUS[outcome])]
    return [context(f":eyes: Verifying the live version until {at_time(float(v['until']))}")]


def after_success(env: Any) -> list[str]:
    """What a dry run lists after the plan: the verification (not part of the deployment's time)."""
    if not env.verify_seconds:
        return []
    then = (
        "rolls back by itself (the old slot is kept warm until it ends)"
        if env.rollback_during_verify
        else "raises a critical alert with Roll back now"
    )
    return [
        f"After success: verify the live version for {duration(env.verify_seconds)} against the pre-deploy "
        f"baseline; a regression {then}"
    ]


# --------------------------------------------------------------------------------- the question


def question(d: Deployment, requester: str) -> tuple[str, list[dict[str, Any]]]:
    words = f"How did it go, <@{requester}>? ({title(d)})"
    buttons = [
        _button(SMOOTH, "Smooth", d.id, "primary"),
        _button(HAD_ISSUES, "Had issues", d.id, None),
    ]
    return words, [section(words), {"type": "actions", "block_id": f"feedback-{d.id}", "elements": buttons}]


def answered(d: Deployment, by: str, answer: str) -> dict[str, Any]:
    """The question as it reads once answered (no buttons): replaces it in place."""
    words = f"How did it go? <@{by}> answered *{ANSWER_WORDS.get(answer, text(answer))}* ({title(d)})"
    return {"replace_original": True, "text": words, "blocks": [section(words)]}


def already_answered(by: str | None, answer: str | None) -> dict[str, Any]:
    return ephemeral(
        f"<@{by}> answered *{ANSWER_WORDS.get(answer or '', text(answer))}* already; nothing was changed."
        " Add more with `/deploy note ID TEXT`."
    )


def note_modal(d: Deployment) -> dict[str, Any]:
    """The Had issues modal: one note, recorded in the deployment's audit."""
    return {
        "type": "modal",
        "callback_id": NOTE_VIEW,
        "private_metadata": str(d.id),
        "title": {"type": "plain_text", "text": "What went wrong?"},
        "submit": {"type": "plain_text", "text": "Add note"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(f"A note on {clip(title(d), 200)}, kept in its audit (`/deploy audit {d.id}`)."),
            {
                "type": "input",
                "block_id": NOTE_BLOCK,
                "label": {"type": "plain_text", "text": "What happened?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": NOTE_INPUT,
                    "multiline": True,
                    "max_length": NOTE_MAX,
                },
            },
        ],
    }


def reason_modal(d: Deployment) -> dict[str, Any]:
    """Reject, started from the button: why (kept in the audit, shown on the message)."""
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": str(d.id),
        "title": {"type": "plain_text", "text": f"Reject {d.ref}"[:24]},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(f"{clip(title(d), 200)} will be cancelled; the reason is kept in its audit trail."),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Why do you reject it?"},
                "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "max_length": 500},
            },
        ],
    }


def noted(d: Deployment) -> dict[str, Any]:
    return ephemeral(f":memo: Noted on {d.ref}; it is in `/deploy audit {d.id}` and the deployment's thread.")


# ------------------------------------------------------------------------------ the alert button


def rollback_button(deployment_id: int) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": f"verify-rollback-{deployment_id}",
        "elements": [_button(ROLLBACK_NOW, "Roll back now", deployment_id, "danger")],
    }


def rolling_back(rollback: Deployment) -> dict[str, Any]:
    back_to = text(rollback.version) or "the previous version"
    return ephemeral(
        f"Rolling back: {rollback.ref} takes {rollback.service} in {rollback.env} back to {back_to} "
        f"(requested by <@{rollback.requested_by}>)."
    )


def summary(outcome: str | None, notes: int, feedback: str | None) -> str:
    """A deployment's aftercare in a list (/deploy history): verification, answer, notes."""
    parts = []
    if outcome:
        parts.append({"watching": "verifying"}.get(outcome, outcome))
    if feedback:
        parts.append(ANSWER_WORDS.get(feedback, feedback).lower())
    if notes:
        parts.append(f"{notes} note{'s' if notes != 1 else ''}")
    return f" · {', '.join(parts)}" if parts else ""


def _button(action_id: str, label: str, deployment_id: int, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": str(deployment_id),
        "text": {"type": "plain_text", "text": label},
    }
    if style:
        button["style"] = style
    return button
