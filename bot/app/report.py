"""The delivery report (DORA's four figures and two of our own) computed from what the store recorded:
deployments and their audit events, no other source. Pure: the records go in, the figures come out; the
wording is handlers/ui/report_text.py's.

- A deployment counts when it ran and ended: succeeded, rolled back or failed (a cancelled request never
  changed anything). Flag rollouts and changes (`flag:KEY`) are not deployments of a service.
- A change failure: it ended rolled back or failed, or its verification after success regressed (an
  audit event `verify_regressed`).
- Time to restore: from a failure (its end, or the regression) to the next whole success (succeeded, no
  regression) of the same service in the same environment; failures in a row before that success are one
  incident, timed from the first.
- Lead time: from the version's commit (`commit_time` in the deployment's context, put there by CI
  evidence or metadata) to its success; unknown without one — never guessed.
- Duration: from the start (the `start` transition) to the end, median per strategy.
- Rollback reasons: the kinds of the failed measurements' reasons of each rolled-back deployment."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.app.storage import Storage
from bot.domain.analysis import reason_kind
from bot.domain.machine import State
from bot.domain.model import Deployment, Event

ENDED = (State.SUCCEEDED, State.ROLLED_BACK, State.FAILED)
REGRESSED = "verify_regressed"  # the audit action of a verification that found the live version worse
OUTCOMES = ("succeeded", "rolled_back", "failed", "regressed")  # regressed: succeeded, then regressed
NOT_ANALYSIS = "not the analysis (a rollout, health check or person)"


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date or instant (a time without an offset is UTC); ValueError otherwise."""
    at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    """One counted deployment, as the report sees it."""

    id: int
    service: str
    env: str
    strategy: str
    outcome: str  # one of OUTCOMES
    started: float  # epoch seconds
    ended: float
    failed_at: float | None  # when it became a change failure (None: it did not)
    commit_time: float | None
    reasons: tuple[str, ...]  # rollback reasons (kinds), for rolled-back ones

    @property
    def failure(self) -> bool:
        return self.failed_at is not None


@dataclass
class Week:
    start: str  # the Monday, YYYY-MM-DD
    counts: dict[str, int]
    change_failure_rate: float | None


@dataclass
class Report:
    service: str | None
    env: str | None
    since: str | None
    period_start: str | None
    period_end: str | None
    period_days: float
    deployments: int
    per_week: float
    by_outcome: dict[str, int]
    change_failures: int
    change_failure_rate: float | None
    restores: list[dict[str, Any]]  # {"service", "env", "failed_id", "restored_id", "seconds"}
    unrestored: list[dict[str, Any]]  # failures with no whole success after them yet
    median_time_to_restore_seconds: float | None
    lead_times_known: int
    median_lead_time_seconds: float | None  # None: unknown (no deployment's commit time is known)
    median_duration_seconds: dict[str, float]  # by strategy
    durations_counted: dict[str, int]
    rollback_reasons: list[tuple[str, int]]  # most frequent first
    weeks: list[Week] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rollback_reasons"] = [{"reason": r, "count": n} for r, n in self.rollback_reasons]
        return out


def _ts(text: str | None) -> float | None:
    return parse_instant(text).timestamp() if text else None


def _started(d: Deployment, events: Sequence[Event]) -> float:
    for e in events:
        if e.action == "start" and e.to_state == State.RUNNING.value:
            return parse_instant(e.at).timestamp()
    return parse_instant(d.created_at).timestamp()


def _commit_time(d: Deployment) -> float | None:
    """The version's commit time, where CI evidence or metadata recorded one (an ISO instant or epoch)."""
    for source in (d.context, d.context.get("metadata") or {}, d.context.get("ci") or {}):
        value = source.get("commit_time") if isinstance(source, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value:
            try:
                return parse_instant(value).timestamp()
            except ValueError:
                continue
    return None


def _reasons(events: Sequence[Event]) -> tuple[str, ...]:
    """The kinds of the last failed analysis measurement's reasons (the one that ended the bake)."""
    failed = [
        e.details
        for e in events
        if e.action == "measurement" and e.details.get("verdict") in ("fail", "error")
    ]
    if not failed:
        return (NOT_ANALYSIS,)
    return tuple(dict.fromkeys(reason_kind(r) for r in failed[-1].get("reasons") or ["?"]))


def rows(deployments: Iterable[Deployment], events: Iterable[Event]) -> list[Row]:
    """The counted deployments, oldest first."""
    by_deployment: dict[int, list[Event]] = defaultdict(list)
    for e in events:
        if e.deployment_id is not None:
            by_deployment[e.deployment_id].append(e)
    out = []
    for d in sorted(deployments, key=lambda d: d.id):
        if d.state not in ENDED or d.service.startswith("flag:") or d.finished_at is None:
            continue
        trail = by_deployment.get(d.id, [])
        ended = parse_instant(d.finished_at).timestamp()
        regressed = next((e for e in trail if e.action == REGRESSED), None)
        outcome = d.state.value
        failed_at: float | None = None
        if d.state != State.SUCCEEDED:
            failed_at = ended
        elif regressed is not None:
            outcome, failed_at = "regressed", parse_instant(regressed.at).timestamp()
        out.append(
            Row(
                id=d.id,
                service=d.service,
                env=d.env,
                strategy=d.strategy,
                outcome=outcome,
                started=_started(d, trail),
                ended=ended,
                failed_at=failed_at,
                commit_time=_commit_time(d),
                reasons=_reasons(trail) if d.state == State.ROLLED_BACK else (),
            )
        )
    return out


def _restores(counted: Sequence[Row]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Incidents per service+env: from the first failure to the next whole success."""
    restores, open_ = [], []
    streams: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in counted:
        streams[(r.service, r.env)].append(r)
    for (service, env), stream in streams.items():
        first: Row | None = None
        for r in sorted(stream, key=lambda r: r.ended):
            if r.failure:
                first = first or r
            elif first is not None:
                assert first.failed_at is not None
                restores.append(
                    {
                        "service": service,
                        "env": env,
                        "failed_id": first.id,
                        "restored_id": r.id,
                        "seconds": round(r.ended - first.failed_at, 3),
                    }
                )
                first = None
        if first is not None:
            open_.append({"service": service, "env": env, "failed_id": first.id})
    return restores, open_


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _week_start(ts: float) -> str:
    day = datetime.fromtimestamp(ts, UTC).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def _weeks(counted: Sequence[Row]) -> list[Week]:
    weeks: dict[str, Counter[str]] = defaultdict(Counter)
    for r in counted:
        weeks[_week_start(r.ended)][r.outcome] += 1
    out: list[Week] = []
    if not weeks:
        return out
    first, last = (datetime.fromisoformat(w).date() for w in (min(weeks), max(weeks)))
    every = [(first + timedelta(days=7 * i)).isoformat() for i in range((last - first).days // 7 + 1)]
    for start in every:  # a week without a deployment is a week too
        c = weeks[start]
        total = sum(c.values())
        failures = total - c["succeeded"]
        out.append(Week(start, {o: c[o] for o in OUTCOMES}, round(failures / total, 4) if total else None))
    return out


def delivery_report(
    deployments: Iterable[Deployment],
    events: Iterable[Event],
    *,
    now: float,
    since: datetime | None = None,
    service: str | None = None,
    env: str | None = None,
) -> Report:
    """The figures over the deployments that ended at or after `since` (of `service`, in `env`). The
    period runs from `since` (or the first counted deployment's start) to `now` (or the last end, if
    later); the rate per week is over at least one day, so a short history is not extrapolated."""
    counted = [
        r
        for r in rows(deployments, events)
        if (service is None or r.service == service)
        and (env is None or r.env == env)
        and (since is None or r.ended >= since.timestamp())
    ]
    start = since.timestamp() if since is not None else min((r.started for r in counted), default=None)
    end = max([now, *(r.ended for r in counted)])
    days = max(0.0, (end - start) / 86400) if start is not None else 0.0
    failures = [r for r in counted if r.failure]
    restores, unrestored = _restores(counted)
    leads = [r.ended - r.commit_time for r in counted if r.commit_time is not None and not r.failure]
    durations: dict[str, list[float]] = defaultdict(list)
    for r in counted:
        durations[r.strategy].append(r.ended - r.started)
    reasons: Counter[str] = Counter(k for r in counted for k in r.reasons)
    iso = (lambda ts: datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")) if counted else None
    return Report(
        service=service,
        env=env,
        since=since.isoformat() if since is not None else None,
        period_start=iso(start) if iso and start is not None else None,
        period_end=iso(end) if iso else None,
        period_days=round(days, 4),
        deployments=len(counted),
        per_week=round(len(counted) * 7 / max(days, 1.0), 3),
        by_outcome={o: sum(r.outcome == o for r in counted) for o in OUTCOMES},
        change_failures=len(failures),
        change_failure_rate=round(len(failures) / len(counted), 4) if counted else None,
        restores=restores,
        unrestored=unrestored,
        median_time_to_restore_seconds=_median([r["seconds"] for r in restores]),
        lead_times_known=len(leads),
        median_lead_time_seconds=_median(leads),
        median_duration_seconds={s: _median(v) or 0.0 for s, v in sorted(durations.items())},
        durations_counted={s: len(v) for s, v in sorted(durations.items())},
        rollback_reasons=sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])),
        weeks=_weeks(counted),
    )


async def delivery_report_of(
    store: Storage, now: float, service: str | None = None, env: str | None = None
) -> Report:
    """The report over everything the store holds (of `service`, in `env`), read through the app's
    Storage: its deployments and the audit events of them."""
    deployments = await store.latest(service, limit=1_000_000)
    events = await store.events(service=service)
    return delivery_report(deployments, events, now=now, service=service, env=env)
