"""Issue 14's pictures and delivery report against the real bot process: a small history built through
real deployments in the sandbox (a canary that passes, one rolled back by its failed analysis — the
sandbox injects a 30% error rate into its version — one that restores the service, a rolling deploy in
staging). The canaries leave PNG charts in their threads (the local Slack keeps the uploaded files),
whose points are the audited measurements; `deploybot report --format json` over the bot's database
gives the figures computed here by hand from the recorded times.

The config is the test's own: production canary 50 → 100% with a minute's bake per step (two
measurements each), no gate; staging rolling."""

from __future__ import annotations

import base64
import io
import json
import statistics
from datetime import datetime

from PIL import Image

from bot.__main__ import main
from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import db_rows, request, top_level

CONFIG = """
[bot]
default_environment = "production"
deploy_channel = "deploys"

[alerts]
critical = ["incidents"]
warning = ["deploys"]
oncall = false

[environments.production]
cluster = "production"
load_balancer = "deploybot-production"
strategy = "canary"
bake_seconds = 30
poll_seconds = 5
canary_steps = [50, 100]
step_bake_seconds = 60
keep_warm_seconds = 0

[environments.production.guards]
refuse_all_at_once = false
require_rollback_target = false
require_health_and_monitoring = false

[environments.production.analysis]
interval_seconds = 30
window_seconds = 60
min_requests = 50
max_error_rate = 0.05
max_latency_ms = 1000

[environments.staging]
cluster = "staging"
load_balancer = "deploybot-staging"
strategy = "rolling"
bake_seconds = 30
poll_seconds = 5

[services.web]
"""
PNG = b"\x89PNG\r\n\x1a\n"


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def ended(sb: Sandbox, d: int) -> dict:
    async def probe():
        (row,) = db_rows(sb, "SELECT * FROM deployments WHERE id = ?", (d,))
        return row if row["state"] in ("succeeded", "rolled_back", "failed", "cancelled") else None

    return await wait_for(probe, 120, what=f"deployment #{d} to end")


def audited_points(sb: Sandbox, d: int) -> list[dict]:
    """The deployment's measurements as the audit holds them, in the chart's terms."""
    points = []
    for r in db_rows(
        sb, "SELECT details FROM events WHERE deployment_id = ? AND action = 'measurement'", (d,)
    ):
        m = json.loads(r["details"])
        canary, stable = m["canary"] or {}, m["stable"] or {}
        points.append(
            {
                "at": m["at"],
                "label": m["label"],
                "verdict": m["verdict"],
                "weight": m["weight"],
                "new_error_rate": canary.get("error_rate"),
                "stable_error_rate": stable.get("error_rate"),
                "new_latency_ms": canary.get("latency_ms"),
                "stable_latency_ms": stable.get("latency_ms"),
            }
        )
    return points


def check_png(content: bytes) -> list[dict]:
    """A real PNG: its signature, its size from the IHDR chunk, pixels that are not all one colour;
    returns the points it says it drew."""
    assert content[:8] == PNG
    width, height = int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")
    image = Image.open(io.BytesIO(content))
    assert (width, height) == image.size == (900, 700)
    colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 20  # lines, markers, text: not a blank canvas
    background = max(colours)[0] / (width * height)
    assert background < 0.97, background
    return json.loads(image.text["deploybot:points"])


async def test_canaries_leave_charts_of_their_audited_measurements_and_the_report_adds_up(
    tmp_path, aws_env, capsys
):
    path = tmp_path / "delivery.toml"
    path.write_text(CONFIG)
    async with (
        Sandbox(config=str(path), speed=60, workdir=tmp_path) as sb,
        SandboxClient(sb.slack_url) as client,
    ):
        good = await request(client, "alice", "web v2 to production")
        assert (await ended(sb, good))["state"] == "succeeded"
        await client.inject("web", "v3", error_rate=0.3)
        bad = await request(client, "alice", "web v3 to production")
        assert (await ended(sb, bad))["state"] == "rolled_back"
        fixed = await request(client, "alice", "web v4 to production")
        assert (await ended(sb, fixed))["state"] == "succeeded"
        staged = await request(client, "alice", "web v2 to staging")
        assert (await ended(sb, staged))["state"] == "succeeded"

        async def threads() -> dict[int, str] | None:
            """Each canary's message (the notifier may still be updating one when the state reads ended)."""
            tops = top_level(await client.messages("deploys"))
            found = {d: [m["ts"] for m in tops if f"#{d} " in m["text"]] for d in (good, bad, fixed)}
            return (
                {d: ts[0] for d, ts in found.items()} if all(len(ts) == 1 for ts in found.values()) else None
            )

        thread_of = await wait_for(threads, 30, what="one message of each canary in #deploys")

        async def charts():
            files = await client.files("deploys")
            return files if {f["thread_ts"] for f in files} >= set(thread_of.values()) else None

        files = await wait_for(charts, 30, what="a chart in each canary's thread")
        for d in (good, bad, fixed):
            (chart,) = [f for f in files if f["thread_ts"] == thread_of[d]]  # one each, none twice
            assert chart["mimetype"] == "image/png" and chart["name"].startswith(f"deploy-{d}-")
            content = base64.b64decode(chart["content_b64"])
            assert chart["size"] == len(content)
            drawn = check_png(content)
            assert drawn == audited_points(sb, d)  # every audited measurement, and only those
        assert [p["verdict"] for p in audited_points(sb, good)] == ["pass"] * 4
        assert [p["weight"] for p in audited_points(sb, good)] == [50, 50, 100, 100]
        assert [p["verdict"] for p in audited_points(sb, bad)] == ["fail"]  # at 50%, first measurement
        posted = db_rows(sb, "SELECT deployment_id FROM events WHERE action = 'chart_posted'")
        assert sorted(r["deployment_id"] for r in posted) == [good, bad, fixed]

        # the report, by hand, from the recorded times
        rows = {d: (await ended(sb, d)) for d in (good, bad, fixed, staged)}
        starts = {
            r["deployment_id"]: ts(r["at"])
            for r in db_rows(sb, "SELECT deployment_id, at FROM events WHERE action = 'start'")
        }
        took = {d: ts(rows[d]["finished_at"]) - starts[d] for d in rows}
        capsys.readouterr()
        assert main(["report", "--db", str(sb.db), "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        said = await client.slash("bob", "/deploy", "report web in production")
        assert said["status"] == 200, said
        assert "Change failure rate: 33.3% (1 of 3" in said["body"]["text"]  # staging's is not in it
        assert "Lead time for changes: unknown" in said["body"]["text"]
    assert report["deployments"] == 4
    assert report["by_outcome"] == {"succeeded": 3, "rolled_back": 1, "failed": 0, "regressed": 0}
    assert report["per_week"] == 4 * 7  # a history shorter than a day counts as one day
    assert (report["change_failures"], report["change_failure_rate"]) == (1, 0.25)
    restore = ts(rows[fixed]["finished_at"]) - ts(rows[bad]["finished_at"])
    assert report["restores"] == [
        {"service": "web", "env": "production", "failed_id": bad, "restored_id": fixed, "seconds": round(restore, 3)}
    ]  # fmt: skip
    assert report["median_time_to_restore_seconds"] == round(restore, 3)
    assert report["unrestored"] == []
    assert (report["lead_times_known"], report["median_lead_time_seconds"]) == (0, None)  # no commit times
    canary = statistics.median([took[good], took[bad], took[fixed]])
    assert report["median_duration_seconds"] == {
        "canary": round(canary, 3),
        "rolling": round(took[staged], 3),
    }
    assert report["durations_counted"] == {"canary": 3, "rolling": 1}
    # 30% errors against 5% allowed, and against a stable version near 0% (2 points allowed)
    assert report["rollback_reasons"] == [
        {"reason": "error rate above the stable baseline", "count": 1},
        {"reason": "error rate above the threshold", "count": 1},
    ]
    assert sum(w["counts"]["succeeded"] for w in report["weeks"]) == 3
