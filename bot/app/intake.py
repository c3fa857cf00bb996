"""Intake: a /deploy, /rollback or /promote becomes a deployment. Access and guards are checked, the
version is resolved (known-good for a rollback, the source's success for a promotion), the store decides
create, amend or locked in one transaction, and the new deployment goes to the gate in the background."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bot.app import history
from bot.app.access import Access
from bot.app.gate import Gate
from bot.app.plans import Step, StepFailed, plan
from bot.app.scheduling import Scheduling
from bot.app.storage import Storage
from bot.config.model import Settings
from bot.domain import commands as cmds
from bot.domain.errors import Refused
from bot.domain.events import Amended, Requested
from bot.domain.machine import State
from bot.domain.model import BOT, Amendment, Deployment, LockInfo
from bot.tasks import TaskGroup

Request = cmds.Deploy | cmds.Rollback | cmds.Promote
ACTIONS: dict[type, str] = {cmds.Deploy: "deploy", cmds.Rollback: "rollback", cmds.Promote: "promote"}
log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class StageRequest:
    """A pipeline asks for one of its stages (bot.app.pipelines): `pipeline` is what the deployment's
    context records; `source` the deployment of the environment before, whose version a later stage
    promotes (None for the first). A stage never amends its requester's own pending deployment, and a
    promotion is checked with the promote role and never overrides a freeze or a window by itself."""

    pipeline: dict[str, Any]
    source: int | None = None
    reason: str | None = None


@dataclass
class _Resolved:
    """What a request asks for once its version and strategy are known."""

    service: str
    env: str
    version: str | None
    kind: str
    reason: str | None
    strategy: str | None
    gradual: bool = False
    gate: dict[str, Any] | None = None  # context keys recording why the gate is (or is not) skipped


def rollback_strategy(configured: str, gradual: bool) -> str:
    """Rollbacks go back in one switch (blue-green, using the warm slot when there is one), or, with
    --gradual on a two-slot service, step by step with analysis (canary weights)."""
    if configured == "rolling":
        return "rolling"
    return "canary" if gradual else "blue-green"


class Intake:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        access: Access,
        scheduling: Scheduling,
        gate: Gate,
    ):
        self.settings, self.store = settings, store
        self.access, self.scheduling, self.gate = access, scheduling, gate
        self._after = TaskGroup("intake")
        self._amended: dict[int, tuple[Amendment, str]] = {}  # deployment -> its newest follow-up not begun
        self._following: set[int] = set()  # deployments whose follow-up runs now
        # The stored form of each plan asked for (the settings do not change while the bot runs): a burst
        # of requests does not serialise the same steps again for each one. Only read (the store writes
        # them as JSON), never changed.
        self._stored_plans: dict[tuple[str, str, str, bool, bool], list[dict[str, Any]]] = {}

    async def shutdown(self) -> None:
        await self._after.aclose()

    def plan(
        self, service: str, env: str, strategy: str | None, gradual: bool = False, migrate: bool = True
    ) -> tuple[str, list[Step]]:
        """The strategy (the environment's when none is asked for) and its steps; Refused if unknown."""
        target = self.settings.target(service, env)
        strategy = strategy or target.strategy
        try:
            return strategy, plan(strategy, target, gradual=gradual, migrate=migrate)
        except StepFailed as exc:
            raise Refused(f"Cannot deploy {service} to {env}: {exc}.") from None

    def dry_run(self, command: cmds.Deploy) -> Planned:
        strategy, steps = self.plan(command.service, command.env, command.strategy)
        return Planned(command.service, command.env, command.version, strategy, steps)

    async def request(
        self,
        command: Request,
        user: str,
        request_key: str | None = None,
        roles: frozenset[str] | set[str] | None = None,
        *,
        stage: StageRequest | None = None,
    ) -> Deployment | LockInfo | Amendment:
        """Check access and guards, create the deployment (or answer who holds the lock), then admit it in
        the background: checklist, approvals, start. `stage`: a pipeline's request (StageRequest)."""
        roles = frozenset(roles or ())
        env_name = command.target_env if isinstance(command, cmds.Promote) else command.env
        promotion = stage is not None and stage.source is not None
        action = "promote" if promotion else ACTIONS[type(command)]
        await self.access.check(action, env_name, user, roles, service=command.service)
        emergency = command.emergency if isinstance(command, cmds.Deploy | cmds.Rollback) else None
        if emergency:
            breaks_glass = "emergency_rollback" if isinstance(command, cmds.Rollback) else "emergency"
            await self.access.check(breaks_glass, env_name, user, roles, service=command.service)
        r = await self._resolve(command, emergency)
        # the words that may override a freeze or a window, by an allowed role: a person's own --reason; a
        # promotion has none (its recorded "promoted from ..." is the bot's, not a reason to break a freeze)
        override = None if isinstance(command, cmds.Promote) else r.reason
        if stage is not None:
            r.kind, r.reason = ("promote" if promotion else "deploy"), stage.reason or r.reason
            override = None if promotion else r.reason
        strategy, stored_plan = self._stored_plan(r)
        target = self.settings.target(r.service, r.env)
        timing = await self.scheduling.timing(command, r.kind, target, user, roles, override)
        self._refuse_all_at_once(r, strategy)
        gate = r.gate or {}
        fields = dict(
            service=r.service,
            env=r.env,
            version=r.version,
            strategy=strategy,
            kind=r.kind,
            requested_by=user,
            reason=r.reason,
            plan=stored_plan,
            channel=target.env.channel,
            request_key=request_key,
            events=[Requested()],
            amend_events=[Amended(user, r.version, strategy)],
            context={
                **({"emergency": emergency} if emergency else {}),
                **({"pipeline": stage.pipeline} if stage is not None else {}),
                **gate,
                **timing,
            },
        )
        result = await self._create_or_amend(r, user, fields, amendable=stage is None)
        if isinstance(result, Amendment):
            if result.changed:  # its notice and checks again after the answer: the store has decided it
                self._amended_later(result, user)
            return result
        if (
            isinstance(result, LockInfo)
            or result.state != State.REQUESTED
            or result.id in self.gate.admitting
        ):
            return result  # locked, or the same request seen again
        await self._record_gate_decisions(result, user, gate, emergency)
        self.gate.admit_later(result.id)
        return result

    def _stored_plan(self, r: _Resolved) -> tuple[str, list[dict[str, Any]]]:
        """The strategy and the plan's steps as stored (Refused if the strategy does not fit)."""
        strategy = r.strategy or self.settings.target(r.service, r.env).strategy
        migrate = r.kind != "rollback"
        key = (r.service, r.env, strategy, r.gradual, migrate)
        stored = self._stored_plans.get(key)
        if stored is None:
            strategy, steps = self.plan(r.service, r.env, strategy, r.gradual, migrate)
            stored = self._stored_plans[key] = [s.to_dict() for s in steps]
        return strategy, list(stored)

    def _amended_later(self, a: Amendment, user: str) -> None:
        """The gate's follow-up of an amendment, after the answer. One deployment's follow-ups run one at a
        time, and amendments that landed while one ran are followed up once, for the newest: the gate
        reads the deployment again from the store, so one recheck covers every amendment before it. A
        burst of amendments then queues one recheck on the admission lock the amendments themselves wait
        for, not one each."""
        deployment_id = a.deployment.id
        self._amended[deployment_id] = (a, user)
        if deployment_id not in self._following:
            self._following.add(deployment_id)
            self._after.spawn(self._follow_up(deployment_id), f"amended-{deployment_id}")

    async def _follow_up(self, deployment_id: int) -> None:
        try:
            while (newest := self._amended.pop(deployment_id, None)) is not None:
                a, user = newest
                try:
                    await self.gate.amended(a, user)
                except Exception:
                    log.exception("following up the amendment of deployment #%s failed", deployment_id)
        finally:
            self._following.discard(deployment_id)
            self._amended.pop(deployment_id, None)  # cancelled (at shutdown): nothing is left to follow

    async def _create_or_amend(
        self, r: _Resolved, user: str, fields: dict[str, Any], amendable: bool = True
    ) -> Deployment | LockInfo | Amendment:
        # One store transaction decides create, amend (its requester's own pending deployment) or locked,
        # answered without waiting for the admission lock: a request that may amend is handed to the store
        # inside the gate's `deciding`, and the gate never starts a deployment of service+env while one is
        # being decided (it reads again after), so an amendment never lands between a start's readiness
        # check and its start transition.
        if not (amendable and r.kind == "deploy"):
            return await self.store.request_or_amend(amendable=False, **fields)
        with self.gate.deciding(r.service, r.env):
            return await self.store.request_or_amend(amendable=True, **fields)

    async def _record_gate_decisions(
        self, d: Deployment, user: str, gate: dict[str, Any], emergency: str | None
    ) -> None:
        if "allow_downgrade" in gate:
            await self.store.record(d.id, user, "allow_downgrade", gate["allow_downgrade"])
        if "known_good" in gate and not emergency:
            await self.store.record(
                d.id,
                BOT,
                "gate_skipped",
                {"skipped": "manual items and approvals", "why": f"known-good: {gate['known_good']}"},
            )

    def _refuse_all_at_once(self, r: _Resolved, strategy: str) -> None:
        target = self.settings.target(r.service, r.env)
        if (
            target.env.policy.guards.refuse_all_at_once
            and strategy == "rolling"
            and target.deployment_configuration.minimum_healthy_percent == 0
        ):
            raise Refused(
                f"Refused: a rolling deploy with minimum_healthy_percent 0 stops every task of {r.service} "
                f"at once in {r.env}. Set environments.{r.env}.deployment_configuration.minimum_healthy_"
                "percent above 0, or use --strategy canary or blue-green."
            )

    async def _resolve(self, command: Request, emergency: str | None) -> _Resolved:
        if isinstance(command, cmds.Deploy):
            return _Resolved(
                command.service, command.env, command.version, "deploy", command.reason, command.strategy
            )
        if isinstance(command, cmds.Rollback):
            return await self._resolve_rollback(command, emergency)
        return await self._resolve_promotion(command)

    async def _resolve_rollback(self, command: cmds.Rollback, emergency: str | None) -> _Resolved:
        service, env = command.service, command.env
        version = command.version or await history.rollback_version(self.store, service, env)
        known = await history.known_good_versions(self.store, service, env)
        gate: dict[str, Any] = {}
        if version in known:
            gate["known_good"] = f"{version} {known[version][0]}"
        elif not emergency:
            raise Refused(history.not_known_good(service, env, version, known))
        strategy = rollback_strategy(self.settings.target(service, env).strategy, command.gradual)
        return _Resolved(service, env, version, "rollback", command.reason, strategy, command.gradual, gate)

    async def _resolve_promotion(self, command: cmds.Promote) -> _Resolved:
        service, env = command.service, command.target_env
        source = await self.store.last_succeeded(service, command.source_env)
        if source is None:
            raise Refused(
                f"Cannot promote {service} from {command.source_env}: no deployment of {service} "
                f"has succeeded in {command.source_env} yet."
            )
        reason = f"promoted from {command.source_env} (deployment #{source.id})"
        gate: dict[str, Any] = {}
        lower = await history.downgrade(self.store, service, env, source)
        if lower is not None and not command.allow_downgrade:
            raise Refused(lower["message"])
        if lower is not None:
            gate["allow_downgrade"] = {"from": lower["from"], "to": lower["to"], "source": source.id}
        return _Resolved(service, env, source.version, "promote", reason, None, gate=gate)
