"""The pipeline's message and thread lines (handlers/ui/pipeline_blocks.py): the stages in a row, each
deployment linked, what a running stage is at; a stage's detail (a task's log lines, a deployment's
outcome) shown escaped, never as markup; and blocks Slack accepts (the sandbox's validator)."""

from __future__ import annotations

from dataclasses import replace

from bot.domain.machine import State
from bot.domain.model import Deployment
from bot.domain.pipelines import (
    Pipeline,
    PipelineEnded,
    PipelineStageChanged,
    PipelineStarted,
    Stage,
)
from bot.sandbox.slack import block_errors
from handlers.ui import pipeline_blocks as ui

HOSTILE = "<!channel> <https://evil.example|click> & <@U0BOB>"


def pipeline(*stages: Stage, state: str = "running", reason: str | None = None) -> Pipeline:
    return Pipeline(7, "release", "web", "v4", "U0ALICE", state, stages, reason=reason, created_at="now")


def deployment(id_: int, env: str, state: State, **extra) -> Deployment:
    return Deployment(
        id=id_, service="web", env=env, version="v4", previous_version=None, strategy="rolling",
        kind="deploy", requested_by="U0ALICE", reason=None, state=state, step_index=0, plan=[],
        context=extra.pop("context", {}), channel="C1", message_ts="1.1", outcome=None,
        created_at="now", updated_at=None, finished_at=None, **extra,
    )  # fmt: skip


def test_the_stages_in_a_row_each_deployment_linked_and_what_production_waits_for():
    p = pipeline(
        Stage("deploy", "staging", "succeeded", deployment_id=12),
        Stage("tests", "staging", "succeeded", task="arn:task/abc"),
        Stage("deploy", "production", "running", deployment_id=13),
    )
    waiting = {"gate": {"waiting_for": "1 approval"}}
    ds = {13: deployment(13, "production", State.AWAITING_APPROVAL, context=waiting)}
    line = ui.stages_line(p, ds, {12: "https://slack/p12", 13: "https://slack/p13"})
    assert line == (
        "✓ staging (<https://slack/p12|#12>) · ✓ integration tests · "
        "⏳ production (<https://slack/p13|#13>) — waiting for 1 approval"
    )
    blocks = ui.pipeline_blocks(p, ds, {})
    assert block_errors(blocks) == []
    assert ui.pipeline_text(p) == "Pipeline #7 · web v4 · staging → production: running"


def test_a_failed_stages_log_lines_are_shown_escaped_line_by_line():
    detail = f"the integration tests in staging failed: task abc exited with code 1; its last log lines:\n{HOSTILE}\nbye"
    p = pipeline(
        Stage("deploy", "staging", "succeeded", deployment_id=12),
        Stage("tests", "staging", "failed", task="arn:task/abc", detail=detail),
        Stage("deploy", "production"),
        state="failed",
        reason=detail,
    )
    blocks = ui.pipeline_blocks(p, {}, {})
    assert block_errors(blocks) == []
    shown = "".join(b.get("text", {}).get("text", "") for b in blocks)
    assert "<!channel>" not in shown and "<https://evil" not in shown and "<@U0BOB>" not in shown
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; &lt;@U0BOB&gt;\nbye```" in shown
    assert "○ production" in shown and "Nothing after it is requested." in shown
    said = ui.thread_line(PipelineStageChanged(7, 1, "failed"), p)
    assert said == (
        "✗ integration tests: the integration tests in staging failed: task abc exited with code 1 "
        "(its last log lines are on the pipeline's message)"
    )


def test_a_rejected_deployment_is_told_as_its_own_message_tells_it():
    p = pipeline(
        Stage("deploy", "staging", "succeeded", deployment_id=12),
        Stage("deploy", "production", "failed", deployment_id=13, detail="rejected"),
        state="failed",
    )
    d = replace(
        deployment(13, "production", State.CANCELLED),
        outcome=f"rejected: {HOSTILE}",
        context={"stopped_by": {"how": "rejected", "by": "U0BOB"}},
    )
    why = ui.failure_text(p, {13: d}, {})
    assert why.startswith(
        "the deployment to production (#13) cancelled: rejected by <@U0BOB>: &lt;!channel&gt;"
    )


def test_thread_lines_say_each_move_once():
    p = pipeline(
        Stage("deploy", "staging", "succeeded", deployment_id=12, detail="web v4 is live in staging"),
        Stage("tests", "staging", "running", task="arn:aws:ecs:task/c/abc"),
        Stage("deploy", "production", "running", deployment_id=13),
    )
    assert ui.thread_line(PipelineStarted(7), p) == (
        "Pipeline #7: web v4 through staging → production; deployment #12 to staging requested."
    )
    assert (
        ui.thread_line(PipelineStageChanged(7, 0, "succeeded"), p) == "✓ staging: web v4 is live in staging"
    )
    assert ui.thread_line(PipelineStageChanged(7, 1, "running"), p) is None  # entered: the message shows it
    started = PipelineStageChanged(7, 1, "running", "arn:aws:ecs:task/c/abc")
    assert ui.thread_line(started, p) == "⏳ integration tests: task abc started."
    assert ui.thread_line(PipelineStageChanged(7, 2, "running"), p) == (
        "⏳ production: deployment #13 requested, through production's gate."
    )
    assert ui.thread_line(PipelineEnded(7, True), p) is None
