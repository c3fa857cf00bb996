"""The alert lifecycle, mixed into SlackNotifier: critical alerts raised (one per incident), acknowledged and
resolved; warnings and info to the channels of their level; the escalation timer loop (rounds kept in the
store, so a restart neither loses nor repeats one); the waiting/slow warnings; the PagerDuty queue (its
delivery in handlers/paging.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.pagerduty import PagerDuty
from bot.adapters.store.aio import AsyncStore
from bot.app.plan_time import plan_minimum_seconds
from bot.clock import Clock
from bot.domain import alerts as policy
from bot.domain.alerts import CRITICAL, INFO, WARNING, AlertConfig
from bot.domain.durations import duration
from bot.domain.machine import State
from bot.domain.model import Alert, Deployment
from handlers.paging import Pager
from handlers.slack_outbox import ChannelOutbox, Post, Update
from handlers.ui import alert_blocks
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Acknowledgement:
    alert: Alert
    now: bool  # True: this click acknowledged it; False: someone had already (nothing changed)


class AlertLifecycle:
    """The alert half of SlackNotifier (which provides the attributes and message helpers declared here)."""

    client: AsyncWebClient
    store: AsyncStore
    alerts: AlertConfig
    clock: Clock
    pagerduty: PagerDuty | None
    on_change: Callable[[], None] | None
    watch_interval: float
    _posting: set[int]
    _shown: dict[tuple[str, str], tuple[str, list[Any]]]
    _escalating: set[tuple[int, int]]
    _timer_wake: asyncio.Event
    _pages: asyncio.Queue[tuple[str, Alert, Deployment] | None]
    paging: Pager | None = None  # PagerDuty's delivery, while it runs

    if TYPE_CHECKING:

        def _ensure_started(self) -> None: ...
        def _outbox(self, channel: str) -> ChannelOutbox: ...
        def _render(self, d: Deployment, channel: str) -> None: ...
        def _line(self, d: Deployment, channel: str, text: str) -> None: ...
        async def _deployment_channel(self, d: Deployment) -> str: ...
        async def _deployment_link(self, d: Deployment) -> str | None: ...
        async def _update_message(
            self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]
        ) -> None: ...
        async def channel_id(self, name: str) -> str: ...
        async def mention(self, ref: str | None) -> str | None: ...

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("Home tab refresh failed")

    async def _raise_critical(self, d: Deployment, event: str, text: str) -> None:
        """A critical alert, unless one about this deployment is still unacknowledged: then the news goes
        to that alert's thread (one alert, one escalation, one page per incident)."""
        standing = [a for a in await self.store.open_alerts(deployment_id=d.id) if a.level == CRITICAL]
        standing = [a for a in standing if not a.acknowledged]
        if standing:
            what = alert_blocks.alert_title(event, d, "Update")
            await self._alert_line(standing[-1], f"{what}: {slack_ui.detail_text(d, text)}")
            return
        now = self.clock.now()  # one reading: the escalation is due exactly its delay after the raise
        a = await self.store.raise_alert(
            d.id, event, CRITICAL, text, escalate_at=self.alerts.first_escalation(now), raised_ts=now
        )
        if a is None:  # only keyed alerts are ever refused
            return
        for channel, in_thread in await self._alert_channels(CRITICAL, d, always=True):
            if in_thread:
                await self._ensure_message(d)
            self._post_alert(a.id, d.id, channel, in_thread)
        self._timer_wake.set()
        self._page("trigger", a, d)
        self._changed()

    async def _alert_channels(
        self, level: str, d: Deployment, always: bool = False
    ) -> list[tuple[str, bool]]:
        """(channel id, whether it is the deployment's own channel) for `level` in d's environment. In its
        own channel an alert goes in the deployment's thread: the channel keeps one message per deployment."""
        own = await self._deployment_channel(d)
        out = []
        for name in self.alerts.channels(level, d.env):
            try:
                channel = await self.channel_id(name)
            except LookupError as exc:
                log.error("%s alert for deployment #%s: %s", level, d.id, exc)
                continue
            if (channel, channel == own) not in out:
                out.append((channel, channel == own))
        if not out and always:
            out.append((own, True))
        return out

    def _post_alert(self, alert_id: int, deployment_id: int, channel: str, in_thread: bool) -> None:
        shown: dict[str, Any] = {}

        async def build() -> dict[str, Any] | None:
            a, d = await self.store.alert(alert_id), await self.store.get(deployment_id)
            text, blocks = await self._critical_content(a, d)
            shown.update(text=text, blocks=blocks)
            kwargs: dict[str, Any] = {"text": text, "blocks": blocks}
            if in_thread:
                if d.message_ts is None:
                    log.warning("critical alert #%s: deployment #%s has no message to go under", a.id, d.id)
                    return None
                kwargs["thread_ts"] = d.message_ts
            return kwargs

        async def sent(resp: dict[str, Any]) -> None:
            a = await self.store.add_alert_message(alert_id, resp["channel"], resp["ts"])
            self._shown[(resp["channel"], resp["ts"])] = (shown["text"], shown["blocks"])
            self._refresh_alert(a)  # acknowledged while it was being posted? (skipped if not)
            self._timer_wake.set()

        group = ("deployment", deployment_id) if in_thread else ("alert", alert_id)
        self._outbox(channel).post(Post(group, build=build, sent=sent))

    async def _recover_alerts(self, within: float = 86400.0) -> None:
        """Critical alerts raised but never shown (the bot, or the replica delivering the outbox, died
        between the two): found in Slack by their block id and recorded, or posted now. Never lost."""
        for a in await self.store.unshown_alerts(self.clock.now() - within):
            d = await self.store.get(a.deployment_id)
            for channel, in_thread in await self._alert_channels(CRITICAL, d, always=True):
                try:
                    ts = await self._alert_posted(a, d, channel, in_thread)
                except SlackApiError as exc:
                    log.warning("cannot look for alert #%s in Slack (%s); posting it", a.id, exc)
                    ts = None
                if ts is not None:
                    await self.store.add_alert_message(a.id, channel, ts)
                    continue
                if in_thread:
                    await self._ensure_message(d)
                self._post_alert(a.id, d.id, channel, in_thread)

    async def _alert_posted(self, a: Alert, d: Deployment, channel: str, in_thread: bool) -> str | None:
        marker = f"alert-{a.id}"
        if in_thread:
            if d.message_ts is None:
                return None
            out = await self.client.conversations_replies(channel=channel, ts=d.message_ts, limit=200)
        else:
            out = await self.client.conversations_history(
                channel=channel, oldest=f"{max(0.0, a.raised_ts - 300.0):.6f}", limit=200
            )
        for m in out.get("messages") or []:
            if any(b.get("block_id") == marker for b in m.get("blocks") or []):
                return str(m["ts"])
        return None

    async def _ensure_message(self, d: Deployment) -> None:
        """Queue the deployment's first message if it has none and none is queued (an alert goes under it)."""
        if d.message_ts is None and d.id not in self._posting:
            self._render(d, await self._deployment_channel(d))

    async def _critical_content(self, a: Alert, d: Deployment) -> tuple[str, list[dict[str, Any]]]:
        next_target = None
        if a.next_escalation_at is not None and not a.acknowledged:
            next_target = await self.mention(self.alerts.escalation_target(a.rounds_sent + 1))
        text, blocks = alert_blocks.critical_alert(
            d,
            a,
            link=await self._deployment_link(d),
            oncall=await self.mention(self.alerts.oncall),
            rounds=max(self.alerts.escalation_rounds, a.rounds_sent),
            next_target=next_target,
        )
        return text, slack_ui.fit(blocks, f"(full record: /deploy audit {d.id})")

    def _refresh_alert(self, a: Alert) -> None:
        """Show an alert's current state (acknowledged, escalated, resolved) on each of its messages."""
        if a.level != CRITICAL:
            return
        for m in a.messages:
            channel, ts = m["channel"], m["ts"]

            async def run(channel: str = channel, ts: str = ts) -> None:
                current = await self.store.alert(a.id)
                text, blocks = await self._critical_content(
                    current, await self.store.get(current.deployment_id)
                )
                await self._update_message(channel, ts, text, blocks)

            self._outbox(channel).update(("alert", a.id, ts), Update(("alert", a.id), run))

    async def _alert_line(self, a: Alert, text: str) -> None:
        """A line in the thread of an alert's first message."""
        if a.thread is None:
            d = await self.store.get(a.deployment_id)
            places = await self._alert_channels(CRITICAL, d, always=True)
            channel = places[0][0]
        else:
            channel = a.thread["channel"]

        async def thread() -> str | None:
            first = (await self.store.alert(a.id)).thread
            return first["ts"] if first else None

        self._outbox(channel).post(Post(("alert", a.id), line=text, thread=thread))

    async def acknowledge(self, alert_id: int, user: str) -> Acknowledgement:
        """A person acknowledges a critical alert. Only the first click counts; KeyError for no such alert."""
        won, a = await self.store.acknowledge_alert(alert_id, user)
        if won:
            self._ensure_started()
            self._refresh_alert(a)
            self._page("acknowledge", a, await self.store.get(a.deployment_id))
            self._timer_wake.set()
            self._changed()
        return Acknowledgement(a, won)

    async def _resolve(self, d: Deployment) -> None:
        """The deployment recovered (rolled back, or succeeded): its open alerts are resolved — and, when
        it succeeded, those of earlier deployments of the same service and environment too."""
        candidates = await self.store.open_alerts(deployment_id=d.id)
        if d.state == State.SUCCEEDED:
            earlier = await self.store.open_alerts(service=d.service, env=d.env)
            candidates += [a for a in earlier if a.deployment_id < d.id]
        if not candidates:
            return
        resolution = f"{d.ref} {d.state.word}" + (
            f" — {slack_ui.clip(slack_ui.outcome_text(d), 300)}" if d.outcome else ""
        )
        resolved = await self.store.resolve_alerts(
            sorted({a.id for a in candidates}), resolution, stop_escalation=not self.alerts.escalate_resolved
        )
        paged: set[int] = set()
        for a in resolved:
            self._refresh_alert(a)
            if a.level == CRITICAL and a.deployment_id not in paged:
                paged.add(a.deployment_id)
                self._page("resolve", a, await self.store.get(a.deployment_id))
        if resolved:
            self._timer_wake.set()
            self._changed()

    async def _warn(self, d: Deployment, event: str | None, text: str) -> None:
        """A warning goes to the warning channels; the deployment's own channel has it in the thread."""
        for channel, in_own in await self._alert_channels(WARNING, d):
            if not in_own:
                self._post_simple(channel, d, WARNING, text, event)

    async def _inform(self, d: Deployment, text: str) -> None:
        """Info stays in the deployment's thread, unless info channels are configured."""
        places = [c for c, in_own in await self._alert_channels(INFO, d) if not in_own]
        for channel in places:
            self._post_simple(channel, d, INFO, text, None)

    def _post_simple(self, channel: str, d: Deployment, level: str, text: str, event: str | None) -> None:
        async def build() -> dict[str, Any]:
            link = await self._deployment_link(await self.store.get(d.id))
            fallback, blocks = alert_blocks.alert(d, level, text, link, event)
            return {"text": fallback, "blocks": slack_ui.fit(blocks, f"(full record: /deploy audit {d.id})")}

        self._outbox(channel).post(Post((level, d.id), build=build))

    # ------------------------------------------------------------------------------------ timers

    async def _run_timers(self) -> None:
        """Escalations (rebuilt from the store at start) and the timer warnings: approvals waiting too
        long, rollouts running too long."""
        watching = (
            self.alerts.approval_warning_seconds is not None or self.alerts.slow_rollout_seconds is not None
        )
        next_watch = self.clock.now()
        while True:
            self._timer_wake.clear()
            due = None
            try:
                await self._recover_escalations()
                now = self.clock.now()
                for a in await self.store.due_escalations(now):
                    await self._escalate(a, now)
                if watching and now >= next_watch:
                    await self._watch(now)
                    next_watch = now + self.watch_interval
                due = await self.store.next_escalation_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert timers failed; trying again")
                due = self.clock.now() + self.watch_interval
            deadlines = [t for t in (due, next_watch if watching else None) if t is not None]
            await self._sleep_until(min(deadlines) if deadlines else None)

    async def _sleep_until(self, deadline: float | None) -> None:
        """Sleep until `deadline` on the clock (None: for ever), or until something changes the timers."""

        async def until() -> None:
            assert deadline is not None
            while (left := deadline - self.clock.now()) > 0:
                await self.clock.sleep(left)  # measured as the sleep starts: a clock jump cannot stretch it

        waiter: asyncio.Future[Any] = asyncio.ensure_future(self._timer_wake.wait())
        tasks = {waiter}
        if deadline is not None:
            tasks.add(asyncio.ensure_future(until()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _escalate(self, a: Alert, now: float) -> None:
        round_ = a.rounds_sent + 1
        due = a.next_escalation_at if a.next_escalation_at is not None else now
        following = self.alerts.following_escalation(round_, due, now)
        if await self.store.claim_escalation(a.id, round_, following):
            await self._post_escalation(a, round_, waited=now - a.raised_ts)

    async def _post_escalation(self, a: Alert, round_: int, waited: float) -> None:
        """Round `round_` in the alert's thread, mentioning that round's target; confirmed once posted."""
        self._escalating.add((a.id, round_))
        if a.thread is not None:
            channel, thread_ts = a.thread["channel"], a.thread["ts"]
        else:  # its message never went out: the escalation stands on its own
            places = await self._alert_channels(CRITICAL, await self.store.get(a.deployment_id), always=True)
            channel, thread_ts = places[0][0], None
        target_ref = self.alerts.escalation_target(round_)

        async def build() -> dict[str, Any] | None:
            current = await self.store.alert(a.id)
            if current.acknowledged:  # acknowledged while it waited for its turn
                await self.store.confirm_escalation(a.id, round_, {"skipped": "acknowledged"})
                self._escalating.discard((a.id, round_))
                return None
            d = await self.store.get(current.deployment_id)
            target = await self.mention(target_ref)
            rounds = max(self.alerts.escalation_rounds, round_)
            link = await self._deployment_link(d)
            text, blocks = alert_blocks.escalation(d, current, round_, rounds, target, waited, link)
            blocks = slack_ui.fit(blocks)
            kwargs: dict[str, Any] = {"text": text, "blocks": blocks}
            if thread_ts is not None:
                kwargs["thread_ts"] = thread_ts
            return kwargs

        async def sent(resp: dict[str, Any]) -> None:
            self._escalating.discard((a.id, round_))
            await self.store.confirm_escalation(a.id, round_, {"target": target_ref, "ts": resp["ts"]})
            self._refresh_alert(await self.store.alert(a.id))
            self._timer_wake.set()
            self._changed()

        def failed() -> None:
            self._escalating.discard((a.id, round_))  # left claimed: the timers try it again

        self._outbox(channel).post(Post(("alert", a.id), build=build, sent=sent, failed=failed))

    async def _recover_escalations(self) -> None:
        """Rounds claimed but never confirmed (the bot stopped while posting them, or Slack refused): if
        the alert's thread has the round, record it; else post it now. Never twice, never lost."""
        for a in await self.store.in_doubt_escalations():
            round_ = a.rounds_sent + 1
            if (a.id, round_) in self._escalating:
                continue
            if await self._escalation_posted(a, round_):
                await self.store.confirm_escalation(a.id, round_, {"recovered": True})
                continue
            await self._post_escalation(a, round_, waited=self.clock.now() - a.raised_ts)

    async def _escalation_posted(self, a: Alert, round_: int) -> bool:
        if a.thread is None:
            return False
        marker = alert_blocks.escalation_block_id(a.id, round_)
        try:
            out = await self.client.conversations_replies(
                channel=a.thread["channel"], ts=a.thread["ts"], limit=200
            )
        except SlackApiError as exc:
            log.warning(
                "cannot read alert #%s's thread (%s); posting round %s",
                a.id,
                exc.response.get("error"),
                round_,
            )
            return False
        messages: list[dict[str, Any]] = out.get("messages") or []
        return any(b.get("block_id") == marker for m in messages for b in m.get("blocks") or [])

    async def _watch(self, now: float) -> None:
        """Warnings raised by time passing: an approval waiting too long, a rollout running too long."""
        for d in await self.store.active():
            if d.state == State.AWAITING_APPROVAL:
                waits = [e for e in await self.store.events(d.id) if e.action == "await_approval"]
                since = _epoch(waits[-1].at if waits else d.created_at)
                if policy.approval_overdue(since, now, self.alerts):
                    waiting_for = (d.context.get("gate") or {}).get("waiting_for") or "approval"
                    text = f"{d.ref} has been waiting {duration(now - since)} for {waiting_for}."
                    await self._timer_warning(d, "approval_waiting", text)
            elif d.state == State.RUNNING and self.alerts.slow_rollout_seconds is not None:
                starts = [e for e in await self.store.events(d.id) if e.action == "start"]
                since = _epoch(starts[-1].at) if starts else _epoch(d.created_at)
                if policy.rollout_overdue(since, now, plan_minimum_seconds(d.plan), self.alerts):
                    text = (
                        f"{d.ref} has been running for {duration(now - since)}; its plan takes at least "
                        f"{duration(plan_minimum_seconds(d.plan))}. Is the rollout stuck?"
                    )
                    await self._timer_warning(d, "slow_rollout", text)

    async def _timer_warning(self, d: Deployment, event: str, text: str) -> None:
        if await self.store.raise_alert(d.id, event, WARNING, text, key=f"{event}:{d.id}") is None:
            return  # raised once already
        channel = await self._deployment_channel(d)
        self._line(d, channel, f":warning: {text}")
        await self._warn(d, event, text)
        self._changed()

    # --------------------------------------------------------------------------------- PagerDuty

    def _page(self, action: str, a: Alert, d: Deployment) -> None:
        """An alert of `d` changed: its incident may owe PagerDuty `action` (the store says what is owed)."""
        if self.pagerduty is not None:
            self._ensure_started()
            self._pages.put_nowait((action, a, d))

    async def _run_pager(self) -> None:
        """PagerDuty's delivery (handlers/paging.py): what is owed at start, then each page as it comes,
        retried in order per incident until PagerDuty has it."""
        assert self.pagerduty is not None
        self.paging = Pager(self.store, self.pagerduty, self.clock, link=self._deployment_link)
        await self.paging.run(self._pages)

    # ---------------------------------------------------------------------------------- lookups


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
