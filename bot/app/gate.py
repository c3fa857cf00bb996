"""The admission gate: a requested deployment runs its automatic checks and guards, waits for its manual
items and approvals (by someone other than the requester), and starts — the start transition taken under
the service+env admission lock, so an amendment never lands between the readiness check and the start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from bot.app.access import Access
from bot.app.checks import run_check
from bot.app.evidence import CiVerdict, EvidenceReader
from bot.app.foreground import BACKGROUND, FOREGROUND
from bot.app.gate_evidence import CI_CHECK, GateEvidence
from bot.app.ports import Http, Metrics, Platform
from bot.app.runner import Runner
from bot.app.scheduling import Scheduling
from bot.app.storage import Storage
from bot.clock import Clock
from bot.config.model import Settings
from bot.domain.checklist import Item, ItemState, Policy, Readiness, readiness, valid_approvals
from bot.domain.errors import Conflict, Forbidden, Refused
from bot.domain.events import (
    Approved,
    EmergencyRequested,
    FreezeOverridden,
    GateChanged,
    Rejected,
    Started,
)
from bot.domain.events import Refused as RefusedEvent
from bot.domain.machine import BEFORE_START, IllegalTransition, State
from bot.domain.model import BOT, Amendment, Deployment
from bot.domain.versions import skips_gate
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)


class Gate:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        platform: Platform,
        metrics: Metrics,
        clock: Clock,
        access: Access,
        runner: Runner,
        scheduling: Scheduling,
        http: Http | None = None,
        evidence: EvidenceReader | None = None,
    ):
        self.settings, self.store, self.clock = settings, store, clock
        self.evidence = GateEvidence(settings, store, platform, clock, evidence, self.reconsider)
        self.platform, self.metrics = platform, metrics
        self.access, self.runner, self.scheduling = access, runner, scheduling
        self.http = http
        self.admitting: set[int] = set()  # deployments whose checks run now (pruned when they finish)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # per service+env: requests that may amend, handed to the store so far, and those not decided yet
        self._asked: dict[tuple[str, str], int] = {}
        self._deciding: dict[tuple[str, str], int] = {}
        self._decided: dict[tuple[str, str], asyncio.Event] = {}
        self._background = TaskGroup("gate")

    def _policy(self, d: Deployment) -> Policy:
        """The deployment's policy: its environment's, or a flag rollout's (no checklist, no guards)."""
        return self.settings.target(d.service, d.env).env.policy

    def admission_lock(self, service: str, env: str) -> asyncio.Lock:
        """One lock per service+env (at most one deployment holds it at a time): readiness, the start
        transition and a requester's amendment of the same deployment never interleave."""
        return self._locks.setdefault((service, env), asyncio.Lock())

    @contextlib.contextmanager
    def deciding(self, service: str, env: str) -> Iterator[None]:
        """Around a request that may amend a pending deployment of service+env, entered right before it
        is handed to the store. Such a request never waits for the admission lock (its answer is the
        ack); instead the gate never starts (nor saves the gate of) a deployment of service+env while one
        is being decided, and reads again when one was asked for since its reads: an amendment never
        lands between a start's readiness check and its start transition."""
        key = (service, env)
        self._asked[key] = self._asked.get(key, 0) + 1
        self._deciding[key] = self._deciding.get(key, 0) + 1
        self._decided.setdefault(key, asyncio.Event()).clear()
        try:
            yield
        finally:
            self._deciding[key] -= 1
            if not self._deciding[key]:
                self._decided[key].set()

    async def _after_deciding(self, key: tuple[str, str]) -> int:
        """Wait until no request that may amend service+env is being decided; how many were asked for."""
        while self._deciding.get(key):
            await self._decided[key].wait()
        return self._asked.get(key, 0)

    def _asked_since(self, key: tuple[str, str], asked: int) -> bool:
        return self._asked.get(key, 0) != asked or bool(self._deciding.get(key))

    def admit_later(self, deployment_id: int) -> None:
        if deployment_id in self.admitting:
            return
        self.admitting.add(deployment_id)
        self._background.spawn(self._admit(deployment_id), f"admit-{deployment_id}")

    async def shutdown(self) -> None:
        await self._background.aclose()
        await self.evidence.shutdown()

    async def _admit(self, deployment_id: int) -> None:
        """Run the automatic checks and guards; start when the checklist and approvals allow, else wait."""
        BACKGROUND.set(True)  # its evidence and AWS calls wait for people's requests to be answered
        try:
            await FOREGROUND.quiet()  # the request that created it, and those beside it, are answered first
            d = await self.store.get(deployment_id)
            await self._announce_broken_glass(d)
            if not await self.evidence.before_checks(d):
                return  # refused: its image is not in the registry
            d = await self.store.get(deployment_id)
            if await self.evidence.refused_by(d, await self._run_checks(d)):
                return
            refusal = await self._guard_refusal(d)
            if refusal:
                await self.store.transition(
                    d.id,
                    "cancel",
                    BOT,
                    outcome=refusal,
                    details={"guard": refusal},
                    events=[RefusedEvent(refusal)],
                )
                return
            await self.reconsider(d.id, checks_fresh=True, seen=d)
        except Exception:
            log.exception("admitting deployment #%s failed", deployment_id)
            d = await self.store.get(deployment_id)
            if d.state in BEFORE_START:
                why = "internal error while checking it; nothing was changed (see the bot's log)"
                await self.store.transition(d.id, "cancel", BOT, outcome=why, events=[RefusedEvent(why)])
        finally:
            self.admitting.discard(deployment_id)

    async def _announce_broken_glass(self, d: Deployment) -> None:
        emergency = d.context.get("emergency")
        if emergency:
            broke = EmergencyRequested(d.requested_by, emergency, rollback=d.kind == "rollback")
            await self.store.record(d.id, d.requested_by, "emergency", {"reason": emergency}, events=[broke])
        if d.context.get("freeze_override"):
            overridden = FreezeOverridden(
                d.requested_by, d.context.get("freeze") or "", reason=d.context["freeze_override"]
            )
            await self.store.append_events(d.id, [overridden])

    async def _run_checks(self, d: Deployment) -> CiVerdict | None:
        """Every automatic item, checked and recorded; the CI verdict when the checklist has a CI item."""
        target = self.settings.target(d.service, d.env)
        verdict = None
        for item in target.env.policy.automatic_items:
            if item.check == CI_CHECK:
                verdict = await self.evidence.ci(d, target)
                ok, evidence = verdict.state == "success", verdict.evidence
            else:
                ok, evidence = await run_check(
                    item, d, target, self.platform, self.metrics, self.store, self.http
                )
            await self.store.set_item(d.id, item.id, ok, BOT, evidence)
        return verdict

    async def _guard_refusal(self, d: Deployment) -> str | None:
        policy = self._policy(d)
        states = await self.store.items(d.id)
        by_check = {i.check: states.get(i.id) for i in policy.automatic_items}
        if policy.guards.require_rollback_target and d.kind != "rollback":
            state = by_check.get("rollback_target")
            if state is None:
                ok, evidence = await run_check(
                    Item("rollback_target", "Rollback target", "automatic", "rollback_target"),
                    d,
                    self.settings.target(d.service, d.env),
                    self.platform,
                    self.metrics,
                    self.store,
                    self.http,
                )
            else:
                ok, evidence = state.done, state.evidence or ""
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

    async def reconsider(
        self, deployment_id: int, checks_fresh: bool = False, seen: Deployment | None = None
    ) -> None:
        """Start the deployment if everything is in place (automatic checks run again right before), else
        record what it waits for and show it. `seen`: the deployment as the caller read it (only its
        service and environment are used, which never change: the row is read again under the lock)."""
        first = seen or await self.store.get(deployment_id)
        key = (first.service, first.env)
        async with self.admission_lock(*key):
            while await self._reconsider(deployment_id, key, checks_fresh):
                pass  # a request that may amend it was asked for since the reads: read again

    async def _reconsider(self, deployment_id: int, key: tuple[str, str], checks_fresh: bool) -> bool:
        """One look under the admission lock; True when it must be done again (see `deciding`)."""
        asked = await self._after_deciding(key)
        # the row, its items and its approvals asked for together: one trip to the store's thread
        d, states, approvals = await asyncio.gather(
            self.store.get(deployment_id),
            self.store.items(deployment_id),
            self.store.approvals(deployment_id),
        )
        checked = d
        if d.state not in BEFORE_START:
            return False
        policy = self._policy(d)
        emergency = skips_gate(d)
        ready = readiness(policy, states, approvals, d.requested_by, self.clock.now(), emergency)
        if ready.ready and not checks_fresh and policy.automatic_items:
            # again, right before execution
            if await self.evidence.refused_by(d, await self._run_checks(d)):
                return False
            ready, states = await self._readiness(d, policy, emergency)
        self._ci_waits(d, policy, states)
        if self._asked_since(key, asked):
            return True
        # what it waits for changed: said with the gate's save, unless a transition below says it
        quiet = ready.ready or d.state == State.REQUESTED or self.scheduling.waits(d)
        d = await self._save_gate(d, policy, ready, emergency, states, quiet)
        if ready.ready and not self.scheduling.waits(d) and self._asked_since(key, asked):
            return True
        if await self.scheduling.schedule_or_start(d):
            return False
        if ready.ready:
            if not self.runner.running(deployment_id):
                # The start transition is handed to the store right after the check above, with no
                # request that may amend it asked for since the reads: the version it starts with is
                # the last amendment accepted, and any asked for later finds it started; and as a
                # compare-and-set on what it checked, since another replica may amend it meanwhile.
                try:
                    await self.store.start_as_seen(checked, BOT, events=[Started()])
                except (IllegalTransition, Conflict):
                    return False  # cancelled meanwhile (the cancel is on its message)
                self.runner.start(deployment_id)
            return False
        if d.state == State.REQUESTED:
            await self.store.transition(
                d.id,
                "await_approval",
                BOT,
                details={"waiting_for": ready.waiting_for()},
                events=[GateChanged()],
            )
        return False

    def _ci_waits(self, d: Deployment, policy: Policy, states: dict[str, ItemState]) -> None:
        """A CI item not done yet is asked again until it turns (also after a restart)."""
        for item in policy.automatic_items:
            if item.check == CI_CHECK:
                state = states.get(item.id)
                self.evidence.waiting(d, bool(state and state.done))

    async def resume_ci(self, d: Deployment) -> None:
        self._ci_waits(d, self._policy(d), await self.store.items(d.id))

    async def waiting_for(self, d: Deployment) -> str | None:
        """None when `d` may start now, else what it still waits for (the scheduler asks at its time)."""
        ready, _ = await self._readiness(d, self._policy(d), skips_gate(d))
        return None if ready.ready else ready.waiting_for()

    async def _readiness(
        self, d: Deployment, policy: Policy, emergency: bool
    ) -> tuple[Readiness, dict[str, ItemState]]:
        states, approvals = await asyncio.gather(self.store.items(d.id), self.store.approvals(d.id))
        ready = readiness(policy, states, approvals, d.requested_by, self.clock.now(), emergency)
        return ready, states

    async def _save_gate(
        self,
        d: Deployment,
        policy: Policy,
        ready: Readiness,
        emergency: bool,
        states: dict[str, ItemState],
        quiet: bool,
    ) -> Deployment:
        """What the deployment's message shows while it waits: items, approvals, what is missing (and,
        unless `quiet`, the GateChanged event that has the message show it)."""
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
        said = [] if quiet else [GateChanged()]
        return await self.store.save_progress(d.id, context={**d.context, "gate": gate}, events=said)

    # ----------------------------------------------------------------------- people at the gate

    async def approve(self, deployment_id: int, user: str, roles: frozenset[str] | set[str]) -> Deployment:
        d = await self.store.get(deployment_id)
        if d.state not in BEFORE_START:
            raise IllegalTransition("approve", d.state)
        if user == d.requested_by:
            await self.access.refused("approve", d.env, user, "own deployment", deployment=d)
            raise Refused(f"You requested deployment #{d.id}; someone else has to approve it (four eyes).")
        await self.access.check("approve", d.env, user, roles, deployment=d)
        policy = self._policy(d)
        if policy.approvals.roles and not set(policy.approvals.roles) & set(roles):
            message = f"Approvals in {d.env} come from the {' or '.join(policy.approvals.roles)} role."
            await self.access.refused("approve", d.env, user, message, deployment=d)
            raise Forbidden(message, "approve", d.env)
        given = valid_approvals(policy, await self.store.approvals(d.id), d.requested_by, self.clock.now())
        if any(a.user == user for a in given):
            raise Refused(f"You already approved deployment #{d.id}.")
        await self.store.approve(d.id, user)
        await self.store.append_events(d.id, [Approved(user)])
        await self.reconsider(d.id)
        return await self.store.get(d.id)

    async def reject(
        self, deployment_id: int, user: str, roles: frozenset[str] | set[str], reason: str
    ) -> Deployment:
        d = await self.store.get(deployment_id)
        if d.state not in BEFORE_START:
            raise IllegalTransition("reject", d.state)
        await self.access.check("approve", d.env, user, roles, deployment=d)
        # facts, not words: who stopped it is named by handlers/ui (blocks.outcome_text)
        stopped = {"how": "rejected", "by": user}
        await self.store.save_progress(d.id, context={**d.context, "stopped_by": stopped})
        d = await self.store.transition(
            d.id,
            "cancel",
            user,
            details={"rejected": reason},
            outcome=f"rejected: {reason}",
            events=[Rejected(user, reason)],
        )
        return d

    async def tick(
        self, deployment_id: int, user: str, roles: frozenset[str] | set[str], selected: set[str]
    ) -> Deployment:
        """The manual items ticked on the message are now exactly `selected` (what Slack sends)."""
        d = await self.store.get(deployment_id)
        if d.state not in BEFORE_START:
            raise IllegalTransition("tick", d.state)
        policy = self._policy(d)
        states = await self.store.items(d.id)
        for item in policy.manual_items:
            want = item.id in selected
            if want == bool(states.get(item.id) and states[item.id].done):
                continue
            if item.roles and not set(item.roles) & set(roles):
                message = f"Ticking “{item.label}” needs the {' or '.join(item.roles)} role."
                await self.access.refused("tick", d.env, user, message, deployment=d)
                raise Forbidden(message, "tick", d.env)
            if not item.roles:
                await self.access.check("deploy", d.env, user, roles, deployment=d)
            await self.store.set_item(d.id, item.id, want, user)
        await self.reconsider(d.id, checks_fresh=False)
        return await self.store.get(d.id)

    async def recheck(self, deployment_id: int, user: str) -> Deployment:
        d = await self.store.get(deployment_id)
        if d.state not in BEFORE_START:
            raise IllegalTransition("recheck", d.state)
        if await self.evidence.before_checks(d):  # an amended version: its image and its changes
            d = await self.store.get(deployment_id)
            if not await self.evidence.refused_by(d, await self._run_checks(d)):
                await self.reconsider(d.id, checks_fresh=True, seen=d)
        return await self.store.get(d.id)

    async def amended(self, a: Amendment, user: str) -> None:
        """The requester changed the version or strategy before it started: approvals no longer count."""
        d = a.deployment
        try:
            await self.recheck(d.id, user)
        except IllegalTransition:
            pass  # cancelled or started meanwhile: its message already says so
