"""What a pipeline says in Slack: its one message (the stages in a row — ✓ staging · ✓ integration tests ·
⏳ production — waiting for 1 approval — each deployment linked to its own message), the lines of its
thread, the answer to `/deploy ... --pipeline` and its lines in `/deploy status`. Pure builders, no I/O.

A stage's `detail` and a pipeline's `reason` are the bot's words about the world — a deployment's outcome,
a task's last log lines — so they are escaped here like user text (bot.domain.mrkdwn): a log line can
carry no mention or link into Slack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.domain.machine import State
from bot.domain.model import Deployment
from bot.domain.mrkdwn import text
from bot.domain.pipelines import (
    DEPLOY,
    FAILED,
    RUNNING,
    SUCCEEDED,
    Pipeline,
    PipelineEnded,
    PipelineStageChanged,
    PipelineStarted,
    Stage,
)
from handlers.ui.blocks import MAX_TEXT, clip, context, ephemeral, outcome_text, section

MARK = {SUCCEEDED: "✓", FAILED: "✗", RUNNING: "⏳"}
PENDING_MARK = "○"
STATE_WORDS = {RUNNING: "running", SUCCEEDED: "succeeded", FAILED: "stopped"}
LOG_LINE = 300  # characters of one log line shown


def _short(task: str) -> str:
    return task.rsplit("/", 1)[-1]


def stage_name(p: Pipeline, stage: Stage) -> str:
    if stage.kind == DEPLOY:
        return stage.env
    tested = [s for s in p.stages if s.kind != DEPLOY]
    return "integration tests" if len(tested) == 1 else f"integration tests in {stage.env}"


def _ref(stage: Stage, links: Mapping[int, str]) -> str:
    if stage.deployment_id is None:
        return ""
    link = links.get(stage.deployment_id)
    return f" (<{link}|#{stage.deployment_id}>)" if link else f" (#{stage.deployment_id})"


def _now(stage: Stage, d: Deployment | None) -> str:
    """What a running stage is at, in a few words."""
    if stage.kind != DEPLOY:
        return f"task {_short(stage.task)} running" if stage.task else "starting"
    if d is None:
        return "requested"
    gate = d.context.get("gate") or {}
    if d.state == State.AWAITING_APPROVAL and gate.get("waiting_for"):
        return f"waiting for {text(gate['waiting_for'])}"
    if d.state == State.SCHEDULED:
        return "scheduled for its window"
    if d.state in (State.RUNNING, State.PAUSED, State.ROLLING_BACK) and d.plan:
        return f"{d.state.word} (step {min(d.step_index + 1, len(d.plan))}/{len(d.plan)})"
    return d.state.word


def stages_line(p: Pipeline, deployments: Mapping[int, Deployment], links: Mapping[int, str]) -> str:
    parts = []
    for stage in p.stages:
        mark = MARK.get(stage.state, PENDING_MARK)
        part = f"{mark} {stage_name(p, stage)}{_ref(stage, links)}"
        if stage.state == RUNNING:
            d = deployments.get(stage.deployment_id) if stage.deployment_id is not None else None
            part += f" — {_now(stage, d)}"
        parts.append(part)
    return " · ".join(parts)


def title(p: Pipeline) -> str:
    return f"Pipeline #{p.id} · {p.service} {text(p.version)} · {' → '.join(p.environments)}"


def pipeline_text(p: Pipeline) -> str:
    """The notification fallback text."""
    return f"{title(p)}: {STATE_WORDS.get(p.state, p.state)}"


def failure_text(p: Pipeline, deployments: Mapping[int, Deployment], links: Mapping[int, str]) -> str:
    """Why it stopped: a deployment's outcome as its own message says it, else the bot's words (a
    task's log lines kept as lines, each escaped)."""
    stage = next((s for s in p.stages if s.state == FAILED), None)
    if stage is None:
        return text(p.reason or "it stopped")
    d = deployments.get(stage.deployment_id) if stage.deployment_id is not None else None
    if stage.kind == DEPLOY and d is not None and d.state.terminal and d.state != State.SUCCEEDED:
        return f"the deployment to {stage.env}{_ref(stage, links)} {d.state.word}: {outcome_text(d)}"
    head, _, tail = (stage.detail or p.reason or "it stopped").partition("\n")
    lines = [text(line, LOG_LINE) for line in tail.splitlines()]
    return text(head) + (("\n```" + "\n".join(lines) + "```") if lines else "")


def pipeline_blocks(
    p: Pipeline, deployments: Mapping[int, Deployment], links: Mapping[int, str]
) -> list[dict[str, Any]]:
    state = STATE_WORDS.get(p.state, p.state)
    blocks = [
        section(f"{MARK.get(p.state, '')} *{title(p)}* — *{state}*"),
        section(clip(stages_line(p, deployments, links))),
        context(f"Requested by <@{p.requested_by}> · pipeline {text(p.name)}"),
    ]
    if p.state == FAILED:
        why = failure_text(p, deployments, links)
        blocks.append(section(clip(f"*Stopped:* {why}\nNothing after it is requested.", MAX_TEXT)))
    elif p.state == SUCCEEDED:
        blocks.append(section(f"*Done:* {p.service} {text(p.version)} is live in {p.environments[-1]}."))
    return blocks


def thread_line(event: Any, p: Pipeline) -> str | None:
    """The thread's line for one of the pipeline's events (None: it only changes the message)."""
    if isinstance(event, PipelineStarted):
        first = p.stages[0]
        return (
            f"Pipeline #{p.id}: {p.service} {text(p.version)} through {' → '.join(p.environments)}; "
            f"deployment #{first.deployment_id} to {first.env} requested."
        )
    if isinstance(event, PipelineEnded):
        return None  # the stage that ended it said it; the message shows the end
    if not isinstance(event, PipelineStageChanged) or event.stage >= len(p.stages):
        return None
    stage = p.stages[event.stage]
    name = stage_name(p, stage)
    if event.state == RUNNING:
        if stage.kind == DEPLOY:
            return f"⏳ {name}: deployment #{stage.deployment_id} requested, through {stage.env}'s gate."
        return f"⏳ {name}: task {_short(event.task)} started." if event.task else None
    if event.state == SUCCEEDED:
        return f"✓ {name}" + (f": {text(stage.detail)}" if stage.detail else "")
    if event.state == FAILED:
        head, _, tail = (stage.detail or "failed").partition("\n")
        more = " (its last log lines are on the pipeline's message)" if tail else ""
        return f"✗ {name}: {text(head.removesuffix('; its last log lines:'))}{more}"
    return None


def requested(p: Pipeline, d: Deployment) -> dict[str, Any]:
    """The answer to `/deploy ... --pipeline`."""
    return ephemeral(
        f"Pipeline #{p.id} requested: {p.service} {text(p.version)} through {' → '.join(p.environments)}. "
        f"Deployment {d.ref} to {d.env} first; its message and the pipeline's follow in the channel."
    )


def pipeline_lines(pipelines: list[Pipeline], deployments: Mapping[int, Deployment]) -> list[str]:
    """Running pipelines in `/deploy status`, one line each."""
    return [f"{title(p)}: {stages_line(p, deployments, {})}" for p in pipelines]
