"""When a deployment may run: refusing it during a freeze (unless overridden), scheduling it for --at or
the next low-traffic window, running it when its time comes, and moving it on with a warning when the
time passed (a missed window, a bot that was down)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from bot.app.ports import Metrics, Platform, Timer
from bot.app.storage import Storage
from bot.app.traffic_hours import lowest_traffic_hours, suggest_text
from bot.clock import Clock
from bot.config.model import Settings, Target
from bot.domain import commands as cmds
from bot.domain.errors import Refused
from bot.domain.events import GateChanged, Scheduled, WindowMissed
from bot.domain.machine import State
from bot.domain.model import BOT, Deployment
from bot.domain.mrkdwn import code, text
from bot.domain.when import parse_when
from bot.domain.windows import (
    Freeze,
    Window,
    active_freeze,
    decide,
    describe_windows,
    next_allowed,
    overdue,
    window_at,
)

# the gate's answer for a scheduled deployment whose time came: None when ready, else what it waits for
WaitingFor = Callable[[Deployment], Awaitable[str | None]]


class Scheduling:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        platform: Platform,
        metrics: Metrics,
        clock: Clock,
        timer: Timer,
        *,
        waiting_for: WaitingFor,
        reconsider: Callable[[int], Awaitable[None]],
    ):
        self.settings, self.store, self.clock = settings, store, clock
        self.platform, self.metrics = platform, metrics
        self.waiting_for, self.reconsider = waiting_for, reconsider
        self.scheduler = timer
        self._stored_freezes: list[Freeze] | None = None
        self._freeze_generation = 0
        self.cache_freezes = True  # False with several replicas: another one may freeze (bot.app.replica)
        timer.bind(self._due, self._missed)

    async def freezes(self) -> list[Freeze]:
        """The config's freezes and the store's. The store's are kept in memory between changes: this
        process is their only writer (freeze/unfreeze below), so every /deploy is not one more trip to the
        store. A read that a change overtook is not kept (the generation moved on). Several replicas
        (one shared PostgreSQL) must drop this cache or invalidate it from the database."""
        stored = self._stored_freezes if self.cache_freezes else None
        if stored is None:
            generation = self._freeze_generation
            stored = await self.store.freezes()
            if generation == self._freeze_generation:
                self._stored_freezes = stored
        return [*self.settings.freezes, *stored]

    def _freezes_changed(self) -> None:
        self._freeze_generation += 1
        self._stored_freezes = None

    async def timing(
        self,
        command: cmds.Deploy | cmds.Rollback | cmds.Promote,
        kind: str,
        target: Target,
        user: str,
        roles: frozenset[str],
        reason: str | None,
    ) -> dict[str, Any]:
        """When it may run: refuse during a freeze (unless overridden), or schedule it (--at, --window).
        Returns context keys: run_at (epoch, future only), window_override, freeze_override."""
        now = self.clock.utcnow()
        env = target.env.name
        freezes = await self.freezes()
        may_override = target.env.policy.allowed("override_freeze", roles)
        hint = (
            ' To override, an allowed role adds --reason "...".'
            if not may_override
            else ' To override it, add --reason "..." (a critical alert is raised).'
        )
        at_text = getattr(command, "at", None)
        if isinstance(command, cmds.Deploy) and (command.window or at_text):
            if at_text:
                return await self._at(at_text, target, freezes, user, reason, may_override, hint)
            run_at = next_allowed(target.windows, freezes, env, now)
            if run_at is None:
                raise Refused(
                    f"No allowed time for {env} in the next 30 days (windows: "
                    f"{describe_windows(target.windows) or 'none'})."
                )
            return {"run_at": run_at.timestamp()} if run_at > now else {}
        frozen = active_freeze(freezes, env, now)
        if frozen and kind != "rollback":  # rolling back is how a frozen service gets fixed
            if may_override and reason:
                await self.store.record(
                    None, user, "freeze_override", {"env": env, "reason": reason, "freeze": frozen.reason}
                )
                return {"freeze_override": reason, "freeze": frozen.reason}
            raise Refused(f"Refused: {frozen.describe()}." + hint)
        return {}

    async def _at(
        self,
        at_text: str,
        target: Target,
        freezes: list[Freeze],
        user: str,
        reason: str | None,
        may_override: bool,
        hint: str,
    ) -> dict[str, Any]:
        now, env = self.clock.utcnow(), target.env.name
        try:
            at = parse_when(at_text, now=now, default_tz=tz_of(target.windows))
        except ValueError as exc:
            raise Refused(f"--at {code(at_text)}: {text(exc, None)}") from None  # it quotes the text
        decision = decide(at, target.windows, freezes, env, now=now)
        if decision.ok:
            return {"run_at": at.timestamp()} if at > now else {}
        if decision.freeze is None and may_override and reason:
            await self.store.record(None, user, "window_override", {"env": env, "reason": reason})
            return {"run_at": at.timestamp(), "window_override": reason}
        raise Refused(f"Not scheduled: {decision.reason}." + ("" if decision.freeze else hint))

    def waits(self, d: Deployment) -> bool:
        """True when `d` has a time to run at that is still to come."""
        run_at: float | None = d.context.get("run_at")
        return run_at is not None and run_at > self.clock.now()

    async def schedule_or_start(self, d: Deployment) -> bool:
        """A deployment with a future run_at waits in SCHEDULED for the scheduler; True when it does."""
        if not self.waits(d):
            return False
        run_at: float = d.context["run_at"]
        if d.state != State.SCHEDULED:
            when = datetime.fromtimestamp(run_at, UTC).isoformat()
            d = await self.store.transition(
                d.id, "schedule", BOT, details={"run_at": run_at}, events=[Scheduled(when)]
            )
        else:
            await self.store.append_events(d.id, [GateChanged()])
        self.scheduler.schedule(str(d.id), run_at)
        return True

    async def _due(self, key: str) -> None:
        """The scheduler's callback at a scheduled deployment's time: run it if allowed and approved, or
        move it to the next window with a warning."""
        d = await self.store.find(int(key))
        if d is None or d.state != State.SCHEDULED:
            return
        target = self.settings.target(d.service, d.env)
        now = self.clock.utcnow()
        windows = () if d.context.get("window_override") else target.windows
        decision = decide(now, windows, await self.freezes(), d.env, now=now)
        if not decision.ok:
            await self._move(d, decision.run_at, f"it could not run: {decision.reason}")
            return
        waiting = await self.waiting_for(d)
        if waiting is not None:
            span = window_at(windows, now)
            after = span[1] if span else now
            await self._move(
                d,
                next_allowed(windows, await self.freezes(), d.env, after) if windows else None,
                f"the window opened while it still waited for {waiting}",
            )
            return
        await self.store.save_progress(d.id, context={**d.context, "run_at": None})
        await self.reconsider(d.id)

    async def _missed(self, key: str, due: float) -> None:
        await self.reschedule_after_downtime(int(key))

    async def _move(self, d: Deployment, run_at: datetime | None, why: str) -> None:
        tz = tz_of(self.settings.target(d.service, d.env).windows)
        if run_at is None:
            await self.store.transition(
                d.id,
                "cancel",
                BOT,
                outcome=f"Skipped: {why}; no later window to move it to",
                details={"why": why},
                events=[WindowMissed(None, why, tz)],
            )
            return
        await self.store.save_progress(
            d.id,
            context={**d.context, "run_at": run_at.timestamp()},
            event=(BOT, "moved", {"why": why, "run_at": run_at.isoformat()}),
            events=[WindowMissed(run_at.isoformat(), why, tz)],
        )
        self.scheduler.schedule(str(d.id), run_at.timestamp())

    async def reschedule_after_downtime(self, deployment_id: int) -> None:
        d = await self.store.get(deployment_id)
        if d.state != State.SCHEDULED or not d.context.get("run_at"):
            return
        target = self.settings.target(d.service, d.env)
        windows = () if d.context.get("window_override") else target.windows
        due = datetime.fromtimestamp(d.context["run_at"], UTC)
        decision = overdue(
            due,
            windows,
            await self.freezes(),
            d.env,
            now=self.clock.utcnow(),
            grace_seconds=self.scheduler.misfire_grace_seconds,
        )
        if decision.ok:
            self.scheduler.schedule(str(d.id), max(d.context["run_at"], self.clock.now()))
        else:
            await self._move(d, decision.run_at, decision.reason)

    async def freeze(self, env: str, until: str, reason: str, user: str) -> Freeze:
        now = self.clock.utcnow()
        try:
            end = parse_when(until, now=now, default_tz=tz_of(self.settings.environments[env].windows))
        except ValueError as exc:
            raise Refused(f"until {code(until)}: {text(exc, None)}") from None
        try:
            return await self.store.add_freeze(Freeze(env, now, end, reason, user))
        finally:
            self._freezes_changed()

    async def unfreeze(self, env: str, user: str) -> tuple[int, str]:
        try:
            lifted = await self.store.lift_freezes(env, user)
        finally:
            self._freezes_changed()
        now = self.clock.utcnow()
        remaining = [f.describe() for f in self.settings.freezes if f.env in (env, "*") and f.end > now]
        return lifted, "; ".join(remaining)

    async def windows_report(self, service: str, env: str) -> str:
        target = self.settings.target(service, env)
        scopes = [await self.platform.metric_scope(target, s) for s in target.slots]
        tz = tz_of(target.windows)
        hours = await lowest_traffic_hours(
            self.metrics, target.env.aws_role_arn, scopes, now=self.clock.utcnow(), tz=tz
        )
        return f"*{service} in {env}*\n" + suggest_text(target.windows, hours, tz)

    def start(self) -> None:
        if not self.scheduler.running:
            self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown()


def tz_of(windows: tuple[Window, ...] | list[Window]) -> str:
    """The time zone people think in for an environment: its windows', else UTC."""
    return windows[0].tz.key if windows else "UTC"
