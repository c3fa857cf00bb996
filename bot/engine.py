"""The engine runs deployments as asyncio tasks: it creates them (taking the lock atomically in the store),
runs their plan step by step persisting the step index before and after each step, rolls back when a
step fails, applies people's actions (pause, resume, abort, cancel), and resumes in-flight deployments
after a restart. It emits Notices; it knows nothing of Slack."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot import commands as cmds
from bot.app.plans import NeedsHuman, Step, StepContext, StepFailed, plan, rollback_plan, step_from_dict
from bot.app.ports import Metrics, Platform, PlatformError
from bot.clock import Clock
from bot.machine import BEFORE_START, IllegalTransition, State
from bot.mrkdwn import code, text
from bot.schedule import (
    Freeze,
    Scheduler,
    active_freeze,
    decide,
    describe_windows,
    format_when,
    lowest_traffic_hours,
    next_allowed,
    overdue,
    parse_when,
    suggest_text,
    window_at,
)
from bot.settings import Settings
from bot.store import Amendment, AsyncStore, Conflict, Deployment, LockInfo

log = logging.getLogger(__name__)
BOT = "deploybot"


@dataclass(frozen=True)
class Notice:
    """Something people should see. kind: "update" (the deployment's message should show its new state),
    "progress" (the live line on the message), "detail" (a line for its thread)."""

    deployment: Deployment
    kind: str
    text: str = ""
    level: str = "info"  # info | warning | critical


class Refused(Exception):
    """A request that cannot be carried out, with a message saying why and what to do instead."""


class Forbidden(Refused):
    """The person lacks the role the environment requires for the action (recorded in the audit)."""

    def __init__(self, message: str, action: str, env: str):
        self.action, self.env = action, env
        super().__init__(message)


BUTTON_ACCESS = {"abort": "rollback", "promote": "promote"}  # pause, resume, cancel: deploy
# Actions checked against another action's roles, with words of their own in a refusal.
SAME_ROLE_AS = {"freeze": "override_freeze", "emergency_rollback": "emergency"}
ACTION_WORDS = {
    "deploy": "deploy",
    "approve": "approve deployments",
    "promote": "promote",
    "rollback": "roll back",
    "lock": "lock or unlock services",
    "override_freeze": "override a freeze",
    "freeze": "freeze or unfreeze",  # the same role as override_freeze; the words of /deploy freeze
    "emergency": "deploy with --emergency",
    "emergency_rollback": "roll back with --emergency",
}
DONE_WORDS = {"pause": "Paused", "resume": "Resumed", "cancel": "Cancelled"}


@dataclass(frozen=True)
class Planned:
    """A dry run's answer: what would happen, touching nothing."""

    service: str
    env: str
    version: str | None
    strategy: str
    steps: list[Step]

    @property
    def eta_seconds(self) -> float:
        return sum(s.min_seconds() for s in self.steps)


Amended = Amendment  # the requester asked again before their request started (see Store.request_or_amend)

Listener = Callable[[Notice], Awaitable[None]]


class Engine:
    def __init__(
        self, settings: Settings, store: AsyncStore, platform: Platform, metrics: Metrics, clock: Clock
    ):
        self.settings, self.store, self.clock = settings, store, clock
        self.platform, self.metrics = platform, metrics
        self._listeners: list[Listener] = []
        self._tasks: dict[int, asyncio.Task] = {}
        self._gates: dict[int, asyncio.Event] = {}  # set = may run; cleared while paused
        self._contexts: dict[int, StepContext] = {}  # the running plans' context, for promote
        self._admitting: set[int] = set()
        self.scheduler = Scheduler(
            clock, self._scheduled_due, misfire_grace_seconds=300.0, on_missed=self._scheduled_missed
        )
        self._admission_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._background: set[asyncio.Task] = set()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def emit(self, notice: Notice) -> None:
        for listener in self._listeners:
            try:
                await listener(notice)
            except Exception:  # a broken notifier must never stop a deployment
                log.exception("notice listener failed for deployment #%s", notice.deployment.id)

    # ----------------------------------------------------------------------------------- requests

    def _plan(
        self, service: str, env: str, strategy: str | None, gradual: bool = False
    ) -> tuple[str, list[Step]]:
        """The strategy (the environment's when none is asked for) and its steps; Refused if unknown."""
        target = self.settings.target(service, env)
        strategy = strategy or target.strategy
        try:
            return strategy, plan(strategy, target, gradual=gradual)
        except StepFailed as exc:
            raise Refused(f"Cannot deploy {service} to {env}: {exc}.") from None

    @staticmethod
    def _rollback_strategy(configured: str, gradual: bool) -> str:
        """Rollbacks go back in one switch (blue-green, using the warm slot when there is one), or, with
        --gradual on a two-slot service, step by step with analysis (canary weights)."""
        if configured == "rolling":
            return "rolling"
        return "canary" if gradual else "blue-green"

    def dry_run(self, command: cmds.Deploy) -> Planned:
        strategy, steps = self._plan(command.service, command.env, command.strategy)
        return Planned(command.service, command.env, command.version, strategy, steps)

    # ------------------------------------------------------------------------------------ access

    async def check_access(
        self,
        action: str,
        env: str,
        user: str,
        roles: frozenset[str] | set[str],
        *,
        service: str | None = None,
        deployment: Deployment | None = None,
    ) -> None:
        """Raise Forbidden (and record the refusal, with what it was about) unless `roles` may do
        `action` in `env`."""
        policy = self.settings.environments[env].policy
        role_action = SAME_ROLE_AS.get(action, action)  # one role, words of their own
        if policy.allowed(role_action, roles):
            return
        needed = " or ".join(policy.needed_roles(role_action))
        words = ACTION_WORDS.get(action, action)
        message = (
            f"You need the {needed} role to {words} in {env}."
            if needed
            else f"Nobody may {words} in {env}: [environments.{env}.access] names no role for it or for deploy."
        )
        await self.refused(action, env, user, message, service=service, deployment=deployment)
        raise Forbidden(message, action, env)

    async def refused(
        self,
        action: str,
        env: str | None,
        user: str,
        reason: str,
        *,
        service: str | None = None,
        deployment: Deployment | None = None,
    ) -> None:
        """Record a refusal in the audit trail with everything known about it: the deployment it names (so
        `/deploy audit ID` shows it), the service and environment (so `deploybot audit --service` does)."""
        if deployment is not None:
            service, env = deployment.service, deployment.env
        details = {"action": action, "env": env, "service": service, "reason": reason}
        await self.store.record(deployment.id if deployment else None, user, "refused", details)

    async def request(
        self,
        command: cmds.Deploy | cmds.Rollback | cmds.Promote,
        user: str,
        request_key: str | None = None,
        roles: frozenset[str] | set[str] | None = None,
    ) -> Deployment | LockInfo | Amended:
        """Check access and guards, create the deployment (or answer who holds the lock), then admit it in
        the background: checklist, approvals, start."""
        roles = frozenset(roles or ())
        action = {cmds.Deploy: "deploy", cmds.Rollback: "rollback", cmds.Promote: "promote"}[type(command)]
        env_name = command.target_env if isinstance(command, cmds.Promote) else command.env
        await self.check_access(action, env_name, user, roles, service=command.service)
        emergency = command.emergency if isinstance(command, cmds.Deploy | cmds.Rollback) else None
        if emergency:
            breaks_glass = "emergency_rollback" if isinstance(command, cmds.Rollback) else "emergency"
            await self.check_access(breaks_glass, env_name, user, roles, service=command.service)
        gradual = False
        gate: dict[str, Any] = {}  # context keys recording why the gate is (or is not) skipped
        if isinstance(command, cmds.Deploy):
            service, env, version, kind = command.service, command.env, command.version, "deploy"
            reason, strategy = command.reason, command.strategy
        elif isinstance(command, cmds.Rollback):
            service, env, kind, reason = command.service, command.env, "rollback", command.reason
            version = command.version or await self._known_good(service, env)
            known = await self._known_good_versions(service, env)
            if version in known:
                gate["known_good"] = f"{version} {known[version][0]}"
            elif not emergency:
                raise Refused(self._not_known_good(service, env, version, known))
            gradual = command.gradual
            strategy = self._rollback_strategy(self.settings.target(service, env).strategy, gradual)
        else:
            service, env, kind, reason, strategy = command.service, command.target_env, "promote", None, None
            source = await self.store.last_succeeded(service, command.source_env)
            if source is None:
                raise Refused(
                    f"Cannot promote {service} from {command.source_env}: no deployment of {service} "
                    f"has succeeded in {command.source_env} yet."
                )
            version = source.version
            reason = f"promoted from {command.source_env} (deployment #{source.id})"
            lower = await self._downgrade(service, env, source)
            if lower is not None and not command.allow_downgrade:
                raise Refused(lower["message"])
            if lower is not None:
                gate["allow_downgrade"] = {"from": lower["from"], "to": lower["to"], "source": source.id}
        strategy, steps = self._plan(service, env, strategy, gradual)
        target = self.settings.target(service, env)
        timing = await self._timing(command, kind, target, user, roles, reason)
        guards = target.env.policy.guards
        if (
            guards.refuse_all_at_once
            and strategy == "rolling"
            and (target.deployment_configuration.minimum_healthy_percent == 0)
        ):
            raise Refused(
                f"Refused: a rolling deploy with minimum_healthy_percent 0 stops every task of {service} "
                f"at once in {env}. Set environments.{env}.deployment_configuration.minimum_healthy_"
                "percent above 0, or use --strategy canary or blue-green."
            )
        fields = dict(
            service=service,
            env=env,
            version=version,
            strategy=strategy,
            kind=kind,
            requested_by=user,
            reason=reason,
            plan=[s.to_dict() for s in steps],
            channel=target.env.channel,
            request_key=request_key,
            context={**({"emergency": emergency} if emergency else {}), **gate, **timing},
        )
        # One store transaction decides create vs locked. Only a request that may amend its requester's own
        # pending deployment takes the service+env admission lock (and decides again under it): an
        # amendment never lands between a start's readiness check and its start transition, and the
        # others are answered without queueing behind it.
        result = await self.store.request_or_amend(amendable=False, **fields)
        held = result.deployment if isinstance(result, LockInfo) else None
        if (
            kind == "deploy"
            and held is not None
            and held.requested_by == user
            and held.kind == kind
            and held.state in BEFORE_START
        ):
            async with self._admission_lock(service, env):
                result = await self.store.request_or_amend(amendable=True, **fields)
        if isinstance(result, Amended):
            if result.changed:
                await self._amended(result, user)
            return result
        if isinstance(result, LockInfo) or result.state != State.REQUESTED or result.id in self._admitting:
            return result  # locked, or the same request seen again
        if "allow_downgrade" in gate:
            await self.store.record(result.id, user, "allow_downgrade", gate["allow_downgrade"])
        if "known_good" in gate and not emergency:
            await self.store.record(
                result.id,
                BOT,
                "gate_skipped",
                {"skipped": "manual items and approvals", "why": f"known-good: {gate['known_good']}"},
            )
        await self.emit(Notice(result, "update"))
        self._admitting.add(result.id)
        self._spawn(self._admit(result.id))
        return result

    # ---------------------------------------------------------------------- windows, freezes, schedule

    async def freezes(self) -> list[Freeze]:
        return [*self.settings.freezes, *(await self.store.freezes())]

    async def _timing(
        self, command: Any, kind: str, target: Any, user: str, roles: frozenset[str], reason: str | None
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
                try:
                    at = parse_when(at_text, now=now, default_tz=_tz_of(target.windows))
                except ValueError as exc:
                    raise Refused(f"--at {code(at_text)}: {text(exc, None)}") from None  # it quotes the text
                decision = decide(at, target.windows, freezes, env, now=now)
                if decision.ok:
                    return {"run_at": at.timestamp()} if at > now else {}
                if decision.freeze is None and may_override and reason:
                    await self.store.record(None, user, "window_override", {"env": env, "reason": reason})
                    return {"run_at": at.timestamp(), "window_override": reason}
                raise Refused(f"Not scheduled: {decision.reason}." + ("" if decision.freeze else hint))
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
                return {"freeze_override": reason}
            raise Refused(f"Refused: {frozen.describe()}." + hint)
        return {}

    async def _schedule_or_start(self, d: Deployment) -> bool:
        """A deployment with a future run_at waits in SCHEDULED for the scheduler; True when it does."""
        run_at = d.context.get("run_at")
        if not run_at or run_at <= self.clock.now():
            return False
        if d.state != State.SCHEDULED:
            d = await self.store.transition(d.id, "schedule", BOT, details={"run_at": run_at})
        self.scheduler.schedule(str(d.id), run_at)
        return True

    async def _scheduled_due(self, key: str) -> None:
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
        policy = target.env.policy
        ready = await self._readiness(d, policy, _skips_gate(d))
        if not ready.ready:
            span = window_at(windows, now)
            after = span[1] if span else now
            await self._move(
                d,
                next_allowed(windows, await self.freezes(), d.env, after) if windows else None,
                f"the window opened while it still waited for {ready.waiting_for()}",
            )
            return
        await self.store.save_progress(d.id, context={**d.context, "run_at": None})
        await self._reconsider(d.id)

    async def _scheduled_missed(self, key: str, due: float) -> None:
        await self._reschedule_after_downtime(int(key))

    async def _move(self, d: Deployment, run_at: datetime | None, why: str) -> None:
        tz = _tz_of(self.settings.target(d.service, d.env).windows)
        if run_at is None:
            d = await self.store.transition(
                d.id,
                "cancel",
                BOT,
                outcome=f"Skipped: {why}; no later window to move it to",
                details={"why": why},
            )
            await self.emit(Notice(d, "update", d.outcome or "", "warning"))
            return
        await self.store.save_progress(
            d.id,
            context={**d.context, "run_at": run_at.timestamp()},
            event=(BOT, "moved", {"why": why, "run_at": run_at.isoformat()}),
        )
        self.scheduler.schedule(str(d.id), run_at.timestamp())
        d = await self.store.get(d.id)
        await self.emit(
            Notice(d, "update", f":warning: Skipped: {why}. Moved to {format_when(run_at, tz)}.", "warning")
        )

    async def _reschedule_after_downtime(self, deployment_id: int) -> None:
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
            end = parse_when(until, now=now, default_tz=_tz_of(self.settings.environments[env].windows))
        except ValueError as exc:
            raise Refused(f"until {code(until)}: {text(exc, None)}") from None
        return await self.store.add_freeze(Freeze(env, now, end, reason, user))

    async def unfreeze(self, env: str, user: str) -> tuple[int, str]:
        lifted = await self.store.lift_freezes(env, user)
        now = self.clock.utcnow()
        remaining = [f.describe() for f in self.settings.freezes if f.env in (env, "*") and f.end > now]
        return lifted, "; ".join(remaining)

    async def windows_report(self, service: str, env: str) -> str:
        target = self.settings.target(service, env)
        scopes = [await self.platform.metric_scope(target, s) for s in target.slots]
        tz = _tz_of(target.windows)
        hours = await lowest_traffic_hours(
            self.metrics, target.env.aws_role_arn, scopes, now=self.clock.utcnow(), tz=tz
        )
        return f"*{service} in {env}*\n" + suggest_text(target.windows, hours, tz)

    def start_scheduler(self) -> None:
        if not self.scheduler.running:
            self.scheduler.start()

    async def _amended(self, a: Amended, user: str) -> None:
        """The requester changed the version or strategy before it started: approvals no longer count."""
        d = a.deployment
        await self.emit(
            Notice(
                d,
                "detail",
                f"<@{user}> changed it to {d.version or 'the current version'} with "
                f"{d.strategy}; approvals given so far no longer count.",
            )
        )
        try:
            await self.recheck(d.id, user)
        except IllegalTransition:
            pass  # cancelled or started meanwhile: its message already says so

    # ------------------------------------------------------------------------------ admission gate

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _admit(self, deployment_id: int) -> None:
        """Run the automatic checks and guards; start when the checklist and approvals allow, else wait."""
        try:
            d = await self.store.get(deployment_id)
            emergency = d.context.get("emergency")
            if emergency:
                await self.store.record(d.id, d.requested_by, "emergency", {"reason": emergency})
                await self.emit(
                    Notice(
                        d,
                        "update",
                        f":rotating_light: Emergency {'rollback' if d.kind == 'rollback' else 'deploy'} by "
                        f"<@{d.requested_by}>: "
                        f"{text(emergency)}. Manual items and approvals are skipped.",
                        "critical",
                    )
                )
            if d.context.get("freeze_override"):
                await self.emit(
                    Notice(
                        d,
                        "update",
                        f":rotating_light: Freeze override by <@{d.requested_by}>: "
                        f"{text(d.context['freeze_override'])}",
                        "critical",
                    )
                )
            await self._run_checks(d)
            refusal = await self._guard_refusal(d)
            if refusal:
                d = await self.store.transition(
                    d.id, "cancel", BOT, outcome=refusal, details={"guard": refusal}
                )
                await self.emit(Notice(d, "update", refusal, "warning"))
                return
            await self._reconsider(d.id, checks_fresh=True)
        except Exception:
            log.exception("admitting deployment #%s failed", deployment_id)
            d = await self.store.get(deployment_id)
            if d.state in BEFORE_START:
                d = await self.store.transition(
                    d.id,
                    "cancel",
                    BOT,
                    outcome="internal error while checking it; nothing was changed (see the bot's log)",
                )
                await self.emit(Notice(d, "update", d.outcome or "", "warning"))
        finally:
            self._admitting.discard(deployment_id)

    async def _run_checks(self, d: Deployment) -> None:
        from bot.checks import run_check

        target = self.settings.target(d.service, d.env)
        for item in target.env.policy.automatic_items:
            ok, evidence = await run_check(item, d, target, self.platform, self.metrics, self.store)
            await self.store.set_item(d.id, item.id, ok, BOT, evidence)

    async def _guard_refusal(self, d: Deployment) -> str | None:
        policy = self.settings.environments[d.env].policy
        states = await self.store.items(d.id)
        by_check = {i.check: states.get(i.id) for i in policy.automatic_items}
        if policy.guards.require_rollback_target and d.kind != "rollback":
            state = by_check.get("rollback_target")
            if state is None:
                from bot.checklist import Item
                from bot.checks import run_check

                ok, evidence = await run_check(
                    Item("rollback_target", "Rollback target", "automatic", "rollback_target"),
                    d,
                    self.settings.target(d.service, d.env),
                    self.platform,
                    self.metrics,
                    self.store,
                )
            else:
                ok, evidence = state.done, state.evidence
            if not ok:
                return (
                    f"Refused: no rollback target ({evidence}). Deploy a known-good version first, so there "
                    f"is something to return to."
                )
        if (
            policy.guards.require_health_and_monitoring
            and not d.context.get("emergency")
            and d.kind != "rollback"
        ):
            for check, what in (("no_alarms", "monitoring"), ("targets_healthy", "the health check")):
                state = by_check.get(check)
                if check == "no_alarms" and state is None:
                    return (
                        f'Refused: {d.env} has no monitoring item (check = "no_alarms") in its checklist. '
                        f"Add one naming the service's CloudWatch alarms."
                    )
                if state is not None and not state.done:
                    return f"Refused: {what} is not satisfied ({state.evidence}). Fix it, then deploy again."
        return None

    async def _reconsider(self, deployment_id: int, checks_fresh: bool = False) -> None:
        """Start the deployment if everything is in place (automatic checks run again right before), else
        record what it waits for and show it."""
        first = await self.store.get(deployment_id)
        async with self._admission_lock(first.service, first.env):
            d = await self.store.get(deployment_id)
            if d.state not in BEFORE_START:
                return
            policy = self.settings.environments[d.env].policy
            emergency = _skips_gate(d)
            ready = await self._readiness(d, policy, emergency)
            if ready.ready and not checks_fresh and policy.automatic_items:
                await self._run_checks(d)  # again, right before execution
                ready = await self._readiness(d, policy, emergency)
            await self._save_gate(d, policy, ready, emergency)
            d = await self.store.get(deployment_id)
            if await self._schedule_or_start(d):
                await self.emit(Notice(await self.store.get(deployment_id), "update"))
                return
            if ready.ready:
                if deployment_id not in self._tasks:
                    # The start transition happens here, under the lock an amendment takes: the version it
                    # starts with is the last amendment accepted, and none is accepted after it.
                    try:
                        await self._transition(d, "start")
                    except (IllegalTransition, Conflict):
                        return  # cancelled meanwhile (the cancel is on its message)
                    self.start(deployment_id)
                return
            if d.state == State.REQUESTED:
                d = await self.store.transition(
                    d.id, "await_approval", BOT, details={"waiting_for": ready.waiting_for()}
                )
            await self.emit(Notice(d, "update"))

    async def _readiness(self, d: Deployment, policy: Any, emergency: bool) -> Any:
        from bot.checklist import readiness

        states = await self.store.items(d.id)
        approvals = await self.store.approvals(d.id)
        return readiness(policy, states, approvals, d.requested_by, self.clock.now(), emergency)

    async def _save_gate(self, d: Deployment, policy: Any, ready: Any, emergency: bool) -> None:
        """What the deployment's message shows while it waits: items, approvals, what is missing."""
        states = await self.store.items(d.id)
        items = []
        for item in policy.items:
            st = states.get(item.id)
            items.append(
                {
                    "id": item.id,
                    "label": item.label,
                    "kind": item.kind,
                    "done": bool(st and st.done),
                    "by": st.by if st else None,
                    "at": st.at if st else None,
                    "evidence": st.evidence if st else None,
                    "skipped": emergency and item.kind == "manual",
                }
            )
        gate = {
            "items": items,
            "approvals": [{"user": a.user, "at": a.at} for a in ready.valid_approvals],
            "required": 0 if emergency else policy.approvals.required,
            "approver_roles": list(policy.approvals.roles),
            "waiting_for": ready.waiting_for(),
            "emergency": d.context.get("emergency"),
            "known_good": None if d.context.get("emergency") else d.context.get("known_good"),
        }
        await self.store.save_progress(d.id, context={**d.context, "gate": gate})

    def _admission_lock(self, service: str, env: str) -> asyncio.Lock:
        """One lock per service+env (at most one deployment holds it at a time): readiness, the start
        transition and a requester's amendment of the same deployment never interleave."""
        return self._admission_locks.setdefault((service, env), asyncio.Lock())

    async def approve(self, deployment_id: int, user: str, roles: frozenset[str] | set[str]) -> Deployment:
        d = await self.store.get(deployment_id)
        if d.state not in BEFORE_START:
            raise IllegalTransition("approve", d.state)
        if user == d.requested_by:
            await self.refused("approve", d.env, user, "own deployment", deployment=d)
            raise Refused(f"You requested deployment #{d.id}; someone else has to approve it (four eyes).")
        await self.check_access("approve", d.env, user, roles, deployment=d)
        policy = self.settings.environments[d.env].policy
        if policy.approvals.roles and not set(policy.approvals.roles) & set(roles):
            message = f"Approvals in {d.env} come from the {' or '.join(policy.approvals.roles)} role."
            await self.refused("approve", d.env, user, message, deployment=d)
            raise Forbidden(message, "approve", d.env)
        from bot.checklist import valid_approvals

        if any(
            a.user == user
            for a in valid_approvals(
                policy, await self.store.approvals(d.id), d.requested_by, self.clock.now()
            )
        ):
            raise Refused(f"You already approved deployment #{d.id}.")
        await self.store.approve(d.id, user)
        await self.emit(Notice(await self.store.get(d.id), "detail", f"Approved by <@{user}>"))
        await self._reconsider(d.id)
        return await self.store.get(d.id)

    async def reject(
        self, deployment_id: int, user: str, roles: frozenset[str] | set[str], reason: str
    ) -> Deployment:
        d = await self.store.get(deployment_id)
        if d.state not in BEFORE_START:
            raise IllegalTransition("reject", d.state)
        await self.check_access("approve", d.env, user, roles, deployment=d)
        d = await self.store.transition(
            d.id,
            "cancel",
            user,
            details={"rejected": reason},
            outcome=f"rejected by <@{user}>: {text(reason)}",
        )
        await self.emit(Notice(d, "update", f"Rejected by <@{user}>: {text(reason)}", "warning"))
        return d

    async def tick(
        self, deployment_id: int, user: str, roles: frozenset[str] | set[str], selected: set[str]
    ) -> Deployment:
        """The manual items ticked on the message are now exactly `selected` (what Slack sends)."""
        d = await self.store.get(deployment_id)
        if d.state not in BEFORE_START:
            raise IllegalTransition("tick", d.state)
        policy = self.settings.environments[d.env].policy
        states = await self.store.items(d.id)
        for item in policy.manual_items:
            want = item.id in selected
            if want == bool(states.get(item.id) and states[item.id].done):
                continue
            if item.roles and not set(item.roles) & set(roles):
                message = f"Ticking “{item.label}” needs the {' or '.join(item.roles)} role."
                await self.refused("tick", d.env, user, message, deployment=d)
                raise Forbidden(message, "tick", d.env)
            if not item.roles:
                await self.check_access("deploy", d.env, user, roles, deployment=d)
            await self.store.set_item(d.id, item.id, want, user)
        await self._reconsider(d.id, checks_fresh=False)
        return await self.store.get(d.id)

    async def recheck(self, deployment_id: int, user: str) -> Deployment:
        d = await self.store.get(deployment_id)
        if d.state not in BEFORE_START:
            raise IllegalTransition("recheck", d.state)
        await self._run_checks(d)
        await self._reconsider(d.id, checks_fresh=True)
        return await self.store.get(d.id)

    async def _known_good_versions(self, service: str, env: str) -> dict[str, tuple[str, str]]:
        """The versions a rollback may return to without the gate, newest first: version -> (why, short
        why). A version is known-good when it succeeded in `env`, or when it is the version the latest
        success there replaced (its warm slot, when the strategy keeps one). From the store only: the ack
        never waits for AWS."""
        known: dict[str, tuple[str, str]] = {}
        latest: Deployment | None = None
        for d in await self.store.history(service, env, limit=200):
            if d.state != State.SUCCEEDED or not d.version:
                continue
            latest = latest or d
            known.setdefault(d.version, (f"succeeded in {env} as #{d.id}", f"#{d.id}"))
        if latest is not None and latest.previous_version:
            known.setdefault(
                latest.previous_version,
                (f"ran in {env} until #{latest.id} replaced it", f"replaced by #{latest.id}"),
            )
        return known

    @staticmethod
    def _not_known_good(service: str, env: str, version: str, known: dict[str, tuple[str, str]]) -> str:
        listed = ", ".join(f"{v} ({short})" for v, (_, short) in known.items()) or "none yet"
        return (
            f"{version} never succeeded in {env}; known-good: {listed}. Roll back to one of those, or deploy "
            f"{version} through the whole gate (/deploy {service} {version} to {env}), or add "
            '--emergency "reason".'
        )

    async def _downgrade(self, service: str, env: str, source: Deployment) -> dict[str, Any] | None:
        """Whether promoting `source`'s version would lower what `env` runs: the versions compare lower
        (v4 < v5, v2.3.9 < v2.3.10), or, when they cannot be ordered, the version succeeded in `env` before
        the one running now. None: not a downgrade (or nothing to compare with)."""
        current = await self.store.last_succeeded(service, env)
        if current is None or not current.version or not source.version or current.version == source.version:
            return None
        order = compare_versions(source.version, current.version)
        if order is None:  # cannot be ordered: the environment's own history says which came first
            older = await self.store.last_succeeded(service, env, before=current.id)
            while older is not None and older.version != source.version:
                older = await self.store.last_succeeded(service, env, before=older.id)
            order = -1 if older is not None else 1
        if order >= 0:
            return None
        how = ", a rollback" if source.kind == "rollback" else ""
        return {
            "from": current.version,
            "to": source.version,
            "message": (
                f"{env} runs {current.version}; {source.env}'s last success is {source.version} "
                f"(#{source.id}{how}). Promoting would lower {env} to {source.version}. "
                "Add --allow-downgrade to do it."
            ),
        }

    async def _known_good(self, service: str, env: str) -> str:
        """The version before the current one that last succeeded here."""
        current = await self.store.last_succeeded(service, env)
        history = await self.store.history(service, env, limit=200)
        for d in history:
            if d.state == State.SUCCEEDED and current is not None and d.version != current.version:
                return d.version
        if current is not None and current.previous_version and current.previous_version != current.version:
            return current.previous_version
        raise Refused(
            f"No known-good version of {service} in {env} to roll back to. "
            f"Name one: /rollback {service} in {env} to VERSION"
        )

    # ------------------------------------------------------------------------------------ actions

    async def act(
        self, deployment_id: int, action: str, user: str, roles: frozenset[str] | None = None
    ) -> Deployment:
        """A person's action on a deployment. Raises IllegalTransition when its state does not allow it, and
        Forbidden when `roles` (given by handlers; None for the bot itself) lack the role it needs."""
        d = await self.store.get(deployment_id)
        if roles is not None:
            await self.check_access(BUTTON_ACCESS.get(action, "deploy"), d.env, user, roles, deployment=d)
        if action == "abort":
            if d.state not in (State.RUNNING, State.PAUSED):
                raise IllegalTransition(action, d.state)
            await self._stop_task(deployment_id)
            d = await self.store.transition(deployment_id, "abort", user, outcome=f"aborted by <@{user}>")
            self._gate(deployment_id).set()
            await self.emit(Notice(d, "update", f"Aborted by <@{user}>; rolling back", "warning"))
            self.start(deployment_id)
            return d
        if action == "promote":
            return await self.promote(deployment_id, user)
        if action == "cancel":
            self.scheduler.cancel(str(deployment_id))
        d = await self.store.transition(deployment_id, action, user)
        if action == "pause":
            self._gate(deployment_id).clear()
        elif action == "resume":
            self._gate(deployment_id).set()
        await self.emit(Notice(d, "update", f"{DONE_WORDS.get(action, action)} by <@{user}>"))
        return d

    async def promote(self, deployment_id: int, user: str, full: bool = False) -> Deployment:
        """Carry a paused deployment on past the step that paused it; `full`: skip straight to 100%."""
        d = await self.store.get(deployment_id)
        ctx = self._contexts.get(deployment_id)
        if d.state not in (State.PAUSED, State.RUNNING) or (d.state == State.RUNNING and not full):
            if d.state == State.RUNNING:
                raise Refused(
                    f"Deployment #{deployment_id} is running, not waiting for anyone; "
                    f"/promote {deployment_id} --full skips to 100%."
                )
            raise IllegalTransition("promote", d.state)
        if d.strategy == "rolling":
            raise Refused(f"Deployment #{deployment_id} is a rolling deploy: there is nothing to promote.")
        data = ctx.data if ctx is not None else dict(d.context)
        if d.state == State.PAUSED:
            data.setdefault("promoted", []).append(d.step_index)
        if full:
            data["full"] = True
        await self.store.save_progress(
            deployment_id,
            context=data,
            event=(user, "promote_requested", {"full": full, "step_index": d.step_index}),
        )
        if d.state == State.PAUSED:
            d = await self.store.transition(deployment_id, "promote", user, details={"full": full})
            self._gate(deployment_id).set()
        await self.emit(Notice(d, "update", f"Promoted by <@{user}>" + (" to 100%" if full else "")))
        return d

    # ------------------------------------------------------------------------------------ running

    def start(self, deployment_id: int) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(deployment_id), name=f"deployment-{deployment_id}"
        )
        self._tasks[deployment_id] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(deployment_id, None) if self._tasks.get(deployment_id) is t else None
        )

    async def _stop_task(self, deployment_id: int) -> None:
        task = self._tasks.pop(deployment_id, None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _gate(self, deployment_id: int) -> asyncio.Event:
        if deployment_id not in self._gates:
            self._gates[deployment_id] = asyncio.Event()
            self._gates[deployment_id].set()
        return self._gates[deployment_id]

    async def resume_in_flight(self) -> list[Deployment]:
        """After a restart: release stale locks, then carry on every deployment that was mid-plan."""
        for lock in await self.store.release_stale_locks():
            log.warning(
                "released stale lock on %s/%s (deployment #%s)", lock.service, lock.env, lock.deployment_id
            )
        resumed = []
        for d in await self.store.in_flight():
            if d.state == State.PAUSED:
                self._gate(d.id).clear()
            await self.store.record(d.id, BOT, "resume_after_restart", {"step_index": d.step_index})
            await self.emit(Notice(d, "detail", f"Bot restarted; carrying on from step {d.step_index + 1}."))
            self.start(d.id)
            resumed.append(d)
        for d in await self.store.scheduled():
            await self._reschedule_after_downtime(d.id)
        for d in await self.store.active():
            if d.state == State.REQUESTED:  # the crash came while its checks ran: check it again
                self._admitting.add(d.id)
                self._spawn(self._admit(d.id))
        return resumed

    async def wait(self, deployment_id: int) -> None:
        task = self._tasks.get(deployment_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop running plans where they are; the store has everything needed to resume them."""
        if self.scheduler.running:
            self.scheduler.shutdown()
        tasks = list(self._tasks.values()) + list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _context(self, d: Deployment, data: dict[str, Any]) -> StepContext:
        deployment_id = d.id

        async def report(text: str) -> None:
            await self.store.record(deployment_id, BOT, "detail", {"text": text})
            await self.emit(Notice(await self.store.get(deployment_id), "detail", text))

        async def progress(text: str) -> None:
            await self.emit(Notice(await self.store.get(deployment_id), "progress", text))

        async def checkpoint() -> None:
            await self._gate(deployment_id).wait()

        async def save() -> None:
            await self.store.save_progress(deployment_id, context=data)

        async def record(action: str, details: dict) -> None:
            await self.store.record(deployment_id, BOT, action, details)

        target = self.settings.target(d.service, d.env)
        return StepContext(
            deployment_id=d.id,
            version=d.version,
            target=target,
            platform=self.platform,
            metrics=self.metrics,
            clock=self.clock,
            data=data,
            report=report,
            progress=progress,
            checkpoint=checkpoint,
            save=save,
            record=record,
        )

    async def _transition(
        self,
        d: Deployment,
        action: str,
        *,
        outcome: str | None = None,
        details: dict | None = None,
        level: str = "info",
        text: str = "",
    ) -> Deployment:
        d = await self.store.transition(d.id, action, BOT, details=details, outcome=outcome)
        await self.emit(Notice(d, "update", text or outcome or "", level))
        return d

    async def _run(self, deployment_id: int) -> None:
        try:
            d = await self.store.get(deployment_id)
            if d.state in BEFORE_START:
                d = await self._transition(d, "start")
            # the context is built from the row as it started (its version is the last amendment's)
            ctx = self._context(d, dict(d.context))
            self._contexts[deployment_id] = ctx
            if d.state in (State.RUNNING, State.PAUSED):
                d = await self._forward(d, ctx)
            if d.state == State.ROLLING_BACK:
                await self._rollback(d, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Outside any step (a corrupt plan, a store error): never leave it silently "running" with the
            # lock held. Fail it on the record, loudly, and tell people to look at the service.
            log.exception("deployment #%s stopped: %s", deployment_id, exc)
            try:
                d = await self.store.get(deployment_id)
                if not d.state.terminal:
                    await self._transition(
                        d,
                        "fail",
                        level="critical",
                        outcome=(
                            f"internal error ({type(exc).__name__}) stopped the deployment at step "
                            f"{d.step_index + 1}; check {d.service} in {d.env} by hand — the bot's log has details"
                        ),
                    )
            except Exception:
                log.exception("deployment #%s: could not record the failure either", deployment_id)

    async def _forward(self, d: Deployment, ctx: StepContext) -> Deployment:
        steps = [step_from_dict(s) for s in d.plan]
        try:
            for index in range(d.step_index, len(steps)):
                step = steps[index]
                ctx.index = index
                while True:
                    await ctx.checkpoint()
                    await self.store.save_progress(
                        d.id,
                        context=ctx.data,
                        event=(
                            BOT,
                            "step_started",
                            {"index": index, "step": step.kind, "description": step.describe()},
                        ),
                    )
                    await self.emit(Notice(await self.store.get(d.id), "progress", step.describe()))
                    try:
                        await step.run(ctx)
                        break
                    except NeedsHuman as ask:
                        await self._ask_a_human(d, ctx, str(ask))
                if index == 0 and ctx.data.get("previous_version"):
                    version = d.version or ctx.data["previous_version"]
                    await self.store.save_progress(
                        d.id, version=version, previous_version=ctx.data["previous_version"]
                    )
                    ctx.version = version
                d = await self.store.save_progress(
                    d.id,
                    step_index=index + 1,
                    context=ctx.data,
                    event=(BOT, "step_finished", {"index": index, "step": step.kind}),
                )
            return await self._transition(d, "succeed", outcome=f"{d.service} {d.version} is live in {d.env}")
        except Exception as exc:
            reason = failure_reason(exc, d.id)
            await self.store.save_progress(d.id, context=ctx.data)
            d = await self.store.get(d.id)
            if not ctx.data.get("changed"):
                return await self._transition(
                    d, "fail", outcome=f"{reason} (nothing was changed)", level="critical"
                )
            return await self._transition(
                d,
                "rollback",
                outcome=reason,
                details={"reason": reason},
                level="critical",
                text=f"Rolling back: {reason}",
            )

    async def _ask_a_human(self, d: Deployment, ctx: StepContext, question: str) -> None:
        """Pause (on the record, with the question) and wait until someone promotes, resumes or aborts."""
        await self.store.save_progress(d.id, context=ctx.data)
        current = await self.store.get(d.id)
        if current.state == State.RUNNING:
            self._gate(d.id).clear()
            paused = await self.store.transition(d.id, "pause", BOT, details={"reason": question})
            await self.emit(Notice(paused, "update", f":raised_hand: Paused: {question}", "warning"))
        await ctx.checkpoint()
        # promote/resume wrote the context through the store; the running copy is the same dict
        promoted = (await self.store.get(d.id)).context.get("promoted", [])
        ctx.data["promoted"] = sorted(set(ctx.data.get("promoted", [])) | set(promoted))

    async def _rollback(self, d: Deployment, ctx: StepContext) -> Deployment:
        why = d.outcome or "rollback requested"
        if not ctx.data.get("changed"):
            return await self._transition(d, "finish_rollback", outcome=f"{why}; nothing had changed yet")
        steps = rollback_plan(d.strategy, ctx.target)
        try:
            for index in range(int(ctx.data.get("rollback_index", 0)), len(steps)):
                step = steps[index]
                await self.store.save_progress(
                    d.id,
                    context=ctx.data,
                    event=(BOT, "rollback_step_started", {"index": index, "step": step.kind}),
                )
                await self.emit(
                    Notice(await self.store.get(d.id), "progress", "Rollback: " + step.describe())
                )
                await step.run(ctx)
                ctx.data["rollback_index"] = index + 1
                await self.store.save_progress(
                    d.id,
                    context=ctx.data,
                    event=(BOT, "rollback_step_finished", {"index": index, "step": step.kind}),
                )
        except Exception as exc:
            return await self._transition(
                d,
                "fail",
                outcome=f"rollback failed: {failure_reason(exc, d.id)} (after: {why})",
                level="critical",
            )
        back_to = ctx.data.get("previous_version", "the previous version")
        return await self._transition(d, "finish_rollback", outcome=f"{why}; back on {back_to}", level="info")


def _skips_gate(d: Deployment) -> bool:
    """Break glass (--emergency), or a rollback to a version known to be good in its environment (it
    succeeded there, or ran there until the latest success replaced it): these do not wait for manual items
    or approvals (the rollback role is their control); automatic checks still run and show. Any other
    rollback goes through the whole gate."""
    return bool(d.context.get("emergency")) or (d.kind == "rollback" and bool(d.context.get("known_good")))


_VERSION_PART = re.compile(r"[0-9]+")


def compare_versions(a: str, b: str) -> int | None:
    """-1, 0 or 1 when `a` is lower, equal or higher than `b` as dotted numbers with an optional "v"
    (v5 > v4, v2.3.10 > v2.3.9, v2.3 < v2.3.1); None when either is not such a version (a git sha, a
    "-rc1" suffix): they cannot be ordered."""
    parts = []
    for v in (a, b):
        fields = v[1:].split(".") if v[:1] in ("v", "V") else v.split(".")
        if not all(_VERSION_PART.fullmatch(f) for f in fields):
            return None
        numbers = [int(f) for f in fields]
        while len(numbers) > 1 and numbers[-1] == 0:  # v2.3.0 is v2.3
            numbers.pop()
        parts.append(tuple(numbers))
    return (parts[0] > parts[1]) - (parts[0] < parts[1])


def failure_reason(exc: Exception, deployment_id: int) -> str:
    """Why a step failed, in words for people. Anything but a StepFailed or PlatformError is a bug: logged."""
    if isinstance(exc, StepFailed | PlatformError):
        return str(exc)
    log.error("deployment #%s: unexpected error in a step", deployment_id, exc_info=exc)
    return f"internal error ({type(exc).__name__}); the bot's log has the details"


def _tz_of(windows: Any) -> str:
    """The time zone people think in for an environment: its windows', else UTC."""
    return windows[0].tz.key if windows else "UTC"
