"""People's side of what follows a success: Roll back now after a regression (through /rollback's own
path: its access check, guards and freezes), the requester's answer to "How did it go?", and notes on
any deployment. Each is recorded with who and when; a double click or a retry records nothing twice."""

from __future__ import annotations

from typing import Any, Protocol

from bot.app.intake import Intake
from bot.app.storage import Storage
from bot.app.verification import Verifications
from bot.domain import commands as cmds
from bot.domain.errors import NotFound, Refused
from bot.domain.model import BOT, Deployment, LockInfo
from bot.domain.verification import ANSWERS, NOTE_MAX, FeedbackGiven, NoteAdded


class Book(Protocol):
    async def answer(self, deployment_id: int, by: str, answer: str, events: Any) -> tuple[bool, Any]: ...
    async def note(
        self, deployment_id: int, by: str, text: str, events: Any, key: str | None = None
    ) -> bool: ...
    async def summaries(self, deployment_ids: Any) -> dict[int, tuple[str | None, int, str | None]]: ...


def rollback_key(deployment_id: int) -> str:
    """The one rollback a regression of `deployment_id` asks for: the button clicked twice, by two
    people, or the bot's automatic rollback all find the same deployment."""
    return f"verify-rollback:{deployment_id}"


class Aftercare:
    def __init__(self, store: Storage, book: Book, intake: Intake, verifications: Verifications):
        self.store, self.book, self.intake, self.verifications = store, book, intake, verifications
        verifications.request_rollback = self._automatic_rollback

    async def rollback_now(
        self, deployment_id: int, user: str, roles: frozenset[str]
    ) -> Deployment | LockInfo:
        """The Roll back now button of a regression alert: a /rollback of the deployment's service and
        environment by `user` with their roles (Forbidden without the rollback role there). Refused when a
        newer deployment has replaced this one meanwhile (rolling that back is a person's /rollback)."""
        d = await self._get(deployment_id)
        newest = await self.store.history(d.service, d.env, limit=1)
        if newest and newest[0].id != d.id and newest[0].request_key != rollback_key(d.id):
            raise Refused(
                f"{d.service} in {d.env} has moved on since {d.ref} (now {newest[0].ref}, "
                f"{newest[0].state.word}); nothing was changed. Use /rollback {d.service} in {d.env} if you "
                "still mean it."
            )
        reason = f"verification of {d.ref} regressed"
        command = cmds.Rollback(d.service, d.env, None, False, reason)
        result = await self.intake.request(command, user, rollback_key(d.id), roles)
        if isinstance(result, Deployment | LockInfo):
            return result
        return result.deployment

    async def _automatic_rollback(self, d: Deployment, reason: str) -> int:
        """rollback_during_verify: the bot asks for the rollback with the rollback roles the environment
        names (the config gave it that right); Refused when the store answers with a lock."""
        policy = self.intake.settings.environments[d.env].policy
        roles = frozenset(policy.needed_roles("rollback")) or frozenset({"*"})
        command = cmds.Rollback(d.service, d.env, None, False, reason[:500])
        result = await self.intake.request(command, BOT, rollback_key(d.id), roles)
        if isinstance(result, LockInfo):
            raise Refused(f"{d.service} in {d.env} is locked by {result.holder}")
        return result.id if isinstance(result, Deployment) else result.deployment.id

    async def answer(self, deployment_id: int, user: str, answer: str) -> tuple[bool, Any]:
        """The requester's answer (only theirs: the question is theirs; anyone else writes a note). The
        first answer wins: (whether this one counted, the record with the answer that stands)."""
        if answer not in ANSWERS:
            raise Refused(f"{answer!r} is not an answer to that question.")
        d = await self._get(deployment_id)
        if user != d.requested_by:
            raise Refused(
                f"This question is for <@{d.requested_by}>, who asked for {d.ref}. Add what you saw with "
                f"`/deploy note {d.id} TEXT`."
            )
        return await self.book.answer(d.id, user, answer, [FeedbackGiven(user, answer)])

    async def note(self, deployment_id: int, user: str, text: str, key: str | None = None) -> bool:
        """A note by anyone on any deployment (their own words, escaped where shown). False: this key's
        note is recorded already. NotFound for no such deployment; Refused for an empty or long one."""
        words = text.strip()
        if not words:
            raise Refused(
                f"Write something to note, e.g. `/deploy note {deployment_id} error spike at 14:05`."
            )
        if len(words) > NOTE_MAX:
            raise Refused(f"A note holds at most {NOTE_MAX} characters; this one has {len(words)}.")
        d = await self._get(deployment_id)
        return await self.book.note(d.id, user, words, [NoteAdded(user, words)], key)

    async def summaries(self, deployment_ids: list[int]) -> dict[int, tuple[str | None, int, str | None]]:
        return await self.book.summaries(deployment_ids)

    async def _get(self, deployment_id: int) -> Deployment:
        d = await self.store.find(deployment_id)
        if d is None:
            raise NotFound("deployment", deployment_id)
        return d
