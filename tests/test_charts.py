"""Analysis charts in process: the notifier and its ChartPoster against the sandbox's LocalSlack (files
through slack_sdk's real files_upload_v2), an in-memory store and a ManualClock. The chart is drawn from
the audited measurements and says so in its PNG; a replayed event, or one replayed after a crash between
the upload and its record, leaves one file; without matplotlib the thread gets words; the Home tab links
the charts; what the figure draws are the points."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys

import aiohttp
import pytest
from PIL import Image
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.charts import latest_charts
from bot.adapters.store.sqlite import Store
from bot.app.chart_data import ChartData, Point, chart_data
from bot.clock import ManualClock
from bot.domain import events as ev
from bot.domain.analysis_events import AnalysisPassed
from bot.domain.model import BOT
from bot.sandbox.client import wait_for
from bot.sandbox.slack import LocalSlack
from handlers.charts import ChartPoster
from handlers.notifier import SlackNotifier, add_retry_handlers
from handlers.ui import chart_render
from handlers.ui.home import home_view

SECRET, TOKEN = "charts-test-secret", "xoxb-charts-test"
PLAN = [
    {"kind": "set_weights", "candidate": 50},
    {"kind": "analyze", "seconds": 60.0, "label": "canary 50%"},
    {"kind": "set_weights", "candidate": 100},
    {"kind": "analyze", "seconds": 60.0, "label": "canary 100%"},
]


def measurement(at: float, weight: int, rate: float, verdict: str = "pass") -> dict:
    stable = (
        {"requests": 500.0, "errors": 1.0, "error_rate": 0.002, "latency_ms": 80.0} if weight < 100 else None
    )
    return {
        "at": at,
        "label": f"canary {weight}%",
        "verdict": verdict,
        "reasons": [] if verdict == "pass" else ["error rate 30.0% on the canary > 5.0% threshold"],
        "canary": {"requests": 400.0, "errors": 400 * rate, "error_rate": rate, "latency_ms": 90.0 + at % 7},
        "stable": stable,
        "alarms": [],
        "notes": [],
        "window_seconds": 60,
        "latency_statistic": "Average",
        "weight": weight,
        "thresholds": {"max_error_rate": 0.05, "max_latency_ms": 1000.0},
    }  # fmt: skip


@pytest.fixture
async def world():
    clock = ManualClock()
    slack = LocalSlack(signing_secret=SECRET, bot_token=TOKEN, clock=clock)
    await slack.start()
    client = add_retry_handlers(AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/"))
    store = AsyncStore(Store(":memory:", clock))
    notifier = SlackNotifier(client, store, clock=clock, post_interval=0.0, update_interval=0.0)
    notifier.charts = ChartPoster(client, store, notifier.outbox)
    yield slack, store, notifier
    await notifier.drain(within=5)
    store.close()
    await slack.stop()


async def canary(store: AsyncStore, measurements: list[dict], service: str = "web"):
    d = await store.create_deployment(
        service=service, env="production", version="v2", strategy="canary", kind="deploy",
        requested_by="U0ALICE", plan=PLAN, channel="deploys",
    )  # fmt: skip
    await store.append_events(d.id, [ev.Requested()])
    d = await store.transition(d.id, "start", BOT, events=[ev.Started()])
    for m in measurements:
        await store.record(d.id, BOT, "measurement", m)
    return d


async def settled(n: SlackNotifier) -> None:
    async with asyncio.timeout(20):
        await n.settle()


def files(slack: LocalSlack) -> list[dict]:
    return [f for f in slack.files.files.values() if f["completed"]]


async def test_the_last_passed_analysis_leaves_one_png_of_the_audited_points(world):
    slack, store, n = world
    ms = [measurement(1000 + 30 * i, 50 if i < 2 else 100, 0.01 * i) for i in range(4)]
    d = await canary(store, ms)
    await store.append_events(d.id, [AnalysisPassed(1, "canary 50%")])  # not the last analysis: no chart
    await settled(n)
    assert files(slack) == []
    await store.append_events(d.id, [AnalysisPassed(3, "canary 100%")])
    await settled(n)
    (f,) = files(slack)
    d = await store.get(d.id)
    assert (f["channel"], f["thread_ts"]) == (d.channel, d.message_ts)  # in its thread
    image = Image.open(io.BytesIO(f["content"]))
    assert f["content"][:8] == b"\x89PNG\r\n\x1a\n" and image.size == (900, 700)
    drawn = json.loads(image.text[chart_render.POINTS_KEY])
    assert [p["at"] for p in drawn] == [m["at"] for m in ms]
    assert [p["new_error_rate"] for p in drawn] == [m["canary"]["error_rate"] for m in ms]
    assert [p["weight"] for p in drawn] == [50, 50, 100, 100]
    assert [p["stable_error_rate"] for p in drawn] == [0.002, 0.002, None, None]
    (thread_message,) = [m for m in slack.messages("deploys") if m.get("files")]
    assert thread_message["thread_ts"] == d.message_ts and "Analysis passed" in thread_message["text"]

    # the Home tab links it
    ((linked, link),) = await store.call(latest_charts, store.sync)
    assert linked.id == d.id and link.endswith(f["id"])
    view = home_view([], [], [], 0.0, [], {}, [(linked, link)])
    assert f"<{link}|#{d.id} web v2" in json.dumps(view)


async def test_a_replay_and_a_crash_between_upload_and_record_leave_one_file(world):
    slack, store, n = world
    d = await canary(store, [measurement(1000, 50, 0.3, "fail")])
    await store.append_events(d.id, [ev.RollingBack("analysis failed", automatic=True)])
    await settled(n)
    assert len(files(slack)) == 1
    (entry,) = [e for e in await store.outbox_after("nobody", 100) if isinstance(e.event, ev.RollingBack)]
    n.charts.consider(entry, await store.get(d.id), (await store.get(d.id)).channel)  # the batch again
    await settled(n)
    assert len(files(slack)) == 1

    # a process uploaded the next chart and died before recording it: the next one finds it in the thread
    d2 = await canary(store, [measurement(2000, 50, 0.3, "fail")], service="api")
    await settled(n)
    d2 = await store.get(d2.id)
    rolling_back = [ev.RollingBack("analysis failed", automatic=True)]
    (outbox_id,) = await store.call(store.sync.append_events, d2.id, rolling_back)  # no nudge yet
    name = f"deploy-{d2.id}-e{outbox_id}.png"
    await store.record(d2.id, BOT, "chart_upload", {"name": name, "why": "rollback"})
    await n.client.files_upload_v2(
        channel=d2.channel, thread_ts=d2.message_ts, filename=name, content=b"\x89PNG\r\n\x1a\nbefore"
    )
    await store.append_events(d2.id, [ev.Detail("the bot is back")])  # the nudge: it reads both
    await settled(n)
    mine = [f for f in files(slack) if f["name"] == name]
    assert len(mine) == 1 and mine[0]["content"].endswith(b"before")  # adopted, not uploaded again
    trail = [e for e in await store.events(d2.id) if e.action == "chart_posted"]
    assert [e.details["file"] for e in trail] == [mine[0]["id"]]


async def test_without_matplotlib_the_thread_gets_the_summary_in_words(world, monkeypatch):
    slack, store, n = world
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # `import matplotlib.figure` fails
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(chart_render.ChartsUnavailable):
        chart_render.analysis_chart(ChartData(1, "x", (Point(1.0, "l", "pass", 5, 0.0, 0.0, 1.0, 1.0),)))
    d = await canary(store, [measurement(1000, 50, 0.01), measurement(1030, 50, 0.3, "fail")])
    await store.append_events(d.id, [ev.RollingBack("analysis failed", automatic=True)])
    await settled(n)
    assert files(slack) == []

    async def summary():
        return [m for m in slack.messages("deploys") if "No chart: matplotlib" in m["text"]]

    (said,) = await wait_for(summary, 10, what="the summary")
    assert said["thread_ts"] == (await store.get(d.id)).message_ts
    assert "(1 pass, 1 fail)" in said["text"] and "error rate at most 30.0% (threshold 5.0%)" in said["text"]


def test_the_figure_draws_exactly_the_points(monkeypatch):
    points = tuple(
        Point(1000 + 30 * i, "canary", v, w, r, 0.002, 90 + i, 80.0)
        for i, (v, w, r) in enumerate([("pass", 50, 0.01), ("inconclusive", 50, None), ("fail", 100, 0.3)])
    )
    figures = []
    monkeypatch.setattr(chart_render, "_png", lambda fig, metadata=None: figures.append(fig) or b"")
    chart_render.analysis_chart(ChartData(7, "#7", points, 0.05, 1000.0, rolled_back_at=1075.0))
    (fig,) = figures
    errors, latency, weight = fig.axes
    new = errors.lines[0]
    assert list(new.get_xdata()) == [0.0, 1.0] and list(new.get_ydata()) == [1.0, 30.0]  # no point invented
    assert list(latency.lines[0].get_ydata()) == [90, 91, 92]
    assert list(weight.lines[0].get_ydata()) == [50, 50, 100]
    marked = {tuple(c.get_offsets()[0]) for c in latency.collections}
    assert marked == {(0.0, 90.0), (0.5, 91.0), (1.0, 92.0)}  # a verdict marker at every measurement
    assert 1000.0 in [line.get_ydata()[0] for line in latency.lines]  # the threshold


def test_chart_data_leaves_out_a_repairs_and_a_flags_measurements():
    store = Store(":memory:", ManualClock())
    d = store.create_deployment(
        service="web", env="production", version="v2", strategy="canary", kind="deploy",
        requested_by="U0ALICE", plan=PLAN, channel="deploys",
    )  # fmt: skip
    store.record(d.id, BOT, "measurement", {**measurement(990, 100, 0.0), "repair": True})
    store.record(d.id, BOT, "measurement", measurement(1000, 50, 0.0))
    data = chart_data(store.get(d.id), store.events(d.id))
    assert [p.at for p in data.points] == [1000] and data.max_error_rate == 0.05
    store.close()


async def test_the_local_slack_refuses_files_the_way_slack_does(world):
    slack, _store, n = world
    client = n.client

    async def refused(files: str) -> str:
        with pytest.raises(SlackApiError) as caught:
            await client.api_call("files.completeUploadExternal", params={"files": files})
        return caught.value.response["error"]

    url = await client.files_getUploadURLExternal(filename="a.png", length=4)
    files = json.dumps([{"id": url["file_id"], "title": "A"}])
    assert await refused(files) == "file_upload_not_complete"
    async with aiohttp.ClientSession() as http:
        async with http.post(url["upload_url"], data=b"12345") as r:  # not the announced length
            assert r.status == 400
        async with http.post(url["upload_url"], data=b"1234") as r:
            assert r.status == 200
        first = await client.files_completeUploadExternal(files=json.loads(files), channel_id="deploys")
        assert first["files"][0]["title"] == "A" and first["files"][0]["size"] == 4
        assert await refused(files) == "file_already_completed"
        assert await refused('[{"id": "F0NONE"}]') == "file_not_found"
        async with http.get(slack.url + "/_sandbox/files", params={"channel": "nowhere"}) as r:
            assert r.status == 404
        async with http.get(slack.url + "/_sandbox/files", params={"channel": "deploys"}) as r:
            (listed,) = await r.json()
    assert listed["name"] == "a.png" and base64.b64decode(listed["content_b64"]) == b"1234"
    assert listed["thread_ts"] is None and listed["ts"] is not None  # shared in the channel itself


def test_the_console_shows_a_shared_file():
    from bot.sandbox.render import Directory, render_message

    file = {"name": "deploy-3-e9.png", "mimetype": "image/png", "size": 1234, "permalink": "http://x/F1"}
    lines, _ = render_message(
        {"text": "Rolled back: the chart of its 1 measurement.", "files": [file]}, Directory(), 1
    )
    assert lines[-1] == "  [file deploy-3-e9.png (image/png, 1234 bytes): http://x/F1]"
