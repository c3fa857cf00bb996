"""Feature flags' use cases: the FlagBook (every environment's flag states in memory, and the snapshot
the OFREP server evaluates against, replaced whole on each change) and FlagControl (a person's /flag
change: who may, freezes, four-eyes approval where configured, the kill switch, a gradual rollout as a
deployment of its own through the gate and the runner).

Every change is a compare-and-set on the flag's revision, written with its audit event and its outbox
event in one transaction (the store), and only then applied to the snapshot: an evaluation never
answers from a state the store does not hold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.app.access import Access
from bot.app.plans import flags as flag_plans
from bot.app.storage import Storage
from bot.config.model import Settings
from bot.domain.commands import FlagChange
from bot.domain.errors import Conflict, Refused
from bot.domain.events import DomainEvent, FlagChanged, FlagKilled, Requested
from bot.domain.flags import (
    FlagDef,
    FlagRecord,
    FlagSnapshot,
    FlagState,
    Rule,
    at_percent,
    config_digest,
    describe,
    flag_service,
    on_for,
    percent_on,
    turned_off,
    turned_on,
    with_variants,
)
from bot.domain.machine import BEFORE_START, State
from bot.domain.model import Deployment, Event, LockInfo
from bot.domain.suggest import did_you_mean

log = logging.getLogger(__name__)
CONFLICT_RETRIES = 3  # a step's write that lost a race with another change reads again and retries


class FlagBook:
    """The flags' states, in memory, per environment; the store holds the truth and every change."""

    def __init__(self, settings: Settings, store: Storage):
        self.settings, self.store = settings, store
        self._digest = config_digest(settings.flags.values(), settings.segments.values())
        self._states: dict[str, dict[str, FlagState]] = {e: {} for e in settings.environments}
        self._snapshots: dict[str, FlagSnapshot] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.revision: int | None = None  # the store's flags_revision last loaded
        for env in settings.environments:
            self._rebuild(env)

    def flag(self, key: str) -> FlagDef:
        found = self.settings.flags.get(key)
        if found is None:
            raise Refused(
                f"There is no flag {key!r}."
                + did_you_mean(key, self.settings.flags, otherwise=" Declare it in [flags.KEY] first.")
            )
        return found

    def snapshot(self, env: str) -> FlagSnapshot | None:
        """What evaluations in `env` answer from now: one object, swapped whole on change."""
        return self._snapshots.get(env)

    async def load(self) -> None:
        """Read every stored state (at start, and when another replica changed one)."""
        revision = await self.store.flags_revision()
        states: dict[str, dict[str, FlagState]] = {e: {} for e in self.settings.environments}
        for record in await self.store.flag_states():
            if record.env in states and record.key in self.settings.flags:
                states[record.env][record.key] = record.state
        self._states = states
        for env in states:
            self._rebuild(env)
        self.revision = revision

    async def refresh(self) -> bool:
        """Load again when the store's flags changed since (another process wrote); True when it did."""
        if await self.store.flags_revision() == self.revision:
            return False
        await self.load()
        return True

    async def record(self, env: str, key: str) -> FlagRecord:
        return await self.store.flag_state(env, key)

    async def change(
        self,
        env: str,
        key: str,
        make: Callable[[FlagDef, FlagState], FlagState],
        *,
        actor: str,
        action: str,
        summary: str,
        deployment_id: int | None = None,
        unless_killed: bool = False,
        expected_revision: int | None = None,
        details: dict[str, Any] | None = None,
        events: Callable[[FlagRecord], Sequence[DomainEvent]] | None = None,
        set_flag: Callable[..., Awaitable[FlagRecord]] | None = None,
    ) -> FlagRecord:
        """Write the state `make` makes of the flag's current one, on the record, then serve it. A write
        that lost a race with another change (its revision moved) reads again and makes it again, unless
        the caller named the revision it saw (`expected_revision`: then the Conflict is theirs).
        `set_flag`: the store's write as the caller must make it (a rollout's step: behind its lease's
        fence, bot.app.leases.FencedFlags)."""
        write = set_flag or self.store.set_flag
        flag = self.flag(key)
        lock = self._locks.setdefault((env, key), asyncio.Lock())
        async with lock:
            for attempt in range(1, CONFLICT_RETRIES + 1):
                current = await self.store.flag_state(env, key)
                new = make(flag, current.state)
                said = (
                    events(current)
                    if events is not None
                    else [FlagChanged(key, env, actor, summary, current.revision + 1)]
                )
                try:
                    record = await write(
                        env,
                        key,
                        new,
                        expected_revision=current.revision
                        if expected_revision is None
                        else expected_revision,
                        actor=actor,
                        action=action,
                        details={"summary": summary, **(details or {})},
                        deployment_id=deployment_id,
                        events=said,
                        unless_killed=unless_killed,
                    )
                    break
                except Conflict:
                    if expected_revision is not None or attempt == CONFLICT_RETRIES:
                        raise
                    if unless_killed and (await self.store.flag_state(env, key)).state.killed:
                        raise
            self._states.setdefault(env, {})[key] = record.state
            self._rebuild(env)
        return record

    def _rebuild(self, env: str) -> None:
        self._snapshots[env] = FlagSnapshot.build(
            env, self.settings.flags, self._states.get(env, {}), self.settings.segments, self._digest
        )


# ------------------------------------------------------------------------------------------ control


@dataclass(frozen=True)
class FlagAnswer:
    """What a /flag change did (or, dry run, would do), for people."""

    key: str
    env: str
    summary: str  # what it answers now (or would)
    before: str  # what it answered before
    changed: bool = True
    dry_run: bool = False
    deployment: Deployment | None = None  # a rollout, or a change waiting for approval
    stopped: Deployment | None = None  # the rollout the kill switch (or off) stopped
    needs_approval: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class FlagView:
    """One flag in one environment, for /flag KEY."""

    flag: FlagDef
    record: FlagRecord
    changes: list[Event]
    rollout: Deployment | None


class FlagControl:
    """A person's /flag commands."""

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        book: FlagBook,
        access: Access,
        *,
        timing: Callable[..., Any],
        admit: Callable[[int], None],
        stop: Callable[[Deployment, str], Any],
    ):
        """`timing`: Scheduling.timing (a freeze refuses, or an allowed --reason overrides it); `admit`:
        the gate's admit_later (approvals, then the runner); `stop`: ends a running rollout (abort)."""
        self.settings, self.store, self.book, self.access = settings, store, book, access
        self._timing, self._admit, self._stop = timing, admit, stop

    # ----------------------------------------------------------------------------------- reads

    def rows(self, env: str | None = None) -> list[tuple[str, FlagDef, FlagState]]:
        envs = [env] if env else list(self.settings.environments)
        rows = []
        for e in envs:
            snapshot = self.book.snapshot(e)
            for key, flag in sorted(self.settings.flags.items()):
                state = snapshot.states.get(key, FlagState()) if snapshot else FlagState()
                rows.append((e, flag, state))
        return rows

    async def view(self, key: str, env: str) -> FlagView:
        flag = self.book.flag(key)
        record = await self.store.flag_state(env, key)
        changes = await self.store.flag_changes(env, key, 10)
        lock = await self.store.lock_info(flag_service(key), env)
        return FlagView(flag, record, changes, lock.deployment if lock else None)

    # --------------------------------------------------------------------------------- changes

    async def change(
        self, c: FlagChange, user: str, roles: frozenset[str], request_key: str | None = None
    ) -> FlagAnswer:
        flag = self.book.flag(c.key)
        if c.env not in self.settings.environments:
            raise Refused(
                f"There is no environment {c.env!r}." + did_you_mean(c.env, self.settings.environments)
            )
        if c.action == "kill":
            await self.access.check("kill_flag", c.env, user, roles, service=flag_service(c.key))
            return await self._kill(c, flag, user)
        await self.access.check("flag", c.env, user, roles, service=flag_service(c.key))
        if c.action == "rollout":
            return await self._rollout(c, flag, user, roles, request_key)
        make, summary = self._maker(c, flag)
        current = await self.store.flag_state(c.env, c.key)
        new = make(flag, current.state)
        before = describe(flag, current.state)
        held = await self._running_rollout(c)
        share = _share(flag, new)
        needs = self._needs_approval(c, flag, share)
        if c.dry_run:
            notes = [f"needs {self._approvers(c.env)} first"] if needs else []
            if held is not None and c.action != "off":
                notes.append(f"rollout {held.ref} is running: this change would be refused")
            return FlagAnswer(c.key, c.env, describe(flag, new), before, new != current.state, True,
                              needs_approval=needs, notes=tuple(notes))  # fmt: skip
        target = self.settings.target(flag_service(c.key), c.env)
        if c.action != "off":
            await self._timing(c, "flag", target, user, roles, c.reason)
        if held is not None and c.action != "off":
            what = "Rollout" if held.kind == "flag" else "Change"
            raise Refused(
                f"{what} {held.ref} of {c.key} in {c.env} is {held.state.word}: one change of a flag at a "
                f"time. Wait for it (or cancel it on its message), or `/flag {c.key} kill in {c.env}`."
            )
        if needs:
            return await self._change_for_approval(c, flag, new, summary, before, user, request_key)
        # Off during a rollout: the rollout is stopped first (its task ends before the write), so no step
        # of it writes after this change; its own rollback then finds the flag off already.
        stopped = await self._stop_rollout(held, user, f"turned off by {user}") if held else None
        if new == current.state:
            return FlagAnswer(c.key, c.env, describe(flag, new), before, changed=False, stopped=stopped)
        record = await self.book.change(
            c.env,
            c.key,
            make,
            actor=user,
            action=f"flag_{c.action}",
            summary=summary,
            details={"reason": c.reason} if c.reason else None,
        )
        return FlagAnswer(c.key, c.env, describe(flag, record.state), before, stopped=stopped)

    def _maker(self, c: FlagChange, flag: FlagDef) -> tuple[Callable[[FlagDef, FlagState], FlagState], str]:
        if c.action == "on":
            return turned_on, f"on for everyone ({flag.on_variant})"
        if c.action == "off":
            return (lambda f, s: turned_off(f, s)), f"off for everyone ({flag.off_variant})"
        if c.action == "percent":
            percent = float(c.percent or 0)
            return (lambda f, s: at_percent(f, s, percent)), f"{flag.on_variant} for {percent:g}% of users"
        if c.action == "target":
            if c.segment is not None and c.segment not in self.settings.segments:
                raise Refused(
                    f"There is no segment {c.segment!r}."
                    + did_you_mean(
                        c.segment, self.settings.segments, otherwise=" Declare it in [segments.NAME]."
                    )
                )
            rule = Rule(flag.on_variant, tuple(c.conditions), c.segment)
            return (lambda f, s: on_for(f, s, rule)), f"rule {rule.describe()}"
        if c.action == "variants":
            unknown = [v for v, _ in c.weights if v not in flag.variants]
            if unknown:
                raise Refused(
                    f"{c.key} has no variant {unknown[0]!r} (its variants: {', '.join(flag.variants)})."
                )
            weights = tuple(c.weights)
            words = ", ".join(f"{v} {w:g}%" for v, w in weights)
            return (lambda f, s: with_variants(f, s, weights)), f"split {words}"
        raise Refused(f"/flag cannot {c.action!r}.")

    def _needs_approval(self, c: FlagChange, flag: FlagDef, share: float | None) -> bool:
        """Four eyes where the environment asks: a rollout, or a change giving more than
        approve_above_percent of users something other than the off variant (a targeting rule: its share
        is not known here, so it counts as above). Turning off never waits."""
        config = self.settings.environments[c.env].flags
        if config.approvals <= 0 or c.action in ("off", "kill"):
            return False
        if c.action == "rollout":
            return True
        limit = config.approve_above_percent
        if limit is None:
            return False
        return share is None or share > limit

    def _approvers(self, env: str) -> str:
        e = self.settings.environments[env]
        roles = " or ".join(e.policy.approvals.roles) or "anyone else"
        n = e.flags.approvals
        return f"{n} approval{'s' if n != 1 else ''} ({roles}, not the requester)"

    async def _running_rollout(self, c: FlagChange) -> Deployment | None:
        lock: LockInfo | None = await self.store.lock_info(flag_service(c.key), c.env)
        d = lock.deployment if lock else None
        return d if d is not None and not d.state.terminal else None

    async def _stop_rollout(self, d: Deployment, user: str, why: str) -> Deployment | None:
        try:
            return await self._stop(d, user)  # type: ignore[no-any-return]
        except Exception as exc:  # it ended meanwhile, or cannot be stopped in its state
            log.info("stopping rollout #%s: %s", d.id, exc)
            return None

    async def _kill(self, c: FlagChange, flag: FlagDef, user: str) -> FlagAnswer:
        """Off for every evaluation at once, no approval, no freeze (stopping is how a freeze fixes
        things); a running rollout of it is stopped. The snapshot changes before this returns."""
        current = await self.store.flag_state(c.env, c.key)
        before = describe(flag, current.state)
        if c.dry_run:
            return FlagAnswer(c.key, c.env, describe(flag, turned_off(flag, current.state, killed=True)),
                              before, True, True)  # fmt: skip
        held = await self._running_rollout(c)
        why = c.reason or ""
        await self.book.change(
            c.env,
            c.key,
            lambda f, s: turned_off(f, s, killed=True),
            actor=user,
            action="flag_killed",
            summary=f"killed: everyone gets {flag.off_variant}",
            details={"reason": why} if why else None,
            events=lambda r: [FlagKilled(c.key, c.env, user, why, held.id if held else 0)],
        )
        stopped = await self._stop_rollout(held, user, "killed") if held else None
        return FlagAnswer(c.key, c.env, describe(flag, turned_off(flag, current.state, killed=True)),
                          before, stopped=stopped)  # fmt: skip

    async def _rollout(
        self, c: FlagChange, flag: FlagDef, user: str, roles: frozenset[str], request_key: str | None
    ) -> FlagAnswer:
        target = self.settings.target(flag_service(c.key), c.env)
        steps = list(c.steps) if c.steps else [int(s) for s in target.canary_steps if s != "pause"]
        plan = flag_plans.rollout_plan(target, steps)
        current = await self.store.flag_state(c.env, c.key)
        before = describe(flag, current.state)
        summary = f"{flag.on_variant} through {', '.join(f'{s:g}%' for s in steps)}, judged at each step"
        if c.dry_run:
            notes = [f"needs {self._approvers(c.env)} first"] if self._needs_approval(c, flag, 100) else []
            return FlagAnswer(c.key, c.env, summary, before, True, True, notes=tuple(notes))
        timing = await self._timing(c, "flag", target, user, roles, c.reason)
        d = await self._create(c, flag, "flag", plan, user, request_key, {**timing, "steps": steps})
        return FlagAnswer(c.key, c.env, summary, before, deployment=d,
                          needs_approval=self._needs_approval(c, flag, 100))  # fmt: skip

    async def _change_for_approval(
        self,
        c: FlagChange,
        flag: FlagDef,
        new: FlagState,
        summary: str,
        before: str,
        user: str,
        request_key: str | None,
    ) -> FlagAnswer:
        target = self.settings.target(flag_service(c.key), c.env)
        revision = (await self.store.flag_state(c.env, c.key)).revision
        plan = flag_plans.change_plan(target, new, summary, revision)
        d = await self._create(c, flag, "flag_change", plan, user, request_key, {})
        return FlagAnswer(c.key, c.env, describe(flag, new), before, deployment=d, needs_approval=True)

    async def _create(
        self,
        c: FlagChange,
        flag: FlagDef,
        kind: str,
        plan: Sequence[Any],
        user: str,
        request_key: str | None,
        context: dict[str, Any],
    ) -> Deployment:
        target = self.settings.target(flag_service(c.key), c.env)
        result = await self.store.request_or_amend(
            amendable=False,
            service=flag_service(c.key),
            env=c.env,
            version=flag.on_variant,
            strategy="flag",
            kind=kind,
            requested_by=user,
            reason=c.reason,
            plan=[s.to_dict() for s in plan],
            channel=target.env.channel,
            request_key=request_key,
            events=[Requested()],
            context=context,
        )
        if isinstance(result, LockInfo):
            held = result.deployment
            what = f"{held.ref} ({held.state.word})" if held else f"a lock by <@{result.holder}>"
            raise Refused(f"{c.key} in {c.env} is already taken by {what}: one change of a flag at a time.")
        assert isinstance(result, Deployment)
        if result.state in BEFORE_START and result.state == State.REQUESTED:
            self._admit(result.id)
        return result


def _share(flag: FlagDef, state: FlagState) -> float | None:
    """The percent of users a state gives something other than the off variant (None: rules decide)."""
    if not state.enabled or state.killed:
        return 0.0
    if state.rules:
        return None
    if state.split:
        return sum(w for v, w in state.split if v != flag.off_variant)
    return 0.0 if (state.default_variant or flag.default_variant) == flag.off_variant else 100.0


__all__ = ["FlagAnswer", "FlagBook", "FlagControl", "FlagView", "percent_on"]
