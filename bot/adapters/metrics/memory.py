"""An in-memory Metrics (bot.app.ports.Metrics) for unit tests: each slot's numbers set by the test (by
the "slot" label of the scope; `default` otherwise), alarms in a dict, and injected failures (`fail`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from bot.app.ports import Alarm, MetricScope, PlatformError
from bot.domain.analysis import GroupMetrics

HEALTHY = GroupMetrics(requests=1000.0, errors=0.0, latency_ms=80.0)


class MemoryMetrics:
    def __init__(self, default: GroupMetrics = HEALTHY):
        self.default = default
        self.by_slot: dict[str, GroupMetrics] = {}
        self.alarm_states: dict[str, Alarm] = {}
        self.hourly: dict[datetime, float] = {}
        self.calls: list[str] = []
        self._faults: dict[str, list[PlatformError]] = {}

    def set(self, slot: str, metrics: GroupMetrics) -> None:
        """From now on, the slot's metrics (any window)."""
        self.by_slot[slot] = metrics

    def alarm(self, name: str, state: str = "OK", reason: str = "") -> None:
        self.alarm_states[name] = Alarm(name, state, reason)

    def fail(self, operation: str, *errors: PlatformError) -> None:
        """The next calls of `operation` (e.g. "slot_metrics") raise these, one each."""
        self._faults.setdefault(operation, []).extend(errors)

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        pending = self._faults.get(operation)
        if pending:
            raise pending.pop(0)

    async def slot_metrics(
        self,
        account: str | None,
        scopes: Mapping[str, MetricScope],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, GroupMetrics]:
        self._enter("slot_metrics")
        return {
            name: self.by_slot.get(scope.get("slot") or "", self.default) for name, scope in scopes.items()
        }

    async def alarms(self, account: str | None, names: Sequence[str]) -> list[Alarm]:
        self._enter("alarms")
        return [self.alarm_states[n] for n in dict.fromkeys(names) if n in self.alarm_states]

    async def requests_per_hour(
        self, account: str | None, scopes: Sequence[MetricScope], start: datetime, end: datetime
    ) -> dict[datetime, float]:
        self._enter("requests_per_hour")
        return {ts: v for ts, v in self.hourly.items() if start <= ts < end} if scopes else {}
