"""The store's alerts: raised about a deployment, acknowledged, resolved, and escalated in claimed and
confirmed rounds (so a restart neither loses nor repeats a round)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.adapters.store.base import _SQLITE_INT, StoreBase
from bot.app.storage import PageTrouble
from bot.domain.errors import NotFound
from bot.domain.events import DomainEvent, PagingFailing, PagingRestored
from bot.domain.model import Alert


class AlertsMixin(StoreBase):
    """Alerts and their escalation timers, and PagerDuty's queue of pages (part of Store)."""

    if TYPE_CHECKING:

        def _append_in_tx(self, deployment_id: int | None, events: Sequence[DomainEvent]) -> list[int]: ...

    def raise_alert(
        self,
        deployment_id: int,
        event: str,
        level: str,
        text: str,
        *,
        escalate_at: float | None = None,
        key: str | None = None,
        raised_ts: float | None = None,
    ) -> Alert | None:
        """Record an alert (and its audit event). With a `key` already raised, nothing: None. `raised_ts`:
        the instant its escalation was computed from (the store's clock now when not given)."""
        with self.db.atomic():
            if key is not None and list(self.db.query("SELECT id FROM alerts WHERE key = ?", [key])):
                return None
            row = {
                "deployment_id": deployment_id,
                "event": event,
                "level": level,
                "text": text,
                "key": key,
                "raised_at": self.now(),
                "raised_ts": self.clock.now() if raised_ts is None else raised_ts,
                "messages": "[]",
                "rounds_claimed": 0,
                "rounds_sent": 0,
                "next_escalation_at": escalate_at,
            }
            if key is not None:  # raised once, even by two replicas at the same instant: the key is unique
                try:
                    with self.db.atomic():  # a savepoint: the loser's failed insert undoes only itself
                        alert_id = self._insert("alerts", row)
                except self.integrity_errors:
                    return None
            else:
                alert_id = self._insert("alerts", row)
            state = self.get(deployment_id).state
            self._event(
                deployment_id, "deploybot", "alert_raised", state, state,
                {"alert": alert_id, "event": event, "level": level},
            )  # fmt: skip
        return self.alert(alert_id)

    def alert(self, alert_id: int) -> Alert:
        if not isinstance(alert_id, int) or alert_id not in _SQLITE_INT:
            raise NotFound("alert", alert_id)
        rows = list(self.db.query("SELECT * FROM alerts WHERE id = ?", [alert_id]))
        if not rows:
            raise NotFound("alert", alert_id)
        return Alert.from_row(rows[0])

    def add_alert_message(self, alert_id: int, channel: str, ts: str) -> Alert:
        """Remember a Slack message showing the alert (the first one's thread gets the escalations)."""
        with self.db.atomic():
            if self.dialect == "postgres":  # the read-modify-write below holds the row (SQLite: one writer)
                self.db.execute("SELECT id FROM alerts WHERE id = ? FOR UPDATE", [alert_id])
            messages = self.alert(alert_id).messages
            if {"channel": channel, "ts": ts} not in messages:
                messages.append({"channel": channel, "ts": ts})
                self._update("alerts", alert_id, {"messages": json.dumps(messages)})
        return self.alert(alert_id)

    def acknowledge_alert(self, alert_id: int, user: str) -> tuple[bool, Alert]:
        """Acknowledge, as a compare-and-set: (True, alert) when THIS call acknowledged it, (False, alert
        as it is) when it was acknowledged already. Escalation stops with the acknowledgement."""
        with self.db.atomic():
            current = self.alert(alert_id)
            cursor = self.db.execute(
                "UPDATE alerts SET acked_by = ?, acked_at = ?, acked_ts = ?, next_escalation_at = NULL "
                "WHERE id = ? AND acked_by IS NULL",
                [user, self.now(), self.clock.now(), alert_id],
            )
            won = cursor.rowcount == 1
            if won:
                state = self.get(current.deployment_id).state
                self._event(
                    current.deployment_id, user, "alert_acknowledged", state, state,
                    {"alert": alert_id, "rounds_sent": current.rounds_sent},
                )  # fmt: skip
        return won, self.alert(alert_id)

    def resolve_alerts(self, alert_ids: list[int], resolution: str, stop_escalation: bool) -> list[Alert]:
        """Mark alerts resolved (the deployment recovered); returns those THIS call resolved."""
        resolved = []
        with self.db.atomic():
            for alert_id in alert_ids:
                sets = "resolved_at = ?, resolved_ts = ?, resolution = ?"
                if stop_escalation:
                    sets += ", next_escalation_at = NULL"
                cursor = self.db.execute(
                    f"UPDATE alerts SET {sets} WHERE id = ? AND resolved_at IS NULL",
                    [self.now(), self.clock.now(), resolution, alert_id],
                )
                if cursor.rowcount == 1:
                    a = self.alert(alert_id)
                    state = self.get(a.deployment_id).state
                    self._event(
                        a.deployment_id, "deploybot", "alert_resolved", state, state,
                        {"alert": alert_id, "resolution": resolution},
                    )  # fmt: skip
                    resolved.append(a)
        return resolved

    def open_alerts(
        self, deployment_id: int | None = None, service: str | None = None, env: str | None = None
    ) -> list[Alert]:
        """Alerts not resolved yet, for one deployment or one service+env, oldest first."""
        sql, args = "SELECT a.* FROM alerts a JOIN deployments d ON d.id = a.deployment_id", []
        sql += " WHERE a.resolved_at IS NULL"
        for column, value in (("d.id", deployment_id), ("d.service", service), ("d.env", env)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        return [Alert.from_row(r) for r in self.db.query(sql + " ORDER BY a.id", args)]

    def mark_paged(self, alert_id: int, action: str) -> bool:
        """PagerDuty confirmed `action` for this alert's incident. Its page_attempts row notes it, and goes
        when the alert owes nothing more — with a "paging works again" event in the outbox if "paging is
        failing" was said. True when that event was appended."""
        with self.db.atomic():
            self.db.execute("UPDATE alerts SET paged = ? WHERE id = ?", [action, alert_id])
            trouble = self.page_trouble(alert_id)
            if trouble is None:
                return False
            delivered = (*trouble.delivered, action)
            if self.alert(alert_id).pages_due(attempted=True):
                self.db.execute(
                    "UPDATE page_attempts SET delivered = ?, failing_since = NULL WHERE alert_id = ?",
                    [" ".join(delivered), alert_id],
                )
                return False
            self.db.execute("DELETE FROM page_attempts WHERE alert_id = ?", [alert_id])
            if not trouble.warned:
                return False
            began = trouble.first_failed if trouble.first_failed is not None else self.clock.now()
            restored = PagingRestored(" ".join(delivered), int(round(self.clock.now() - began)))
            self._append_in_tx(trouble.deployment_id, [restored])
            return True

    def unpaged_alerts(self) -> list[Alert]:
        """Critical alerts whose incident still needs a PagerDuty action (Alert.pages_due), oldest first."""
        return [a for a, _ in self.pages_owed()]

    def pages_owed(self, deployment_id: int | None = None) -> list[tuple[Alert, list[str]]]:
        """(alert, the PagerDuty actions it still owes, in order) for every critical alert owing some (of
        one deployment, or all), oldest first. An alert with a page_attempts row was being paged: it owes
        its whole incident even if it was resolved before PagerDuty took anything."""
        sql = (
            "SELECT a.*, p.alert_id AS attempted FROM alerts a LEFT JOIN page_attempts p ON p.alert_id = a.id "
            "WHERE a.level = 'critical' AND (a.paged IS NULL OR a.paged != 'resolve') "
            "AND (a.resolved_at IS NULL OR a.paged IS NOT NULL OR p.alert_id IS NOT NULL)"
        )  # (resolved, never paged nor tried: owes nothing)
        args: list[Any] = []
        if deployment_id is not None:
            sql += " AND a.deployment_id = ?"
            args.append(deployment_id)
        out = []
        for row in self.db.query(sql + " ORDER BY a.id", args):
            attempted = row.pop("attempted") is not None
            a = Alert.from_row(row)
            if due := a.pages_due(attempted=attempted):
                out.append((a, due))
        return out

    def page_attempt(self, alert_id: int, action: str) -> None:
        """`action` of this alert is about to be sent: from now on the alert is owed its whole incident."""
        a = self.alert(alert_id)
        self.db.execute(
            "INSERT INTO page_attempts (alert_id, deployment_id, action, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (alert_id) DO UPDATE SET action = excluded.action",
            [alert_id, a.deployment_id, action, self.clock.now()],
        )

    def page_failed(self, alert_id: int, action: str, problem: str, refused: bool = False) -> PageTrouble:
        """PagerDuty did not take `action` (`problem`; `refused`: rejected as malformed): the row counts the
        attempt and remembers since when it fails."""
        now = self.clock.now()
        with self.db.atomic():
            self.page_attempt(alert_id, action)
            self.db.execute(
                "UPDATE page_attempts SET attempts = attempts + 1, problem = ?, "
                "failing_since = COALESCE(failing_since, ?), first_failed = COALESCE(first_failed, ?), "
                "refused = CASE WHEN ? = 1 THEN ? ELSE refused END WHERE alert_id = ?",
                [problem, now, now, int(refused), action, alert_id],
            )
            trouble = self.page_trouble(alert_id)
        assert trouble is not None
        return trouble

    def page_trouble(self, alert_id: int) -> PageTrouble | None:
        rows = list(self.db.query("SELECT * FROM page_attempts WHERE alert_id = ?", [alert_id]))
        if not rows:
            return None
        r = rows[0]
        return PageTrouble(
            alert_id=r["alert_id"],
            deployment_id=r["deployment_id"],
            action=r["action"],
            attempts=r["attempts"] or 0,
            failing_since=r["failing_since"],
            first_failed=r["first_failed"],
            problem=r["problem"],
            refused=r["refused"],
            warned=bool(r["warned"]),
            delivered=tuple((r["delivered"] or "").split()),
        )

    def warn_paging(self, alert_id: int) -> bool:
        """Say "paging is failing" for this alert, once: a compare-and-set of its row's `warned`, with the
        warning appended to the outbox in the same transaction. False: said already (or nothing fails)."""
        with self.db.atomic():
            trouble = self.page_trouble(alert_id)
            if trouble is None or trouble.warned or trouble.failing_since is None:
                return False
            self.db.execute("UPDATE page_attempts SET warned = 1 WHERE alert_id = ?", [alert_id])
            failing = PagingFailing(
                trouble.action or "trigger",
                trouble.problem or "no answer",
                int(round(self.clock.now() - trouble.failing_since)),
                refused=trouble.refused == trouble.action,
            )
            self._append_in_tx(trouble.deployment_id, [failing])
        return True

    def unacknowledged_alerts(self, level: str = "critical") -> list[Alert]:
        rows = self.db.query("SELECT * FROM alerts WHERE level = ? AND acked_by IS NULL ORDER BY id", [level])
        return [Alert.from_row(r) for r in rows]

    def due_escalations(self, now: float) -> list[Alert]:
        """Unacknowledged alerts whose next escalation round is due and not being sent."""
        rows = self.db.query(
            "SELECT * FROM alerts WHERE acked_by IS NULL AND next_escalation_at IS NOT NULL "
            "AND next_escalation_at <= ? AND rounds_claimed = rounds_sent ORDER BY next_escalation_at, id",
            [now],
        )
        return [Alert.from_row(r) for r in rows]

    def next_escalation_due(self) -> float | None:
        rows = list(
            self.db.query(
                "SELECT MIN(next_escalation_at) AS due FROM alerts WHERE acked_by IS NULL "
                "AND next_escalation_at IS NOT NULL AND rounds_claimed = rounds_sent"
            )
        )
        return rows[0]["due"] if rows else None

    def claim_escalation(self, alert_id: int, round_: int, next_at: float | None) -> bool:
        """Take round `round_` of an alert's escalation for sending, atomically: True for exactly one
        caller, and only while the alert is unacknowledged and the previous round has been sent."""
        cursor = self.db.execute(
            "UPDATE alerts SET rounds_claimed = ?, next_escalation_at = ? WHERE id = ? AND acked_by IS NULL "
            "AND rounds_claimed = ? AND rounds_sent = ?",
            [round_, next_at, alert_id, round_ - 1, round_ - 1],
        )
        return cursor.rowcount == 1

    def confirm_escalation(self, alert_id: int, round_: int, details: dict | None = None) -> bool:
        """Round `round_` was posted (or found posted): record it and its audit event."""
        with self.db.atomic():
            cursor = self.db.execute(
                "UPDATE alerts SET rounds_sent = ? WHERE id = ? AND rounds_sent = ? AND rounds_claimed >= ?",
                [round_, alert_id, round_ - 1, round_],
            )
            if cursor.rowcount != 1:
                return False
            a = self.alert(alert_id)
            state = self.get(a.deployment_id).state
            self._event(
                a.deployment_id, "deploybot", "alert_escalated", state, state,
                {"alert": alert_id, "round": round_, **(details or {})},
            )  # fmt: skip
        return True

    def in_doubt_escalations(self) -> list[Alert]:
        """Rounds claimed but not confirmed: the bot stopped while posting them (checked at start)."""
        rows = self.db.query("SELECT * FROM alerts WHERE rounds_claimed > rounds_sent ORDER BY id")
        return [Alert.from_row(r) for r in rows]

    def unshown_alerts(self, since_ts: float) -> list[Alert]:
        """Critical alerts raised since `since_ts` with no Slack message recorded: a crash (or a replica
        killed) between raising one and posting it. The notifier looks for them in Slack, or posts them."""
        rows = self.db.query(
            "SELECT * FROM alerts WHERE level = 'critical' AND messages = '[]' AND raised_ts >= ? ORDER BY id",
            [since_ts],
        )
        return [Alert.from_row(r) for r in rows]
