"""An in-memory Metrics (bot.app.ports.Metrics) for unit tests: each slot's numbers set by the test (by
the "slot" label of the scope; `default` otherwise), each flag variant's numbers (`set_variant`; per
environment or for all), alarms in a dict, injected failures (`fail`), and a record of the flag reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.app.ports import Alarm, MetricScope, PlatformError
from bot.config.flags import FlagMetrics
from bot.domain.analysis import GroupMetrics

HEALTHY = GroupMetrics(requests=1000.0, errors=0.0, latency_ms=80.0)


@dataclass(frozen=True)
class FlagRead:
    """One flag_metrics call, as the fake saw it."""

    flag: str
    env: str
    variants: tuple[str, ...]
    start: datetime
    end: datetime
    latency_statistic: str
    namespace: str


class MemoryMetrics:
    def __init__(self, default: GroupMetrics = HEALTHY):
        self.default = default
        self.by_slot: dict[str, GroupMetrics] = {}
        self.minutes: dict[str, dict[datetime, GroupMetrics]] = {}  # slot -> minute -> numbers
        self.alarm_states: dict[str, Alarm] = {}
        self.hourly: dict[datetime, float] = {}
        self.calls: list[str] = []
        # (flag, variant, env or None for every environment) -> metrics
        self.by_variant: dict[tuple[str, str, str | None], GroupMetrics] = {}
        self.flag_reads: list[FlagRead] = []
        self._faults: dict[str, list[PlatformError]] = {}

    def set(self, slot: str, metrics: GroupMetrics) -> None:
        """From now on, the slot's metrics (any window)."""
        self.by_slot[slot] = metrics

    def set_variant(self, flag: str, variant: str, metrics: GroupMetrics, env: str | None = None) -> None:
        """From now on, the variant's metrics (any window) in `env`, or in every environment without one
        of its own. A variant never set reads as `default`."""
        self.by_variant[(flag, variant, env)] = metrics

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

    async def slot_minutes(
        self,
        account: str | None,
        scopes: Mapping[str, MetricScope],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, dict[datetime, GroupMetrics]]:
        """Every whole minute from `start` to `end` reads as the slot's numbers (set(); `default`
        otherwise), or as `minutes[slot][minute]` where a test set one."""
        self._enter("slot_minutes")
        first = start.replace(second=0, microsecond=0)
        first = first if first == start else first + timedelta(minutes=1)
        out: dict[str, dict[datetime, GroupMetrics]] = {}
        for name, scope in scopes.items():
            slot = scope.get("slot") or ""
            out[name] = {}
            at = first
            while at + timedelta(minutes=1) <= end:
                out[name][at] = self.minutes.get(slot, {}).get(at, self.by_slot.get(slot, self.default))
                at += timedelta(minutes=1)
        return out

    async def flag_metrics(
        self,
        account: str | None,
        metrics: FlagMetrics,
        flag: str,
        env: str,
        variants: Sequence[str],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, GroupMetrics]:
        self._enter("flag_metrics")
        self.flag_reads.append(
            FlagRead(flag, env, tuple(variants), start, end, latency_statistic, metrics.namespace)
        )
        return {
            v: self.by_variant.get((flag, v, env), self.by_variant.get((flag, v, None), self.default))
            for v in variants
        }

    async def alarms(self, account: str | None, names: Sequence[str]) -> list[Alarm]:
        self._enter("alarms")
        return [self.alarm_states[n] for n in dict.fromkeys(names) if n in self.alarm_states]

    async def requests_per_hour(
        self, account: str | None, scopes: Sequence[MetricScope], start: datetime, end: datetime
    ) -> dict[datetime, float]:
        self._enter("requests_per_hour")
        return {ts: v for ts, v in self.hourly.items() if start <= ts < end} if scopes else {}
