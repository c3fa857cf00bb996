"""After success: the live version is watched for the environment's `verify_seconds`, judged against the
pre-deploy baseline with the project's analysis (bot.app.measure, bot.domain.analysis), one measurement
per analysis interval. A regression raises a critical alert (VerificationRegressed; the alert carries a
Roll back now button) and, with `rollback_during_verify` and the old slot still warm, rolls back by
itself; a quiet period is `verified` (an event: the deployment stays succeeded). Then the requester is
asked how it went. Timers come from the store (bot.adapters.store.aftercare): a restart resumes every
verification still watching; a newer deployment of the service and environment ends the older one's."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from bot.app.measure import measure
from bot.app.ports import Metrics, Platform, PlatformError
from bot.app.storage import Storage
from bot.clock import Clock
from bot.config.model import Settings, Target
from bot.config.verification import defers_scale_down
from bot.domain.analysis import GroupMetrics, Measurement, Sample
from bot.domain.events import Detail, DomainEvent
from bot.domain.flags import flag_key
from bot.domain.machine import State
from bot.domain.model import BOT, Deployment
from bot.domain.verification import (
    AUDIT_ACTIONS,
    FeedbackAsked,
    VerificationEnded,
    VerificationRegressed,
    VerificationStarted,
    Verified,
    outcome_at_end,
    regression,
)
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

Audit = tuple[str, str, dict[str, Any]]
LABEL = "verification"  # the measurements' phase (their lines say "new version": it is not a canary)
VERIFIED_KINDS = ("deploy", "promote")
RECENT = 50  # the latest deployments a restart looks at for a success whose verification never started  # a rollback is not verified (there is nothing to roll back to)


def next_due(started: float, interval: float, until: float, now: float) -> float | None:
    """When the next measurement is due: on the grid started + k·interval (the last one at `until`), so
    each measurement's own duration never pushes the later ones back; the first point after `now` (a
    restart, or a measurement slower than the interval, skips the points it missed). None once `until`
    has passed."""
    if now >= until:
        return None
    k = max(1, math.floor((now - started) / interval) + 1) if interval > 0 else 1
    return min(started + k * interval, until)


class WatchRecord(Protocol):
    deployment_id: int
    slot: str | None
    baseline_slot: str | None
    started: float | None
    until: float | None
    baseline: dict[str, Any] | None
    measurements: list[dict[str, Any]]
    deferred_scale_down: bool

    @property
    def watching(self) -> bool: ...


class AftercareBook(Protocol):
    """The store's part for it (bot.adapters.store.aftercare.AsyncAftercare)."""

    async def watch(self, deployment_id: int) -> Any: ...
    async def watching(self) -> Sequence[Any]: ...
    async def start(self, deployment_id: int, **fields: Any) -> list[int]: ...
    async def supersede(
        self,
        deployment_id: int,
        superseded: Callable[[int], tuple[Sequence[Audit], Sequence[DomainEvent]]],
        now: float,
    ) -> list[int]: ...
    async def add_measurement(
        self, deployment_id: int, measurement: dict[str, Any], audit: Sequence[Audit]
    ) -> bool: ...
    async def end(
        self,
        deployment_id: int,
        outcome: str,
        now: float,
        audit: Sequence[Audit],
        events: Sequence[DomainEvent],
    ) -> bool: ...
    async def clear_deferred_scale_down(
        self, deployment_id: int, audit: Sequence[Audit], events: Sequence[DomainEvent]
    ) -> bool: ...
    async def ask(
        self, deployment_id: int, audit: Sequence[Audit], events: Sequence[DomainEvent]
    ) -> bool: ...


# Asks for a rollback of the deployment's service and environment as the bot; the new deployment's id.
RequestRollback = Callable[[Deployment, str], Awaitable[int]]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).astimezone(UTC).timestamp()


class Verifications:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        book: AftercareBook,
        platform: Platform,
        metrics: Metrics,
        clock: Clock,
    ):
        self.settings, self.store, self.book = settings, store, book
        self.platform, self.metrics, self.clock = platform, metrics, clock
        self.request_rollback: RequestRollback | None = None  # set by the Engine (through intake)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._group = TaskGroup("verifications")

    # ------------------------------------------------------------------------------- hooks

    async def started(self, d: Deployment) -> None:
        """A deployment started: earlier verifications of its service and environment end (superseded)."""
        if flag_key(d.service) is not None:
            return
        ended = await self.book.supersede(d.id, lambda other: _superseded(other, d.id), self.clock.now())
        for other in ended:
            self._stop(other)
            await self.ask(await self.store.get(other))

    async def succeeded(self, d: Deployment, since: float | None = None) -> None:
        """A deployment succeeded: its verification starts (or, without one, the question is asked);
        `since`: when it succeeded, for one found after a restart that cut the start short."""
        if flag_key(d.service) is not None:
            return
        target = self.settings.target(d.service, d.env)
        seconds = target.env.verify_seconds
        if seconds <= 0 or d.kind not in VERIFIED_KINDS or not d.context.get("slot"):
            await self.ask(d)
            return
        now = self.clock.now() if since is None else since
        slot = str(d.context["slot"])
        baseline_slot = str(d.context.get("stable_slot") or slot)
        baseline, words = await self._baseline(target, baseline_slot, d)
        until = now + seconds
        details = {"until": until, "seconds": seconds, "slot": slot, "baseline_slot": baseline_slot}
        details["baseline"] = words or "none"
        ended = await self.book.start(
            d.id,
            slot=slot,
            baseline_slot=baseline_slot,
            started=now,
            until=until,
            baseline=None if baseline is None else vars(baseline),
            deferred_scale_down=defers_scale_down(target)
            and d.strategy != "rolling"
            and not d.context.get("stable_scaled_down"),
            audit=[(BOT, "verification_started", details)],
            events=[VerificationStarted(until, seconds, words)],
            superseded=lambda other: _superseded(other, d.id),
        )
        self._spawn(d.id)
        for other in ended:
            self._stop(other)
            await self.ask(await self.store.get(other))

    async def resume(self) -> None:
        """After a restart: every verification still watching is carried on to its end (one whose end
        passed meanwhile is judged at once, from what was measured before); a recent success whose
        verification never started (the crash came between the two) starts it now, from its success."""
        for w in await self.book.watching():
            self._spawn(w.deployment_id)
        newest: set[tuple[str, str]] = set()
        for d in await self.store.latest(None, RECENT):
            if (d.service, d.env) in newest:
                continue
            newest.add((d.service, d.env))
            if d.state != State.SUCCEEDED or d.finished_at is None or flag_key(d.service) is not None:
                continue
            seconds = self.settings.target(d.service, d.env).env.verify_seconds
            finished = _epoch(d.finished_at)
            if finished + seconds > self.clock.now() and await self.book.watch(d.id) is None:
                await self.succeeded(d, since=finished)

    def _spawn(self, deployment_id: int) -> None:
        if deployment_id in self._tasks and not self._tasks[deployment_id].done():
            return
        task = self._group.spawn(self._watch(deployment_id), f"verify-{deployment_id}")
        self._tasks[deployment_id] = task

    def _stop(self, deployment_id: int) -> None:
        task = self._tasks.pop(deployment_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def settle(self) -> None:
        await self._group.wait()

    async def shutdown(self) -> None:
        await self._group.aclose()

    # ------------------------------------------------------------------------------ watching

    async def _baseline(self, target: Target, slot: str, d: Deployment) -> tuple[GroupMetrics | None, str]:
        """The pre-deploy numbers of the slot that served before the deployment: one window ending when
        it was requested. None (and words saying so) when the backend has none."""
        config = target.analysis
        end = datetime.fromtimestamp(_epoch(d.created_at), UTC)
        start = datetime.fromtimestamp(end.timestamp() - config.window_seconds, UTC)
        try:
            scope = await self.platform.metric_scope(target, slot)
            read = await self.metrics.slot_metrics(
                target.env.aws_role_arn, {"baseline": scope}, start, end, config.latency_statistic
            )
        except PlatformError as exc:
            log.warning("deployment #%s: no pre-deploy baseline: %s", d.id, exc)
            return None, ""
        got = read.get("baseline")
        if got is None or not got.requests:
            return None, ""
        return got, Sample.of(got).describe()

    async def _watch(self, deployment_id: int) -> None:
        try:
            await self._watch_until_end(deployment_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "verification of deployment #%s stopped; it resumes at the next start", deployment_id
            )

    async def _watch_until_end(self, deployment_id: int) -> None:
        w = await self.book.watch(deployment_id)
        if w is None or not w.watching:
            return
        d = await self.store.get(deployment_id)
        target = self.settings.target(d.service, d.env)
        config = target.analysis
        scope = await self.platform.metric_scope(target, w.slot)
        baseline = GroupMetrics(**w.baseline) if w.baseline else None
        measured = [Measurement.from_dict(m) for m in w.measurements]
        until = float(w.until)

        async def reader(start: datetime, end: datetime) -> dict[str, GroupMetrics]:
            read = await self.metrics.slot_metrics(
                target.env.aws_role_arn, {"canary": scope}, start, end, config.latency_statistic
            )
            return {"canary": read["canary"], **({"stable": baseline} if baseline is not None else {})}

        started = float(w.started if w.started is not None else self.clock.now())
        while (due := next_due(started, config.interval_seconds, until, self.clock.now())) is not None:
            await self.clock.sleep(max(0.0, due - self.clock.now()))
            m = await measure(
                self.metrics,
                config,
                account=target.env.aws_role_arn,
                canary=None,
                stable=None,
                clock=self.clock,
                label=LABEL,
                reader=reader,
            )
            # kept with the verification (its row), not one audit event each: the audit gets them all,
            # in brief, with how it ended (a bake's "measurement" events stay the bake's alone)
            if not await self.book.add_measurement(deployment_id, m.to_dict(), ()):
                return  # it ended meanwhile (a newer deployment took over)
            measured.append(m)
            failed = regression(config, measured)
            unhealthy = await self._unhealthy(target, str(w.slot))
            if failed is None and unhealthy:  # health checks too: the practice's first check
                failed = Measurement(at=m.at, label=LABEL, verdict="fail", reasons=[unhealthy])
            if failed is not None:
                await self._regressed(d, target, w, failed, due)
                return
        await self._quiet(d, w, measured)

    async def _regressed(
        self, d: Deployment, target: Target, w: WatchRecord, m: Measurement, due: float
    ) -> None:
        reason = "; ".join(m.reasons) or "the live version's analysis failed"
        automatic = 0
        details: dict[str, Any] = {"reason": reason, "measurement_at": m.at, "version": d.version}
        details["measurement_due"] = due  # its place in the schedule (`at` adds the loop's lag)
        details["measurements"] = await self._brief(d.id)
        automatic_allowed = target.env.rollback_during_verify and self.request_rollback is not None
        if automatic_allowed and await self._old_slot_warm(d, target, w):
            details["automatic_rollback"] = True
        ended = await self.book.end(
            d.id,
            "regressed",
            self.clock.now(),
            [(BOT, AUDIT_ACTIONS["regressed"], details)],
            [] if details.get("automatic_rollback") else [VerificationRegressed(reason, d.version, 0)],
        )
        if not ended:
            return
        if details.get("automatic_rollback") and self.request_rollback is not None:
            try:
                automatic = await self.request_rollback(d, f"verification of {d.ref} regressed: {reason}")
            except Exception as exc:  # refused (a freeze, a lock): people decide, with the button
                log.warning("deployment #%s: automatic rollback refused: %s", d.id, exc)
                await self.store.record(
                    d.id, BOT, "automatic_rollback_refused", {"error": str(exc)},
                    events=[VerificationRegressed(reason, d.version, 0)],
                )  # fmt: skip
                await self.ask(d)
                return
            await self.store.record(
                d.id,
                BOT,
                "automatic_rollback",
                {"rollback": automatic},
                events=[VerificationRegressed(reason, d.version, automatic)],
            )
        await self.ask(d)

    async def _unhealthy(self, target: Target, slot: str) -> str | None:
        """The live slot's targets failing their health checks, in words (None: healthy, or unknown)."""
        try:
            health = await self.platform.target_health(target, slot)
        except PlatformError:
            return None
        bad = [t for t in health if t.state not in ("healthy", "draining", "initial")]
        if not bad:
            return None
        why = ", ".join(sorted({t.reason or t.state for t in bad}))
        return f"{len(bad)} of {len(health)} targets unhealthy in {target.target_group(slot)} ({why})"

    async def _brief(self, deployment_id: int) -> list[dict[str, Any]]:
        w = await self.book.watch(deployment_id)
        return [_brief(Measurement.from_dict(m)) for m in (w.measurements if w is not None else [])]

    async def _old_slot_warm(self, d: Deployment, target: Target, w: WatchRecord) -> bool:
        """The slot that served before still runs its tasks (the previous version): a rollback is one
        traffic switch."""
        if not w.baseline_slot or w.baseline_slot == w.slot:
            return False
        try:
            now = await self.platform.running(target, w.baseline_slot)
        except PlatformError:
            return False
        previous = d.previous_version or d.context.get("previous_version")
        return (
            now.running > 0 and bool(now.image) and (previous is None or now.image == target.image(previous))
        )

    async def _quiet(self, d: Deployment, w: WatchRecord, measured: list[Measurement]) -> None:
        outcome = outcome_at_end(measured)
        passed = sum(1 for m in measured if m.verdict == "pass")
        seconds = float(w.until or 0) - float(w.started or 0)
        details: dict[str, Any] = {"passed": passed, "total": len(measured), "seconds": seconds}
        details["measurements"] = [_brief(m) for m in measured]
        event: DomainEvent
        if outcome == "verified":
            event = Verified(seconds, passed, len(measured))
        else:
            why = next((r for m in reversed(measured) for r in m.reasons), "no measurement")
            event = VerificationEnded("inconclusive", why)
            details["reason"] = why
        if await self.book.end(
            d.id, outcome, self.clock.now(), [(BOT, AUDIT_ACTIONS[outcome], details)], [event]
        ):
            if w.deferred_scale_down:
                await self._scale_down_old_slot(d, w)
            await self.ask(d)

    async def _scale_down_old_slot(self, d: Deployment, w: WatchRecord) -> None:
        """The old slot, kept warm through verification, runs no tasks now — unless it has traffic again or
        a newer deployment of the service took over (then it is that one's)."""
        target = self.settings.target(d.service, d.env)
        newest = await self.store.history(d.service, d.env, limit=1)
        slot = w.baseline_slot
        if not slot or (newest and newest[0].id != d.id):
            return
        try:
            weights = await self.platform.weights(target)
            if weights.get(slot, 0) > 0:
                return
            await self.platform.update_slot(target, slot, count=0)
        except PlatformError as exc:
            log.warning("deployment #%s: the old slot %s was not scaled down: %s", d.id, slot, exc)
            return
        words = f"Scaled {target.ecs_service(slot)} down to 0 tasks (kept warm through verification)"
        await self.book.clear_deferred_scale_down(
            d.id, [(BOT, "scale_down", {"slot": slot, "after": "verification"})], [Detail(words)]
        )

    # ------------------------------------------------------------------------------ feedback

    async def ask(self, d: Deployment) -> None:
        """One thread message asking the requester how it went (once per deployment)."""
        if flag_key(d.service) is not None or d.requested_by == BOT:
            return
        current = await self.store.get(d.id)
        if current.state != State.SUCCEEDED:
            return
        await self.book.ask(
            d.id, [(BOT, "feedback_asked", {"requester": d.requested_by})], [FeedbackAsked(d.requested_by)]
        )


def _brief(m: Measurement) -> dict[str, Any]:
    """A verification measurement as its end's audit event lists it: when, the verdict, the live
    version's numbers and why not a pass."""
    out: dict[str, Any] = {"at": m.at, "verdict": m.verdict}
    if m.canary is not None:
        out.update(error_rate=m.canary.error_rate, latency_ms=m.canary.latency_ms, requests=m.canary.requests)
    if m.reasons:
        out["reasons"] = m.reasons
    return out


def _superseded(deployment_id: int, by: int) -> tuple[list[Audit], list[DomainEvent]]:
    return (
        [(BOT, AUDIT_ACTIONS["superseded"], {"by": by})],
        [VerificationEnded("superseded", by=by)],
    )
