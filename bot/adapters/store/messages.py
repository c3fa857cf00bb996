"""The store's record of first-post attempts: a deployment's top-level Slack message is posted once, even
across a crash between Slack's answer and saving its ts (the attempt is written before the post, so a
restart knows to look for the message before posting another)."""

from __future__ import annotations

from bot.adapters.store.base import StoreBase


class MessagesMixin(StoreBase):
    """First-post attempts (part of Store)."""

    def record_first_post_attempt(self, deployment_id: int, at: float) -> None:
        """The deployment's top-level message is about to be posted (at clock time `at`)."""
        self.db.execute(
            "INSERT INTO first_posts (deployment_id, attempted) VALUES (?, ?) "
            "ON CONFLICT(deployment_id) DO UPDATE SET attempted = excluded.attempted",
            [deployment_id, at],
        )

    def first_post_attempt(self, deployment_id: int) -> float | None:
        """When the deployment's top-level message was last set out to be posted; None: never."""
        rows = list(
            self.db.query("SELECT attempted FROM first_posts WHERE deployment_id = ?", [deployment_id])
        )
        return float(rows[0]["attempted"]) if rows else None

    def unconfirmed_first_posts(self) -> list[int]:
        """Deployments whose top-level message was set out to be posted but has no ts stored: the post
        may have reached Slack before a crash. Oldest first."""
        rows = self.db.query(
            "SELECT f.deployment_id FROM first_posts f JOIN deployments d ON d.id = f.deployment_id "
            "WHERE d.message_ts IS NULL ORDER BY f.deployment_id"
        )
        return [int(r["deployment_id"]) for r in rows]
