"""The store's Slack request claims (a retried or replayed request is answered as the first time) and
the freezes declared in Slack."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.adapters.store.base import StoreBase
from bot.domain.model import StoredAnswer
from bot.domain.windows import Freeze


class RequestsMixin(StoreBase):
    """Request claims and freezes (part of Store)."""

    def claim_request(
        self, key: str, now: float, keep_seconds: float = 3600.0, abandoned_seconds: float = 15.0
    ) -> StoredAnswer | None:
        """Claim a request by Slack's identity for it, atomically: None when THIS call claimed it (act on
        it, then `answer_request`), else what was answered to it (fields None while still being handled).
        Claims older than `keep_seconds` (far beyond Slack's 5-minute signature window) are dropped. A claim
        never answered after `abandoned_seconds` (Slack wants an answer within 3) belonged to a process that
        died while handling it: Slack's retry takes it over, so a crash does not swallow the request."""
        with self.db.atomic():
            if now - self._requests_swept_at > 60.0:  # old claims go once a minute, not on every request
                self.db.execute("DELETE FROM requests WHERE at < ?", [now - keep_seconds])
                self._requests_swept_at = now
            # The claim is the insert (the key is unique): of two replicas racing, one inserts, and the
            # other reads the winner's row; an abandoned claim is taken over by compare-and-set.
            claimed = self.db.execute(
                "INSERT INTO requests (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", [key, now]
            ).rowcount
            if claimed == 1:
                return None
            r = self._rows("SELECT * FROM requests WHERE key = ?", [key])[0]
            if r["status"] is None and r["at"] < now - abandoned_seconds:
                taken = self.db.execute(
                    "UPDATE requests SET at = ? WHERE key = ? AND status IS NULL AND at = ?",
                    [now, key, r["at"]],
                ).rowcount
                if taken == 1:
                    return None
                r = self._rows("SELECT * FROM requests WHERE key = ?", [key])[0]
            return StoredAnswer(r["status"], r["content_type"], r["body"])

    def answer_request(self, key: str, status: int, content_type: str, body: str) -> None:
        self.db.execute(
            "UPDATE requests SET status = ?, content_type = ?, body = ? WHERE key = ?",
            [status, content_type, body, key],
        )

    def claims_and_answers(
        self, ops: Sequence[tuple[str, float] | tuple[str, int, str, str]]
    ) -> list[StoredAnswer | BaseException | None]:
        """A burst's claims (key, now) and answers (key, status, content_type, body), in order, in ONE
        transaction: one commit for all of them instead of one each (a burst of 50 slash commands made 100
        commits on the ack's path). Each goes in its own savepoint, so one failing fails only itself (its
        result is the exception); nothing is claimed until the whole batch has committed."""
        out: list[StoredAnswer | BaseException | None] = []
        with self.db.atomic():
            for op in ops:
                try:
                    with self.db.atomic():  # a savepoint
                        if len(op) == 2:
                            out.append(self.claim_request(op[0], op[1]))
                        else:
                            self.answer_request(*op)
                            out.append(None)
                except Exception as exc:
                    out.append(exc)
        return out

    def answered(self, key: str) -> StoredAnswer | None:
        rows = self._rows("SELECT * FROM requests WHERE key = ?", [key])
        return StoredAnswer(rows[0]["status"], rows[0]["content_type"], rows[0]["body"]) if rows else None

    # ---------------------------------------------------------------------------- freezes, schedules

    def add_freeze(self, freeze: Freeze) -> Freeze:
        with self.db.atomic():
            self._insert(
                "freezes",
                {
                    "env": freeze.env,
                    "start": freeze.start.isoformat(),
                    "end": freeze.end.isoformat(),
                    "reason": freeze.reason,
                    "created_by": freeze.created_by or "deploybot",
                    "created_at": self.now(),
                },
            )
            self._event(
                None,
                freeze.created_by or "deploybot",
                "freeze",
                None,
                None,
                {"env": freeze.env, "until": freeze.end.isoformat(), "reason": freeze.reason},
            )
        return freeze

    def lift_freezes(self, env: str, actor: str) -> int:
        with self.db.atomic():
            n = self.db.execute(
                "UPDATE freezes SET lifted_by = ?, lifted_at = ? WHERE env = ? AND lifted_at IS NULL",
                [actor, self.now(), env],
            ).rowcount
            self._event(None, actor, "unfreeze", None, None, {"env": env, "lifted": n})
        return n

    def freezes(self) -> list[Freeze]:
        """Freezes declared in Slack and not lifted (config freezes live in settings)."""
        rows = self.db.query("SELECT * FROM freezes WHERE lifted_at IS NULL ORDER BY id")
        return [
            Freeze(
                r["env"],
                datetime.fromisoformat(r["start"]),
                datetime.fromisoformat(r["end"]),
                r["reason"],
                r["created_by"],
            )
            for r in rows
        ]
