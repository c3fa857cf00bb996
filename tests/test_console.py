"""The sandbox console (`deploybot sandbox`): Slack mrkdwn and Block Kit rendered for a terminal the way the
Slack client shows them (a pure renderer), the console's commands against the real local Slack (clicks go
to the message's own channel, checkboxes tick, numbers are per message, an edit is one line, an answer prints
once), and the process: `quit` and SIGTERM remove the sandbox's temporary folder."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from bot.clock import ManualClock
from bot.sandbox.client import wait_for
from bot.sandbox.console import Console, fault_from_words, flag_injection_from_words
from bot.sandbox.faults import FaultInjector
from bot.sandbox.flag_traffic import EnvKey, FlagTraffic
from bot.sandbox.render import BOLD, RESET, Directory, change_line, mrkdwn, render_message, summary
from bot.sandbox.slack import BOT_USER_ID, LocalSlack
from tests.conftest import CONFIG

NOW = 1_796_385_600  # Fri 2026-12-04 12:00 UTC, 13:00 in Berlin
D = Directory(
    users={"U0ALICE": "alice", "U0BOB": "bob"},
    channels={"C0DEPLOYS": "deploys", "C0INCIDENTS": "incidents"},
    groups={"S0ONCALL": "oncall"},
    tz="Europe/Berlin",
    now=NOW,
)


# --- the renderer (pure) ---------------------------------------------------------------------------------
def test_mentions_channels_groups_and_broadcasts_show_names():
    text = (
        "by <@U0ALICE> and <@U0BOB|bob> in <#C0INCIDENTS> cc <!subteam^S0ONCALL|@oncall> <!here> <!channel>"
    )
    assert mrkdwn(text, D) == "by @alice and @bob in #incidents cc @oncall @here @channel"
    assert mrkdwn("<@U0NOBODY> <#C0NEW|new-channel>", D) == "@U0NOBODY #new-channel"


def test_dates_show_in_the_readers_time_zone_with_slacks_tokens():
    at = NOW + 15 * 60
    assert mrkdwn(f"<!date^{at}^{{time}}|12:15 UTC>", D) == "13:15"
    assert mrkdwn(f"<!date^{at}^{{date_num}} {{time_secs}}|x>", D) == "2026-12-04 13:15:00"
    assert mrkdwn(f"<!date^{at + 86400}^{{date_pretty}} at {{time}}|x>", D) == "tomorrow at 13:15"
    assert mrkdwn(f"<!date^{at}^{{date_long}}|x>", D) == "Friday, December 4th, 2026"
    assert mrkdwn(f"<!date^{NOW - 7200}^{{ago}}|x>", D) == "2 hours ago"
    assert mrkdwn("<!date^soon^{time}|at noon>", D) == "at noon"  # a broken date shows its fallback
    utc = Directory(tz="UTC")
    assert mrkdwn(f"<!date^{at}^{{time}}|x>", utc) == "12:15"


def test_emoji_bold_links_and_entities():
    assert mrkdwn(":rocket: *running* :white_check_mark: :no_such_emoji: 12:30:45", D) == (
        "🚀 running ✅ :no_such_emoji: 12:30:45"
    )
    words = Directory(emoji_chars=False)
    assert mrkdwn(":rocket: :x:", words) == "[running] [failed]"
    tty = Directory(tty=True)
    assert mrkdwn("a *bold* word, 2*3*4", tty) == f"a {BOLD}bold{RESET} word, 2*3*4"
    assert mrkdwn("<https://example.com/runbook|the runbook> <https://example.com>", D) == (
        "the runbook (https://example.com/runbook) https://example.com"
    )
    assert mrkdwn("5 &lt; 6 &amp;&amp; 7 &gt; 6", D) == "5 < 6 && 7 > 6"


CHECKLIST = {
    "type": "section",
    "block_id": "checklist-3",
    "text": {"type": "mrkdwn", "text": "Tick what is done:"},
    "accessory": {
        "type": "checkboxes",
        "action_id": "deploybot_tick",
        "options": [
            {"text": {"type": "plain_text", "text": "Tests passing"}, "value": "tests"},
            {"text": {"type": "plain_text", "text": "Team notified"}, "value": "team"},
        ],
        "initial_options": [{"text": {"type": "plain_text", "text": "Tests passing"}, "value": "tests"}],
    },
}
BUTTONS = {
    "type": "actions",
    "block_id": "deployment-3",
    "elements": [
        {
            "type": "button",
            "action_id": "deploybot_approve",
            "text": {"type": "plain_text", "text": "Approve"},
        },
        {"type": "button", "action_id": "deploybot_cancel", "text": {"type": "plain_text", "text": "Cancel"}},
    ],
}


def deployment(step: int, *extra: dict) -> dict:
    return {
        "ts": "1796385600.000100",
        "channel": "C0DEPLOYS",
        "text": "Deployment #3 · web v2 → production: running",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": ":rocket: *Deployment #3* — *running*"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Service*\nweb"},
                    {"type": "mrkdwn", "text": "*Requested by*\n<@U0ALICE>"},
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"step {step}/5"}]},
            *extra,
        ],
    }


def test_a_message_renders_its_checkboxes_and_buttons_as_items_numbered_per_message():
    lines, items = render_message(deployment(2, CHECKLIST, BUTTONS), D, 3)
    assert lines == [
        "🚀 Deployment #3 — running",
        "  Service: web",
        "  Requested by: @alice",
        "  step 2/5",
        "Tick what is done:",
        "  [3.1] [x] Tests passing",
        "  [3.2] [ ] Team notified",
        "  [3.3] Approve   [3.4] Cancel",
    ]
    assert [(i.label, i.kind, i.checked) for i in items] == [
        ("Tests passing", "checkbox", True),
        ("Team notified", "checkbox", False),
        ("Approve", "button", False),
        ("Cancel", "button", False),
    ]
    assert render_message({"text": "plain <@U0BOB>", "blocks": None}, D, 1) == (["plain @bob"], [])


def test_an_edit_is_one_line_naming_the_message_and_what_changed():
    before, _ = render_message(deployment(2), D, 3)
    assert change_line(3, before, deployment(3), D) == (
        "~ #3 Deployment #3 · web v2 → production: running — step 3/5"
    )
    assert summary({"text": "", "blocks": deployment(1)["blocks"]}, D) == "🚀 Deployment #3 — running"
    assert len(change_line(3, [], {"text": "x" * 500}, D, width=80)) == 80


# --- the console's commands against the real local Slack --------------------------------------------------
class Bot:
    """Stands in for the bot's HTTP endpoint: records what the local Slack delivers, answers like an ack."""

    def __init__(self, answer: dict | None = None):
        self.delivered: list[dict] = []
        self.answer = answer or {"status": 200, "body": ""}

    async def __call__(self, body: str, headers, timestamp, forge) -> dict:
        form = {k: v[0] for k, v in parse_qs(body).items()}
        self.delivered.append(json.loads(form["payload"]) if "payload" in form else form)
        return json.loads(json.dumps(self.answer))


class FakeSandbox:
    def __init__(self, slack: LocalSlack):
        self.slack, self.clock = slack, slack.clock


@pytest.fixture
def world():
    slack = LocalSlack(signing_secret="s", bot_token="xoxb-t", clock=ManualClock(NOW))
    slack.bot_events_url = "http://127.0.0.1:9/slack/events"
    bot = Bot()
    slack._deliver = bot
    printed: list[str] = []
    console = Console(FakeSandbox(slack), out=printed.append)
    return slack, bot, console, printed


def post(slack: LocalSlack, channel: str, text: str, blocks: list | None = None, **kw) -> dict:
    return slack._append(
        slack.channel_id(channel), user=BOT_USER_ID, text=text, blocks=blocks, via="test", **kw
    )


async def test_a_click_goes_to_the_messages_own_channel_and_a_checkbox_ticks(world):
    slack, bot, console, printed = world
    post(slack, "deploys", "Deployment #1", deployment(1, CHECKLIST, BUTTONS)["blocks"])
    alert = post(
        slack,
        "incidents",
        ":rotating_light: CRITICAL",
        [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": ":rotating_light: *CRITICAL* <!subteam^S0ONCALL>"},
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "ack",
                        "text": {"type": "plain_text", "text": "Acknowledge"},
                    }
                ],
            },
        ],
    )
    for channel in ("deploys", "incidents"):
        console._print_new(channel)
    text = "\n".join(printed)
    assert "#1 in #deploys" in text and "#2 in #incidents" in text
    assert "[1.2] [ ] Team notified" in text and "[2.1] Acknowledge" in text
    assert "🚨 CRITICAL @oncall" in text and "<!subteam" not in text

    await console.handle("click 2.1")  # a button in #incidents, while the console posts in #deploys
    (click,) = bot.delivered
    assert (
        click["channel"]["id"] == slack.channels["incidents"]
        and click["container"]["message_ts"] == alert["ts"]
    )
    assert click["actions"][0]["action_id"] == "ack" and click["user"]["id"] == slack.users["alice"]

    await console.handle("click 1.2")  # the unticked checklist box: ticks it, keeps the ticked one
    tick = bot.delivered[-1]["actions"][0]
    assert tick["type"] == "checkboxes"
    assert sorted(o["value"] for o in tick["selected_options"]) == ["team", "tests"]
    assert "(tick Team notified on #1)" in printed

    await console.handle("click 1")  # no dot: item 1 of the latest message with items (#2)
    assert bot.delivered[-1]["actions"][0]["action_id"] == "ack"
    with pytest.raises(LookupError, match="no message #9"):
        await console.handle("click 9.1")
    with pytest.raises(LookupError, match="items 2.1 to 2.1"):
        await console.handle("click 2.5")
    with pytest.raises(LookupError, match="click takes MESSAGE.ITEM"):
        await console.handle("click Approve")


async def test_an_edit_prints_one_line_and_show_prints_the_whole_message(world):
    slack, _, console, printed = world
    m = post(slack, "deploys", "Deployment #3 · web v2 → production: running", deployment(2)["blocks"])
    console._print_new("deploys")
    full = len(printed)
    edited = deployment(3)
    slack._replace(slack._find(m["channel"], m["ts"]), edited["text"], edited["blocks"])
    console._print_new("deploys")
    console._print_new("deploys")  # nothing new: nothing printed
    assert printed[full:] == ["~ #1 Deployment #3 · web v2 → production: running — step 3/5"]
    await console.handle("show 1")
    assert "#1 in #deploys (edited)" in printed[-1] and "step 3/5" in printed[-1]
    assert "Requested by: @alice" in printed[-1]


async def test_a_slash_commands_answer_prints_once_with_names_not_ids(world):
    slack, bot, console, printed = world
    bot.answer = {
        "status": 200,
        "body": {"text": "Deployment #1 requested by <@U0ALICE>. Follow it in <#C0DEPLOYS>."},
    }
    await console.handle("/deploy web v2 to staging")
    for _ in range(3):  # the watcher keeps looking
        for channel in slack.channels:
            console._print_new(channel)
    text = "\n".join(printed)
    assert text.count("Deployment #1 requested by @alice. Follow it in #deploys.") == 1, text
    assert "(only you)" in text and "<@" not in text

    bot.answer = {"status": 401, "body": ""}
    await console.handle("/deploy web v2")
    assert printed[-1] == "(HTTP 401)"


def test_the_faults_command_reads_a_rate_a_duration_an_error_and_operations():
    assert fault_from_words(["elbv2", "100%", "6s"]) == {"service": "elbv2", "rate": 1.0, "seconds": 6.0}
    assert fault_from_words(["*", "20%"]) == {"service": "*", "rate": 0.2}
    assert fault_from_words(["ecs", "50%", "30s", "throttle"]) == {
        "service": "ecs",
        "rate": 0.5,
        "seconds": 30.0,
        "error": "throttle",
    }
    assert fault_from_words(["ecs", "UpdateService,DescribeServices", "100%", "10s"]) == {
        "service": "ecs",
        "operations": ["UpdateService", "DescribeServices"],
        "rate": 1.0,
        "seconds": 10.0,
    }
    assert fault_from_words(["cloudwatch", "2m", "503", "latency=250", "seed=7"]) == {
        "service": "cloudwatch",
        "seconds": 120.0,
        "error": "503",
        "latency_ms": 250.0,
        "seed": 7,
    }
    assert fault_from_words(["ecs", "0%", "300ms", "timeout"])["latency_ms"] == 300.0
    for bad in ("often", "lots%", "seed=x", "5h"):
        with pytest.raises(ValueError, match="a fault takes a rate"):
            fault_from_words(["ecs", bad])


async def test_the_faults_command_adds_lists_and_clears_rules():
    clock = ManualClock(NOW)
    sandbox = FakeSandbox(LocalSlack(signing_secret="s", bot_token="xoxb-t", clock=clock))
    sandbox.world = type("World", (), {"faults": FaultInjector(clock.now)})()
    printed: list[str] = []
    console = Console(sandbox, out=printed.append)
    await console.handle("faults")
    assert printed[-1] == "no faults (the bot's AWS calls pass)"
    await console.handle("faults elbv2 100% 6s seed=3")
    assert printed[-1] == "fault 1: elbv2 100% 500, 6s left of 6s, seed 3 — failed 0, passed 0"
    await console.handle("faults ecs UpdateService,DescribeServices 50% throttle latency=200 seed=4")
    assert printed[-1].splitlines()[1] == (
        "fault 2: ecs UpdateService,DescribeServices 50% throttle, +200ms, until cleared, seed 4"
        " — failed 0, passed 0"
    )
    await clock.advance(6)
    await console.handle("faults")
    assert printed[-1].startswith("fault 2: ecs") and "\n" not in printed[-1]  # the 6 s one has ended
    with pytest.raises(ValueError, match="service must be one of ecs, elbv2, cloudwatch or \\*"):
        await console.handle("faults s3 100%")
    await console.handle("faults off")
    assert printed[-1] == "faults cleared (1 removed)"
    assert sandbox.world.faults.rules() == []
    await console.handle("help")
    assert "faults elbv2 100% 6s" in printed[-1] and "faults off" in printed[-1]


def test_the_flag_injection_words_read_a_variant_rates_latencies_an_environment_and_clear():
    assert flag_injection_from_words(["checkout-v2", "on", "error_rate=0.2", "latency_ms=400"]) == {
        "flag": "checkout-v2",
        "variant": "on",
        "error_rate": 0.2,
        "latency_ms": 400.0,
    }
    assert flag_injection_from_words(["checkout-v2", "on", "errors=20%", "latency=300ms", "env=staging"]) == {
        "flag": "checkout-v2",
        "variant": "on",
        "error_rate": 0.2,
        "latency_ms": 300.0,
        "env": "staging",
    }
    assert flag_injection_from_words(["checkout-v2", "clear"]) == {"flag": "checkout-v2", "clear": True}
    for bad in (
        ["checkout-v2", "on", "errors=lots"],
        ["checkout-v2", "on", "off"],
        ["checkout-v2", "x=1"],
        [],
    ):
        with pytest.raises(ValueError, match="inject flag KEY VARIANT error_rate="):
            flag_injection_from_words(bad)


async def test_the_flags_and_inject_flag_commands_show_shares_and_injections():
    clock = ManualClock(NOW)
    sandbox = FakeSandbox(LocalSlack(signing_secret="s", bot_token="xoxb-t", clock=clock))
    traffic = FlagTraffic(
        lambda: None,  # no bot: the commands read and set the simulator's own state
        {"staging": EnvKey("k1"), "production": EnvKey("k2")},
        {"checkout-v2": ["on", "off"]},
        clock.now,
        lambda namespace, data: None,
        users=10,
    )
    sandbox.world = type("World", (), {"flags": traffic})()
    printed: list[str] = []
    console = Console(sandbox, out=printed.append)
    await console.handle("flags staging")
    assert printed[-1] == "staging: 0 of 10 users evaluated, 10 waiting\nno flag injections"
    await console.handle("inject flag checkout-v2 on error_rate=0.2 latency_ms=400 env=staging")
    assert printed[-1] == "flag checkout-v2 on in staging: 20% errors, 400 ms"
    await console.handle("inject flag checkout-v2 off errors=5%")
    assert printed[-1].splitlines() == [
        "flag checkout-v2 off in every environment: 5% errors, 80 ms",
        "flag checkout-v2 on in staging: 20% errors, 400 ms",
    ]
    with pytest.raises(ValueError, match="variant must be one of checkout-v2's variants \\(on, off\\)"):
        await console.handle("inject flag checkout-v2 maybe error_rate=0.2")
    with pytest.raises(ValueError, match="env must be one of staging, production"):
        await console.handle("flags qa")
    await console.handle("inject flag checkout-v2 clear")
    assert printed[-1] == "no flag injections"
    await console.handle("help")
    assert (
        "inject flag KEY VARIANT error_rate=0.2 latency_ms=400" in printed[-1]
        and "flags [ENV]" in printed[-1]
    )
    sandbox.world = type("World", (), {"flags": None})()
    with pytest.raises(LookupError, match="no flag traffic"):
        await console.handle("flags")


# --- the process: quit and SIGTERM clean up -----------------------------------------------------------------
async def start_console(tmp_path: Path) -> tuple[asyncio.subprocess.Process, list[str], asyncio.Task]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "sandbox",
        "--speed",
        "60",
        "--config",
        str(CONFIG),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    out: list[str] = []

    async def read() -> None:
        while chunk := await proc.stdout.read(4096):
            out.append(chunk.decode(errors="replace"))

    return proc, out, asyncio.get_running_loop().create_task(read())


async def folder_of(out: list[str]) -> Path:
    async def said():
        for line in "".join(out).splitlines():
            if line.startswith("temporary folder "):
                return Path(line.removeprefix("temporary folder ").split(" (")[0])
        return None

    folder = await wait_for(said, 90, what="the console's banner")
    assert folder.is_dir()
    return folder


async def finish(proc: asyncio.subprocess.Process, reader: asyncio.Task) -> tuple[int, str]:
    code = await asyncio.wait_for(proc.wait(), 30)
    await asyncio.wait_for(reader, 10)
    return code, (await proc.stderr.read()).decode(errors="replace")


async def test_quit_stops_the_sandbox_and_removes_its_temporary_folder(tmp_path):
    proc, out, reader = await start_console(tmp_path)
    try:
        folder = await folder_of(out)
        proc.stdin.write(b"/deploy web v2 to staging\n")
        await proc.stdin.drain()
        answer = "Deployment #1 · web v2 → staging requested"
        await wait_for(lambda: _async(answer in "".join(out)), 30, what="the answer")
        proc.stdin.write(b"quit\n")
        await proc.stdin.drain()
        code, stderr = await finish(proc, reader)
        assert code == 0 and "Traceback" not in stderr, stderr
        assert not folder.exists()
        assert "".join(out).count(answer) == 1  # the answer, printed once
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_stops_the_console_sandbox_and_removes_its_temporary_folder(tmp_path):
    proc, out, reader = await start_console(tmp_path)
    try:
        folder = await folder_of(out)
        proc.send_signal(signal.SIGTERM)  # stdin stays open: nothing may wait for a line
        code, stderr = await finish(proc, reader)
        assert code == 0 and "Traceback" not in stderr, stderr
        assert not folder.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _async(value):
    return value


async def test_the_ci_and_push_commands_set_results_in_the_local_ci():
    from bot.config.load import load_settings
    from bot.sandbox.ci import LocalCi
    from tests.conftest import CONFIG

    sandbox = FakeSandbox(LocalSlack(signing_secret="s", bot_token="xoxb-t", clock=ManualClock(NOW)))
    sandbox.ci = LocalCi(load_settings(CONFIG, env={}))
    printed: list[str] = []
    console = Console(sandbox, out=printed.append)
    await console.handle("ci github acme/web v5 failure unit-tests")
    sha = sandbox.ci.repos["acme/web"].sha("v5")
    assert printed[-1] == f"github acme/web {sha[:7]}: unit-tests failure"
    assert sandbox.ci.states("github", "acme/web", sha) == {"build": "success", "unit-tests": "failure"}
    await console.handle("push web v21")
    assert printed[-1].startswith("pushed web:v21 (commit ") and sandbox.ci.repos["acme/web"].sha("v21")
    with pytest.raises(ValueError, match="state must be one of success, failure, pending"):
        await console.handle("ci jenkins api-integration v4 green")
