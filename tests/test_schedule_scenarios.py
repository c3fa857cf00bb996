"""Issue 6's acceptance: scheduled deploys wait for their window, are skipped and moved when approvals are
missing, freezes refuse (or are overridden with an alert), and a bot that is down across a window's start
never runs the deploy outside its window. Driven through the control API against the real bot process."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import CONFIG, db_rows, message_of, wait_state, wait_terminal

SPEED = 60
# Every scenario here runs on a sandbox clock pinned to this instant (held while the bot boots, so a slow
# start-up eats no virtual time), never on the calendar: a Friday noon, when the shipped production window
# (Mon-Thu 02:00-05:00 Europe/Berlin) is days away and the test's own daily window is always the next one.
CLOCK_START = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
# Virtual minutes from the bot being ready to the window opening: the slash command and its scheduling must
# fit in them (15 s of wall time at 60x, plenty on a busy machine).
OPENS_IN = 15


def config_with_windows(
    tmp_path: Path, opens_in_minutes: float = OPENS_IN, lasts_minutes: int = 10
) -> tuple[Path, datetime]:
    """The shipped config plus a daily window for staging and production opening `opens_in_minutes` after
    CLOCK_START (whole minutes: the window's hours are HH:MM)."""
    start = CLOCK_START + timedelta(minutes=opens_in_minutes)
    end = start + timedelta(minutes=lasts_minutes)
    window = f'days = "daily"\nhours = "{start:%H:%M}-{end:%H:%M}"\ntimezone = "UTC"\n'
    text = Path(CONFIG).read_text()
    for env in ("staging", "production"):
        text = text.replace(
            f"[environments.{env}.access]",
            f"[[environments.{env}.windows]]\n{window}\n[environments.{env}.access]",
        )
    path = tmp_path / "windows.toml"
    path.write_text(text)
    return path, start


def pinned_sandbox(config: Path, tmp_path: Path) -> Sandbox:
    return Sandbox(config=config, speed=SPEED, workdir=tmp_path, clock_start=CLOCK_START)


def events(sb, d: int, *actions: str) -> list[dict]:
    marks = ",".join("?" * len(actions))
    return db_rows(
        sb,
        f"SELECT at, actor, action, details FROM events WHERE deployment_id = ? AND action IN ({marks}) "
        "ORDER BY id",
        (d, *actions),
    )


async def test_a_pinned_sandbox_clock_stands_still_while_the_bot_boots_and_the_bot_shares_it(
    tmp_path, aws_env
):
    made = time.monotonic()
    async with (
        pinned_sandbox(CONFIG, tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        boot = time.monotonic() - made
        assert sb.bot.ready["clock"] == sb.clock.spec()  # one clock: same speed, origin and start
        # The moto world and the bot took `boot` wall seconds to start; at 60x that would be boot minutes
        # of virtual time. Held until the bot was ready, the clock has moved only since then.
        elapsed = sb.clock.now() - CLOCK_START.timestamp()
        assert 0 <= elapsed < boot * SPEED / 2, (elapsed, boot)
        # The bot reads the same pinned time: a freeze "until +2h" ends two hours after the sandbox's now.
        before = sb.clock.utcnow()
        r = await client.slash("bob", "/deploy", 'freeze staging until +2h "pinned clock"')
        assert "froze staging" in r["body"]["text"], r
        after = sb.clock.utcnow()
        (end,) = [datetime.fromisoformat(f["end"]) for f in db_rows(sb, "SELECT end FROM freezes")]
        assert before + timedelta(hours=2) - timedelta(minutes=1) <= end <= after + timedelta(hours=2)


async def test_a_window_deploy_waits_for_the_window_and_is_listed_until_then(tmp_path, aws_env):
    config, opens = config_with_windows(tmp_path)
    async with (
        pinned_sandbox(config, tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        r = await client.slash("alice", "/deploy", "web v2 to staging --window")
        assert "Scheduled for" in r["body"]["text"], r
        await wait_state(sb, 1, "scheduled")
        listed = await client.slash("bob", "/deploy", "schedule")
        assert "#1 web v2 → staging" in listed["body"]["text"]
        await message_of(client, 1, "Scheduled for", within=10)  # posted a moment after the state
        assert sb.clock.utcnow() < opens  # still before the window: nothing has started
        assert db_rows(sb, "SELECT state FROM deployments")[0]["state"] == "scheduled"

        final = await wait_terminal(client, 1, within=60)
        assert "succeeded" in final["text"]
        started = datetime.fromisoformat(events(sb, 1, "start")[0]["at"])
        assert started >= opens, (started, opens)  # not before the window
        assert started < opens + timedelta(minutes=5)  # ... but when it opened (a busy loop may lag)


async def test_missing_approvals_at_window_start_skip_it_with_a_warning_and_move_it(tmp_path, aws_env):
    config, opens = config_with_windows(tmp_path)
    async with (
        pinned_sandbox(config, tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        r = await client.slash("alice", "/deploy", "web v2 to production --window")
        assert "Scheduled for" in r["body"]["text"], r
        await wait_state(sb, 1, "scheduled")
        assert sb.clock.utcnow() < opens  # scheduled before the window: its first run is this one

        async def moved():
            return events(sb, 1, "moved")

        moves = await wait_for(moved, 60, what="the deploy to be moved")
        details = json.loads(moves[0]["details"])
        assert "waited for 1 approval" in details["why"]
        assert datetime.fromisoformat(details["run_at"]) == opens + timedelta(days=1)  # the next window
        assert db_rows(sb, "SELECT state FROM deployments")[0]["state"] == "scheduled"
        assert events(sb, 1, "start") == []

        async def warned():
            return [m for m in await client.messages("deploys") if "Skipped: the window opened" in m["text"]]

        assert await wait_for(warned, 10, what="the warning")


async def test_a_freeze_refuses_with_its_reason_and_an_authorised_override_raises_a_critical_alert(
    sandbox, client
):
    frozen = await client.slash("bob", "/deploy", 'freeze staging until +2h "release party"')
    assert "froze staging" in frozen["body"]["text"] and "release party" in frozen["body"]["text"]
    refused = await client.slash("alice", "/deploy", "web v2 to staging")
    text = refused["body"]["text"]
    assert "staging frozen until" in text and "release party" in text
    assert db_rows(sandbox, "SELECT * FROM deployments") == []
    not_allowed = await client.slash("dave", "/deploy", "unfreeze staging")
    assert "role" in not_allowed["body"]["text"]

    r = await client.slash("bob", "/deploy", 'web v2 to staging --reason "hotfix for the payment outage"')
    assert r["body"]["text"].startswith("Deployment #1"), r
    final = await wait_terminal(client, 1, within=60)
    assert "succeeded" in final["text"]
    alerts = [m for m in await client.messages("incidents") if "Freeze override by <@U0BOB>" in m["text"]]
    assert alerts and "CRITICAL" in alerts[0]["text"]
    assert db_rows(sandbox, "SELECT actor FROM events WHERE action = 'freeze_override'") == [
        {"actor": "U0BOB"}
    ]
    lifted = await client.slash("bob", "/deploy", "unfreeze staging")
    assert "lifted 1 freeze of staging" in lifted["body"]["text"]


async def test_the_bot_down_across_a_window_start_moves_the_deploy_and_never_runs_it_outside(
    tmp_path, aws_env
):
    config, opens = config_with_windows(tmp_path, lasts_minutes=2)
    async with (
        pinned_sandbox(config, tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        r = await client.slash("alice", "/deploy", "web v2 to staging --window")
        assert "Scheduled for" in r["body"]["text"], r
        await wait_state(sb, 1, "scheduled")
        await client.bot("kill")
        assert sb.clock.utcnow() < opens  # down before the window opened
        closes = opens + timedelta(minutes=2)
        # wait (wall time, polled) until the whole window and the misfire grace have passed on the sandbox clock
        await wait_for(lambda: _after(sb, closes + timedelta(minutes=5)), 60, what="the window to pass")
        await client.bot("start")

        async def moved():
            return events(sb, 1, "moved")

        moves = await wait_for(moved, 30, what="the deploy to be moved")
        assert "the bot was down" in json.loads(moves[0]["details"])["why"]
        assert events(sb, 1, "start") == []
        assert db_rows(sb, "SELECT state FROM deployments")[0]["state"] == "scheduled"


async def _after(sb, when: datetime) -> bool:
    return sb.clock.utcnow() > when


async def test_the_bot_killed_mid_canary_ends_consistent_after_restart(sandbox, client):
    from tests.conftest import listener_weights, through_gate

    r = await client.slash("alice", "/deploy", "web v2 to production")
    d = int(r["body"]["text"].split("#")[1].split()[0])
    await through_gate(client, sandbox, d)

    async def shifted():
        return db_rows(sandbox, "SELECT step_index FROM deployments")[0]["step_index"] >= 8  # past 5% -> 25%

    await wait_for(shifted, 60, what="the canary to be under way")
    await client.bot("kill")
    started = time.monotonic()
    await client.bot("start")
    assert time.monotonic() - started < 60
    final = await wait_terminal(client, d, within=120)
    assert "succeeded" in final["text"] or "rolled back" in final["text"]
    weights = listener_weights(sandbox, "web", "production")
    assert sum(weights.values()) == 100
    assert db_rows(sandbox, "SELECT * FROM locks") == []
    audit = db_rows(
        sandbox, "SELECT action, from_state, to_state FROM events WHERE deployment_id = ? ORDER BY id", (d,)
    )
    moves = [(e["from_state"], e["to_state"]) for e in audit if e["from_state"] != e["to_state"]]
    for (_, to), (frm, _) in zip(moves, moves[1:], strict=False):
        assert to == frm, moves  # no gap: every transition starts where the last one ended
    assert "resume_after_restart" in [e["action"] for e in audit]
