"""The escaping helpers (bot.domain.mrkdwn, re-exported by handlers.ui.blocks) and the builders fed hostile text, plus the
wording issue 9 asks for: no user text becomes Slack markup, and every answer reads true."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from bot.app.access import ACTION_WORDS
from bot.domain import commands as cmds
from bot.domain import events as ev
from bot.domain.analysis import Analysis, AnalysisConfig, GroupMetrics, Measurement, judge, passed_text
from bot.domain.machine import State
from bot.domain.model import Deployment, Event, LockInfo
from bot.domain.mrkdwn import BACKTICK_LOOKALIKE, code, plain, text
from bot.domain.windows import Freeze, format_when
from handlers.ui import alert_blocks, audit_blocks, event_text
from handlers.ui import blocks as slack_ui
from handlers.ui.home import home_view

LIVE = re.compile(r"<(!|@|#|http|mailto)[^>]*>")
HOSTILE = [
    "<!channel>",
    "<!here> <!everyone>",
    "<@U123> and <#C123>",
    "<!subteam^S1|@all-hands>",
    "<http://evil.example/login|docs>",
    "<mailto:a@evil.example|mail>",
    "&lt;!channel&gt;",
    "`` `<!here>` ``",
    "line one\n• fake bullet <!channel>\r\n\x00\x07\x1b[31m\u202eevil",
    "x" * 10_240 + "<!here>",
]
OWN = re.compile(
    r"<@U0[A-Z]+>|<!date\^\d+\^[^|<>]*\|[^<>]*>|<!subteam\^S0ONCALL>|<#C0DEPLOYS>|<https://slack/[^|]*\|[^>]*>"
)


def live(node) -> list[str]:
    out = []
    for s in _strings(node):
        out += [m.group(0) for m in LIVE.finditer(s) if not OWN.fullmatch(m.group(0))]
    return out


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def deployment(**kw) -> Deployment:
    base = dict(
        id=7,
        service="web",
        env="production",
        version="v2",
        previous_version="v1",
        strategy="canary",
        kind="deploy",
        requested_by="U0ALICE",
        reason=None,
        state=State.AWAITING_APPROVAL,
        step_index=0,
        plan=[{"kind": "set_weights"}],
        context={},
        channel="C0DEPLOYS",
        message_ts="1.2",
        outcome=None,
        created_at="2026-12-01T10:00:00+00:00",
        updated_at=None,
        finished_at=None,
    )
    return Deployment(**{**base, **kw})


# ------------------------------------------------------------------------------------------- the helpers


@pytest.mark.parametrize("hostile", HOSTILE)
def test_text_leaves_no_markup_no_control_character_and_fits(hostile):
    shown = text(hostile)
    assert "<" not in shown and ">" not in shown
    assert not any(c in shown for c in "\n\r\x00\x07\x1b\u202e")
    assert len(shown.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")) <= 500


def test_text_escapes_as_slack_documents_and_keeps_the_words():
    assert text("a<b & c>d") == "a&lt;b &amp; c&gt;d"
    assert text("&lt;!channel&gt;") == "&amp;lt;!channel&amp;gt;"  # shown literally, as typed
    assert text("two\nlines\tand  spaces") == "two lines and spaces"
    assert text(None) == "" and text("x" * 20, 10) == "x" * 9 + "…"


def test_code_is_one_span_a_backtick_cannot_end():
    shown = code("a ` b `<!here>`")
    assert shown.startswith("`") and shown.endswith("`") and shown.count("`") == 2
    assert BACKTICK_LOOKALIKE in shown and "<" not in shown


def test_plain_keeps_the_bot_s_own_mentions_readable_and_carries_no_markup_back():
    summary = plain(
        f"Emergency deploy by <@U0ALICE>: {text('<!channel> now & <http://x|y>')} <!subteam^S0ONCALL>"
    )
    assert summary == "Emergency deploy by @U0ALICE: ‹!channel› now & ‹http://x|y› @S0ONCALL"
    assert plain("at <!date^1796162400^{time}|08:00 UTC>, <https://slack/archives/C1/p1|the message>") == (
        "at 08:00 UTC, the message (https://slack/archives/C1/p1)"
    )


# ------------------------------------------------------------------------------------------ the builders


@pytest.mark.parametrize("hostile", HOSTILE)
def test_every_builder_shows_hostile_text_literally(hostile):
    d = deployment(
        reason=hostile,
        context={
            "emergency": hostile,
            "gate": {
                "items": [
                    {"id": "h", "label": "Health", "kind": "automatic", "done": False, "evidence": hostile}
                ],
                "approvals": [],
                "required": 1,
                "waiting_for": "an approval",
            },
        },
    )
    lock = LockInfo("api", "production", None, "U0BOB", hostile, "2026-12-01T10:00:00")
    event = Event(
        1,
        7,
        "2026-12-01T10:00:00",
        "U0BOB",
        "cancel",
        "awaiting_approval",
        "cancelled",
        {"rejected": hostile, "gate": {"why": [hostile]}},
    )
    built = [
        slack_ui.deployment_blocks(d),
        slack_ui.deployment_text(d),
        audit_blocks.audit(d, [event]),
        slack_ui.locked(lock, None),
        slack_ui.deployment_list("Active", [d], [lock]),
        home_view([d], [lock], [], 1_796_162_400.0, [], {}),
        Freeze(
            "staging", datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC), hostile
        ).describe(),
    ]
    assert live(built) == []
    assert "<@U0ALICE>" in json.dumps(built[0])  # the bot's own mention still works


def test_usage_errors_quote_what_was_typed_escaped_and_inside_unbreakable_code_spans():
    vocab = cmds.Vocabulary(("web", "api"), ("staging", "production"), "staging")
    for typed in [
        "web v2 tos taging --reason '<!channel> `x` <http://x|y>'",
        "status <!here>",
        'web "<@U123>',
    ]:
        with pytest.raises(cmds.CommandError) as err:
            cmds.parse("/deploy", typed, vocab)
        answer = slack_ui.usage_error(err.value.message, err.value.usage)
        assert live(answer) == [], answer
    with pytest.raises(cmds.CommandError) as err:
        cmds.parse("/deploy", "web v2 tos taging --reason 'a`b'", vocab)
    assert f"a{BACKTICK_LOOKALIKE}b" in err.value.message  # the suggestion's code span stays whole


# --------------------------------------------------------------------------------------------- wording


def test_people_s_actions_read_as_words_with_mentions():
    d = deployment()
    said = [event_text.line(e, d) for e in (ev.Paused("", by="U1"), ev.Resumed("U1"), ev.Cancelled("U1"))]
    assert said == ["Paused by <@U1>", "Resumed by <@U1>", "Cancelled by <@U1>"]
    assert ACTION_WORDS["freeze"] == "freeze or unfreeze"
    assert ACTION_WORDS["override_freeze"] == "override a freeze"


def test_blue_green_lines_do_not_say_canary():
    config = AnalysisConfig()
    group = GroupMetrics(requests=1000, errors=200, latency_ms=50)
    blue_green = judge(config, group, None, [], 1_796_162_400.0, "100% after the switch")
    assert "canary" not in blue_green.line() and "on the new version" in blue_green.reasons[0]
    canary = judge(config, group, None, [], 1_796_162_400.0, "canary 25%")
    assert "on the canary" in canary.reasons[0]


def test_passed_counts_read_as_english():
    assert passed_text(1, 1) == "the only measurement passed"
    assert passed_text(3, 3) == "all 3 measurements passed"
    assert passed_text(2, 3) == "2 of 3 measurements passed"
    run = Analysis(AnalysisConfig(), [Measurement(at=1.0, label="canary 5%", verdict="pass")])
    run.finish()
    assert run.reason == "the only measurement passed"


def test_a_rolling_deploy_s_alert_has_no_switch():
    rolling = deployment(strategy="rolling", env="staging")
    _, blocks = alert_blocks.alert(
        rolling, "warning", "2 of 2 targets unhealthy", None, "unhealthy_after_switch"
    )
    assert "after the rollout" in json.dumps(blocks) and "switch" not in json.dumps(blocks)
    assert alert_blocks.alert_title("unhealthy_after_switch", deployment(strategy="blue-green")).endswith(
        "switch"
    )


def test_scheduled_times_show_their_date():
    at = datetime(2026, 12, 1, 1, 0, tzinfo=UTC).timestamp()
    d = deployment(state=State.SCHEDULED, context={"run_at": at})
    shown = json.dumps(slack_ui.deployment_blocks(d)) + json.dumps(slack_ui.schedule_list([d]))
    assert "{date_short_pretty} {time}|Tue 1 Dec 01:00 UTC>" in shown
    assert format_when(datetime(2026, 12, 1, 1, 0, tzinfo=UTC), "Europe/Berlin") == "Tue 1 Dec 02:00 CET"


def test_deploy_help_lists_promote_and_rollback():
    shown = cmds.help_text("/deploy")
    assert (
        "/promote SERVICE from ENV to ENV" in shown
        and "/promote ID" in shown
        and "/rollback SERVICE" in shown
    )


def test_the_audit_shows_readable_key_value_lines_not_python_dicts():
    d = deployment()
    events = [
        Event(
            1,
            7,
            "2026-12-01T10:00:00",
            "deploybot",
            "schedule",
            "requested",
            "scheduled",
            {"run_at": 1_796_162_400},
        ),
        Event(
            2,
            7,
            "2026-12-01T10:01:00",
            "U0BOB",
            "promote",
            "paused",
            "running",
            {"full": True, "gate": {"waiting_for": "bob"}},
        ),
    ]
    shown = audit_blocks.audit(d, events)["text"]
    assert (
        "{" not in shown.replace("{date_short_pretty} {time}", "").replace("{time}", "") and "=" not in shown
    )
    assert "run at: <!date^1796162400^" in shown and "full: yes" in shown and "gate.waiting for: bob" in shown
    assert "the bot *schedule*" in shown and "<@U0BOB> *promote*" in shown


def test_who_stopped_a_deployment_is_a_fact_named_by_the_ui_and_what_follows_is_escaped():
    hostile = "<!channel> *now* <https://evil.example|click>"
    rejected = deployment(
        state=State.CANCELLED,
        outcome=f"rejected: {hostile}",
        context={"stopped_by": {"how": "rejected", "by": "U0BOB"}},
    )
    shown = slack_ui.outcome_text(rejected)
    assert shown.startswith("rejected by <@U0BOB>: ")
    assert "<!channel>" not in shown and "<https://" not in shown
    aborted = deployment(
        state=State.ROLLED_BACK,
        outcome="aborted; back on v1",
        context={"stopped_by": {"how": "aborted", "by": "<!here>"}},  # not a user id: shown as text
    )
    assert slack_ui.outcome_text(aborted) == "aborted by &lt;!here&gt;; back on v1"
    plain = deployment(state=State.FAILED, outcome="ECS said no")
    assert slack_ui.outcome_text(plain) == "ECS said no"  # the bot's own words, as they are
