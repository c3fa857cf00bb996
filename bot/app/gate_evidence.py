"""The gate's evidence: before anything changes, the version's image must be in the registry (where the
environment asks, `image_check`), what changes between the running and the new version is recorded for
the message, and the checklist's `ci_passed` item is the CI verdict — a failure refuses naming the failing
checks, a pending one is asked again every poll interval until it turns."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.app.evidence import CiVerdict, EvidenceError, EvidenceReader
from bot.app.plans.reads import image_tag
from bot.app.ports import Platform, PlatformError
from bot.app.storage import Storage
from bot.clock import Clock
from bot.config.model import Settings, Target
from bot.domain.events import Refused as RefusedEvent
from bot.domain.flags import flag_key
from bot.domain.machine import BEFORE_START, IllegalTransition
from bot.domain.model import BOT, Deployment
from bot.domain.mrkdwn import text
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)
CI_CHECK = "ci_passed"


class GateEvidence:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        platform: Platform,
        clock: Clock,
        evidence: EvidenceReader | None,
        reconsider: Callable[[int], Awaitable[None]],
    ):
        self.settings, self.store, self.platform, self.clock = settings, store, platform, clock
        self.evidence, self._reconsider = evidence, reconsider
        self._polling: set[int] = set()
        self._background = TaskGroup("gate-evidence")

    async def shutdown(self) -> None:
        await self._background.aclose()

    def _applies(self, d: Deployment) -> bool:
        return self.evidence is not None and flag_key(d.service) is None

    async def refuse(self, d: Deployment, why: str) -> None:
        """Cancelled with `why` — escaped whole: it carries a registry's tags, a CI's check names and
        errors, the version as typed (an outcome is shown as the bot wrote it)."""
        why = text(why, 800)
        try:
            await self.store.transition(
                d.id, "cancel", BOT, outcome=why, details={"refused": why}, events=[RefusedEvent(why)]
            )
        except IllegalTransition:
            pass  # cancelled or started meanwhile: its message says so

    async def before_checks(self, d: Deployment) -> bool:
        """The image lookup and "what changes", at admission. False when the deployment was refused."""
        if not self._applies(d):
            return True
        assert self.evidence is not None
        target = self.settings.target(d.service, d.env)
        if target.env.image_check and d.version and d.kind != "rollback":
            try:
                missing = await self.evidence.missing_image(target, d.version)
            except EvidenceError as exc:
                missing = f"the registry could not be read ({exc}); nothing was changed"
            if missing:
                await self.refuse(d, f"Refused: {missing}")
                return False
        await self._record_changes(d, target)
        return True

    async def what_changes(self, service: str, env: str, version: str | None) -> dict[str, Any] | None:
        """The commits from the running version to `version` (None: nothing to say); for a dry run also
        whether its image is missing (`missing_image`). Touches nothing."""
        if self.evidence is None or flag_key(service) is not None:
            return None
        target = self.settings.target(service, env)
        try:
            running = await self.platform.running(target)
        except PlatformError:
            return None  # the checks that read AWS say what fails
        tag = image_tag(running.image) if running.image else None
        changes = await self.evidence.changes(target, tag, version or tag)
        return changes

    async def dry_run(self, service: str, env: str, version: str | None) -> dict[str, Any] | None:
        changes = await self.what_changes(service, env, version)
        target = self.settings.target(service, env)
        if self.evidence is not None and version and target.env.image_check:
            try:
                missing = await self.evidence.missing_image(target, version)
            except EvidenceError as exc:
                missing = str(exc)
            if missing:
                changes = {**(changes or {"from": None, "to": version}), "missing_image": missing}
        return changes

    async def _record_changes(self, d: Deployment, target: Target) -> None:
        changes = await self.what_changes(d.service, d.env, d.version)
        if changes is not None:
            fresh = await self.store.get(d.id)
            await self.store.save_progress(d.id, context={**fresh.context, "changes": changes})

    async def ci(self, d: Deployment, target: Target) -> CiVerdict:
        if d.kind == "rollback":
            return CiVerdict("success", "a rollback returns to a version that ran here before")
        if self.evidence is None:  # an engine built without them (a test's): the item waits, unticked
            return CiVerdict("pending", "this bot has no CI clients to ask")
        version = d.version
        if not version:  # a redeploy of what runs: its CI result counts
            try:
                running = await self.platform.running(target)
            except PlatformError as exc:
                return CiVerdict("pending", f"the running version cannot be read ({exc}); asking again")
            version = image_tag(running.image) if running.image else None
        return await self.evidence.ci(target, version)

    async def refused_by(self, d: Deployment, verdict: CiVerdict | None) -> bool:
        """A failed (or unreadable) CI result refuses the deployment; True when it did."""
        if verdict is None or verdict.state in ("success", "pending"):
            return False
        if verdict.state == "failure":
            what = f"{d.service} {d.version or '(the running version)'}"
            why = f"Refused: CI failed for {what}: {', '.join(verdict.failing)}"
        else:
            why = f"Refused: the CI evidence cannot be read: {verdict.evidence}"
        await self.refuse(d, why)
        return True

    def waiting(self, d: Deployment, done: bool) -> None:
        """The CI item is not done yet: ask again every `ci_poll_seconds` (one poller per deployment)."""
        if done or d.id in self._polling or self.evidence is None:
            return
        self._polling.add(d.id)
        self._background.spawn(self._poll(d.id), f"ci-{d.id}")

    async def _poll(self, deployment_id: int) -> None:
        try:
            while True:
                d = await self.store.get(deployment_id)
                target = self.settings.target(d.service, d.env)
                await self.clock.sleep(target.env.ci_poll_seconds)
                d = await self.store.get(deployment_id)
                if d.state not in BEFORE_START:
                    return
                item = next((i for i in target.env.policy.automatic_items if i.check == CI_CHECK), None)
                if item is None:
                    return
                verdict = await self.ci(d, target)
                before = (await self.store.items(d.id)).get(item.id)
                if verdict.state == "pending":
                    if before is None or before.evidence != verdict.evidence:
                        await self.store.set_item(d.id, item.id, False, BOT, verdict.evidence)
                    continue
                await self.store.set_item(d.id, item.id, verdict.state == "success", BOT, verdict.evidence)
                if await self.refused_by(d, verdict):
                    return
                self._polling.discard(deployment_id)
                await self._reconsider(deployment_id)
                return
        except Exception:
            log.exception("asking CI again for deployment #%s failed", deployment_id)
        finally:
            self._polling.discard(deployment_id)
