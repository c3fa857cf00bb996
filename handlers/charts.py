"""A deployment's analysis chart in its thread: when the last analysis of a canary or blue-green plan
passed (AnalysisPassed of the plan's last analyze step) and when it rolls back (RollingBack) after any
measurement, the chart of its audited measurements (bot.app.chart_data) is drawn on a worker thread
(handlers/ui/chart_render.py) and uploaded with files_upload_v2 into the thread.

It rides the SlackNotifier's delivery: the notifier hands each event it shows here (`consider`), and the
upload is a post in the deployment channel's ChannelOutbox, after the thread lines that came before it;
the notifier's "slack" cursor moves only once it is sent, so a crash repeats it rather than losing it. A
repeat is not a duplicate: each chart is named after its outbox event (deploy-12-e345.png); the attempt is
in the audit before the upload (`chart_upload`) and the file after (`chart_posted`, with its permalink,
which the Home tab links); a repeat finds `chart_posted`, or — after a crash in between — looks for a
file of that name in the thread before uploading again. Without matplotlib the thread gets the text
summary instead (at least once, like the thread's lines). An upload Slack refuses past slack_sdk's
retries is logged, not retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.store.aio import AsyncStore
from bot.app.chart_data import ChartData, chart_data
from bot.domain.analysis_events import AnalysisPassed
from bot.domain.events import DomainEvent, OutboxEntry, RollingBack
from bot.domain.model import BOT, Deployment
from handlers.slack_outbox import ChannelOutbox, Post
from handlers.ui import chart_text
from handlers.ui.chart_render import ChartsUnavailable, analysis_chart

log = logging.getLogger(__name__)
STRATEGIES = ("canary", "blue-green")
UPLOAD, POSTED = "chart_upload", "chart_posted"  # the audit actions: the attempt, and the file


def wanted(event: DomainEvent, d: Deployment) -> str | None:
    """Why this event gets a chart ("analysis", "rollback"), or None."""
    if d.strategy not in STRATEGIES and d.kind != "rollback":
        return None
    if isinstance(event, RollingBack):
        return "rollback"
    if isinstance(event, AnalysisPassed):
        later = [s for s in d.plan[event.index + 1 :] if s.get("kind") == "analyze"]
        return None if later else "analysis"
    return None


class ChartPoster:
    def __init__(
        self,
        client: AsyncWebClient,
        store: AsyncStore,
        outbox: Callable[[str], ChannelOutbox],
        on_posted: Callable[[], None] | None = None,
        render: Callable[[ChartData], bytes] = analysis_chart,
    ):
        self.client, self.store, self.outbox = client, store, outbox
        self.on_posted, self.render = on_posted, render

    def consider(self, entry: OutboxEntry, d: Deployment, channel: str) -> None:
        """An event the notifier is showing: queue the deployment's chart when it is one that gets one."""
        why = wanted(entry.event, d)
        if why is None:
            return
        name = f"deploy-{d.id}-e{entry.id}.png"
        drawing = asyncio.get_running_loop().create_task(self._draw(d.id), name=f"chart-{d.id}")

        async def send() -> dict[str, Any] | None:  # the outbox's turn: the thread's earlier lines are out
            await self._deliver(d.id, name, why, channel, drawing)
            return None  # nothing more for the outbox to post: the upload shared it

        self.outbox(channel).post(Post(("chart", d.id), build=send))

    async def _draw(self, deployment_id: int) -> tuple[ChartData, bytes | None]:
        """The chart's points from the audit, drawn off the event loop (None: matplotlib is missing)."""
        d = await self.store.get(deployment_id)
        data = chart_data(d, await self.store.events(deployment_id))
        if not data.points:
            return data, None
        try:
            return data, await asyncio.to_thread(self.render, data)
        except ChartsUnavailable as exc:
            log.info("no chart for deployment #%s (%s): the text summary instead", deployment_id, exc)
            return data, None

    async def _deliver(
        self, deployment_id: int, name: str, why: str, channel: str, drawing: asyncio.Task
    ) -> None:
        data, png = await drawing
        if not data.points:
            return  # nothing was measured (a rollback before any bake): nothing to draw
        d = await self.store.get(deployment_id)
        trail = [e for e in await self.store.events(deployment_id) if e.details.get("name") == name]
        if any(e.action == POSTED for e in trail) or d.message_ts is None:
            return
        if png is None:  # words, like the thread's other lines: at least once
            await self.client.chat_postMessage(
                channel=channel, thread_ts=d.message_ts, text=chart_text.summary(data, why)
            )
            await self.store.record(d.id, BOT, POSTED, {"name": name, "why": why, "text": True})
            return
        if any(e.action == UPLOAD for e in trail):  # tried before a crash: it may be there already
            found = await self._in_thread(channel, d.message_ts, name)
            if found is not None:
                await self._posted(d, name, why, found)
                return
        await self.store.record(d.id, BOT, UPLOAD, {"name": name, "why": why})
        out = await self.client.files_upload_v2(
            channel=channel,
            thread_ts=d.message_ts,
            filename=name,
            content=png,
            title=chart_text.title(data, why),
            alt_txt=chart_text.alt(data),
            initial_comment=chart_text.comment(data, why),
        )
        await self._posted(d, name, why, out.get("file") or {})

    async def _posted(self, d: Deployment, name: str, why: str, file: dict[str, Any]) -> None:
        details = {"name": name, "why": why, "file": file.get("id"), "permalink": file.get("permalink")}
        await self.store.record(d.id, BOT, POSTED, details)
        if self.on_posted is not None:
            self.on_posted()

    async def _in_thread(self, channel: str, ts: str, name: str) -> dict[str, Any] | None:
        out = await self.client.conversations_replies(channel=channel, ts=ts, limit=200)
        for m in out.get("messages") or []:
            for f in m.get("files") or []:
                if f.get("name") == name:
                    return dict(f)
        return None
