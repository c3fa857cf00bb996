"""/flag's views (handlers/ui/flags): the list and one flag, as text and as blocks Slack accepts (checked
with the local Slack's Block Kit validation), hostile config and typed text escaped; and /flag's usage
errors shown without markup. Pure builders: no Slack, no network."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bot.domain import commands as cmds
from bot.domain.flags import Condition, FlagDef, FlagState, Rule
from bot.domain.model import Event
from bot.sandbox.slack import block_errors
from handlers.listeners.commands import NAMES
from handlers.ui import blocks as slack_ui
from handlers.ui import flags as ui

ROOT = Path(__file__).resolve().parent.parent
LIVE = re.compile(r"<(!|@|#|http|mailto)[^>]*>")
OWN = re.compile(r"<@U0[A-Z]+>|<!date\^\d+\^[^|<>]*\|[^<>]*>")
HOSTILE = "<!channel> <@U666> <http://evil.example|docs> `x` *bold* \n• fake\x1b[31m"

CHECKOUT = FlagDef("checkout-v2", "boolean", {"on": True, "off": False}, "off", "off", "on",
                   "The new checkout flow", "payments", ("web",))  # fmt: skip
RANKING = FlagDef("search-ranking", "string", {"control": "classic", "treatment": "learned"}, "control",
                  "control", "treatment", "Learned search ranking", "search", ("web",))  # fmt: skip
EVIL = FlagDef(
    "evil", "object", {"a": {"html": HOSTILE}, "b": {"n": 1}}, "a", "a", "b", HOSTILE, HOSTILE, ("web",)
)
AT = "2026-12-01T10:00:00+00:00"


def live(node: object) -> list[str]:
    found = []
    for s in _strings(node):
        found += [m.group(0) for m in LIVE.finditer(s) if not OWN.fullmatch(m.group(0))]
    return found


def _strings(node: object):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def event(action: str, actor: str = "U0ALICE", deployment_id: int | None = None, **details: object) -> Event:
    return Event(
        1,
        deployment_id,
        AT,
        actor,
        action,
        None,
        None,
        {"flag": "checkout-v2", "env": "production", **details},
    )


def show(flag: FlagDef = CHECKOUT, state: FlagState | None = None, **kw: object) -> dict:
    args: dict = {
        "revision": 3,
        "updated_by": "U0ALICE",
        "updated_at": AT,
        "changes": [],
        "rollout_ref": None,
        **kw,
    }
    return ui.flag_show("production", flag, state or FlagState(), **args)


def valid(answer: dict) -> dict:
    assert answer["response_type"] == "ephemeral"
    assert block_errors(answer["blocks"]) == [], answer["blocks"]
    assert len(answer["text"]) <= 3000
    return answer


# -------------------------------------------------------------------------------------------- list


def test_the_list_shows_each_flag_per_environment_in_words():
    rows = [
        ("staging", CHECKOUT, FlagState(True, "off", split=(("on", 25.0), ("off", 75.0)))),
        ("staging", RANKING, FlagState(True, "treatment")),
        ("production", CHECKOUT, FlagState(False, killed=True)),
        ("production", RANKING, FlagState()),
    ]
    answer = valid(ui.flag_list(None, rows))
    shown = answer["text"]
    assert shown.startswith("*Flags*\n*staging*\n")
    assert (
        ":large_yellow_circle: `checkout-v2` on: split on 25%, off 75% — The new checkout flow (payments)"
        in shown
    )
    assert ":large_green_circle: `search-ranking` on: everyone get treatment" in shown
    assert ":octagonal_sign: `checkout-v2` killed: everyone gets off" in shown
    assert ":white_circle: `search-ranking` off: everyone gets control" in shown
    assert shown.index("*staging*") < shown.index("*production*")
    blocks = json.dumps(answer["blocks"], ensure_ascii=False)
    assert "killed: everyone gets off" in blocks and "`/flag KEY in ENV` shows one flag" in blocks


def test_the_list_of_one_environment_names_it_once_and_an_empty_list_says_how_to_declare():
    answer = valid(ui.flag_list("production", [("production", CHECKOUT, FlagState())]))
    assert answer["text"].startswith("*Flags in production*\n:white_circle: `checkout-v2` off")
    assert "*production*" not in answer["text"]
    empty = ui.flag_list("staging", [])
    assert "none are declared" in empty["text"] and "[flags.KEY]" in empty["text"]


def test_a_long_list_stays_within_slack_s_limits():
    many = FlagDef("f", "boolean", {"on": True, "off": False}, "off", "off", "on", "d" * 500, "o" * 500)
    rows = [(env, many, FlagState()) for env in ("staging", "production") for _ in range(300)]
    answer = valid(ui.flag_list(None, rows))
    assert len(answer["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in answer["blocks"] if b["type"] == "section")


# -------------------------------------------------------------------------------------------- show


def test_one_flag_shows_state_rules_split_variants_and_last_changes():
    state = FlagState(
        True,
        "off",
        rules=(
            Rule("on", (Condition("region", "in", ("eu-west-1", "eu-central-1")),)),
            Rule("on", (), "beta"),
        ),
        split=(("on", 25.0), ("off", 75.0)),
    )
    changes = [
        event("flag_percent", summary="on for 25% of users", reason="checkout v2 is ready"),
        event("flag_target", "U0BOB", summary="rule segment beta → on"),
        event("flag_rollout_step", "deploybot", 42, summary="rollout: 5%"),
        event("flag_something_new", "<!here>", summary="x"),
    ]
    answer = valid(show(state=state, changes=changes, rollout_ref="#42"))
    shown = answer["text"]
    first = shown.splitlines()[0]
    assert first == (
        ":large_yellow_circle: *checkout-v2* in *production*: on: rule region=eu-west-1,eu-central-1 → on; "
        "rule segment beta → on; split on 25%, off 75%"
    )
    for part in (
        "The new checkout flow",
        "Variants: `on` = `true`, `off` = `false`",
        "Split: `on` 25%, `off` 75%",
        "1. region=eu-west-1,eu-central-1 → on\n2. segment beta → on",
        "Last changed: revision 3, by <@U0ALICE> <!date^1796119200^",
        ":arrows_clockwise: #42 holds checkout-v2 in production",
        "<@U0ALICE> set a percentage: on for 25% of users — _checkout v2 is ready_",
        "<@U0BOB> set a rule: rule segment beta → on",
        "the bot rollout step: rollout: 5% (#42)",
        "&lt;!here&gt; something new: x",
    ):
        assert part in shown, part
    blocks = json.dumps(answer["blocks"], ensure_ascii=False)
    assert "*Default · off · on*\\n`off` · `off` · `on`" in blocks
    assert "boolean flag · owner payments · services web" in blocks
    assert "*Latest changes*" in blocks and "set a percentage" in blocks


def test_a_flag_never_changed_off_or_killed_says_so_and_keeps_its_rules_visible():
    never = valid(show(RANKING, revision=0, updated_by=None, updated_at=None))
    assert "Last changed: never here (the declared default: off)" in never["text"]
    assert ":white_circle: *search-ranking* in *production*: off: everyone gets control" in never["text"]
    assert "No changes here yet." in json.dumps(never["blocks"])
    assert "Rules: none" in never["text"] and "Split: none" in never["text"]
    killed = FlagState(False, rules=(Rule("on", (Condition("plan", "equals", ("pro",)),)),), killed=True)
    answer = valid(show(state=killed))
    assert answer["text"].startswith(
        ":octagonal_sign: *checkout-v2* in *production*: killed: everyone gets off"
    )
    assert "1. plan=pro → on\n_(kept; they apply when the flag is on)_" in answer["text"]


def test_two_environments_of_one_flag_fit_one_message():
    changes = [event("flag_percent", summary="s" * 400, reason="r" * 400) for _ in range(10)]
    answers = [show(changes=changes, rollout_ref="#1") for _ in range(2)]
    blocks = [b for a in answers for b in a["blocks"]]
    assert len(blocks) <= 50 and block_errors(blocks) == []


def test_hostile_config_text_and_typed_values_are_escaped_everywhere():
    state = FlagState(
        True,
        "a",
        rules=(Rule("b", (Condition("plan", "in", (HOSTILE, "x")),)),),
        split=(("a", 50.0), ("b", 50.0)),
    )
    changes = [
        event("flag_target", summary=f"rule plan={HOSTILE} → b", reason=HOSTILE),
        event("flag_killed", actor=HOSTILE, reason=HOSTILE),
    ]
    shown = [
        show(EVIL, state, changes=changes, rollout_ref="#7", updated_by=HOSTILE),
        ui.flag_list(None, [("staging", EVIL, state), ("production", EVIL, FlagState())]),
    ]
    for answer in shown:
        valid(answer)
        assert live(answer) == [], answer
        assert "&lt;!channel&gt;" in answer["text"]
        assert "\x1b" not in json.dumps(answer) and "\n• fake" not in json.dumps(answer)
    assert "<@U0ALICE>" in json.dumps(shown[0])  # the bot's own mention of a real user still works


def test_usage_errors_of_hostile_flag_commands_carry_no_markup():
    vocab = cmds.Vocabulary(
        ("web",), ("staging", "production"), flags={"checkout-v2": ("on", "off")}, segments=("beta",)
    )
    for typed in (
        "<!channel> on in staging",
        "checkout-v2 <!here> in staging",
        "checkout-v2 on for <@U123> in staging",
        "checkout-v2 on for region=a,,<!channel> in staging",
        "checkout-v2 on in <http://evil.example|prod>",
        "checkout-v2 on staging --reason '<!channel> `x`'",
    ):
        try:
            cmds.parse("/flag", typed, vocab)
        except cmds.CommandError as err:
            answer = slack_ui.usage_error(err.message, err.usage)
            assert live(answer) == [], answer
            assert block_errors(answer["blocks"]) == []
        else:
            raise AssertionError(f"{typed!r} parsed")


# ---------------------------------------------------------------------------------------- manifest


def test_the_slack_manifest_declares_every_command_the_bot_answers():
    manifest = (ROOT / "config" / "slack-manifest.yml").read_text()
    declared = re.findall(r"^\s*- command: (/\S+)$", manifest, re.MULTILINE)
    assert declared == list(cmds.COMMANDS) == list(NAMES)
    flag = manifest[manifest.index("- command: /flag") :].split("- command:")[1]
    assert "usage_hint:" in flag and "description:" in flag and "should_escape: false" in flag
