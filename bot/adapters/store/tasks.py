"""The store's record of one-off tasks: what a migration's rehearsal left in the audit trail, read back as
the evidence production's checklist shows."""

from __future__ import annotations

from bot.adapters.store.base import StoreBase
from bot.domain.model import Event


class TasksMixin(StoreBase):
    """Migrations' evidence (part of Store)."""

    def rehearsal(self, service: str, env: str, version: str) -> Event | None:
        """The newest `migration_rehearsed` event of `version` of the service in `env`, if any."""
        rows = self._rows(
            "SELECT e.* FROM events e JOIN deployments d ON d.id = e.deployment_id "
            "WHERE e.action = 'migration_rehearsed' AND d.service = ? AND d.env = ? "
            "AND json_extract(e.details, '$.version') = ? ORDER BY e.id DESC LIMIT 1",
            [service, env, version],
        )
        return Event.from_row(rows[0]) if rows else None
