"""APScheduler 3 behind a small seam: one job per key, run on the event loop at a clock's due time; a missed job is reported, not dropped."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time as _time
import weakref
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.clock import Clock
from bot.domain.windows import Callback, MissedCallback
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)
_SCHEDULERS: weakref.WeakValueDictionary[str, Scheduler] = weakref.WeakValueDictionary()
_IDS = itertools.count(1)


async def _fire(scheduler_id: str, key: str, token: int) -> None:
    """The one APScheduler job function (module-level, so a job names it by reference): it hands the key
    to the Scheduler that added the job."""
    scheduler = _SCHEDULERS.get(scheduler_id)
    if scheduler is None:
        log.debug("schedule %s fired after its scheduler shut down: ignored", key)
        return
    scheduler._dispatch(key, token)


class Scheduler:
    """Fires `callback(key)` once at each key's due time (virtual epoch seconds of `clock`).

    The store is the source of truth; this only holds in-memory APScheduler date jobs, rebuilt by the
    caller at start (apply overdue() to past due times first). Job ids are the keys, so scheduling a key
    again replaces its job. Because a ScaledClock runs `speed` times faster than the wall, a due time
    becomes the wall-clock run date `time.time() + (due - clock.now()) / clock.speed`; a due time already
    past runs at once. `misfire_grace_seconds` (clock seconds) is converted the same way, to whole wall
    seconds, at least 1: APScheduler's default of 1 s would silently drop a job delayed by a busy loop;
    such a drop is logged and handed to `on_missed(key, due)`. coalesce=True, max_instances=1. The
    callback runs in its own task (a long callback never blocks other jobs, and may reschedule its own
    key); its exceptions are logged and never stop the scheduler."""

    def __init__(
        self,
        clock: Clock,
        callback: Callback | None = None,
        misfire_grace_seconds: float = 300.0,
        on_missed: MissedCallback | None = None,
    ):
        if misfire_grace_seconds <= 0:
            raise ValueError(f"misfire_grace_seconds must be > 0, got {misfire_grace_seconds}")
        self.clock, self.callback, self.on_missed = clock, callback, on_missed
        self.misfire_grace_seconds = float(misfire_grace_seconds)
        self.misfire_grace_wall = max(1, math.ceil(self.misfire_grace_seconds / clock.speed))
        self.id = f"scheduler-{next(_IDS)}"
        self._tokens = itertools.count(1)
        self._jobs: dict[str, tuple[int, float]] = {}  # key -> (token of its current job, due epoch)
        self._tasks = TaskGroup("scheduler")
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "misfire_grace_time": self.misfire_grace_wall,
                "coalesce": True,
                "max_instances": 1,
            },
        )
        self._aps.add_listener(self._missed, EVENT_JOB_MISSED)
        _SCHEDULERS[self.id] = self

    def bind(self, callback: Callback, on_missed: MissedCallback | None = None) -> None:
        """Name what runs at a due time (and what hears of a missed one), when the scheduler was made first."""
        self.callback, self.on_missed = callback, on_missed

    @property
    def running(self) -> bool:
        return self._aps.running

    def start(self) -> None:
        """Start firing; call from inside the running event loop."""
        _SCHEDULERS[self.id] = self
        self._aps.start()

    def shutdown(self) -> None:
        """Stop firing, forget every job, cancel callbacks still running. Jobs stay in the store."""
        _SCHEDULERS.pop(self.id, None)
        self._jobs.clear()
        if self._aps.running:
            self._aps.remove_all_jobs()
            self._aps.shutdown(wait=False)
        self._tasks.cancel_all()

    def wall_time(self, due_epoch: float) -> float:
        """The wall-clock epoch at which the clock reads `due_epoch`."""
        return _time.time() + (due_epoch - self.clock.now()) / self.clock.speed

    def schedule(self, key: str, due_epoch: float) -> None:
        """Fire callback(key) when the clock reads due_epoch, replacing the key's job if it has one."""
        token = next(self._tokens)
        self._jobs[key] = (token, float(due_epoch))
        run_date = datetime.fromtimestamp(max(self.wall_time(due_epoch), _time.time()), UTC)
        self._aps.add_job(
            _fire,
            "date",
            run_date=run_date,
            args=(self.id, key, token),
            id=key,
            name=f"deploybot {key}",
            replace_existing=True,
            misfire_grace_time=self.misfire_grace_wall,
            coalesce=True,
            max_instances=1,
        )

    def cancel(self, key: str) -> bool:
        """Forget the key's job; True when there was one."""
        existed = self._jobs.pop(key, None) is not None
        try:
            self._aps.remove_job(key)
        except JobLookupError:
            pass
        return existed

    def jobs(self) -> dict[str, float]:
        """key -> due epoch (clock seconds) of every job not yet fired."""
        return {key: due for key, (_, due) in self._jobs.items()}

    def _dispatch(self, key: str, token: int) -> None:
        current = self._jobs.get(key)
        if current is None or current[0] != token:
            log.debug("schedule %s fired for a replaced or cancelled job: ignored", key)
            return
        del self._jobs[key]
        self._tasks.spawn(self._run(key), f"schedule {key}")

    async def _run(self, key: str) -> None:
        if self.callback is None:
            raise RuntimeError("scheduler: bind() a callback before scheduling")
        try:
            await self.callback(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled job %s failed; the scheduler goes on", key)

    def _missed(self, event: JobExecutionEvent) -> None:
        key = event.job_id
        if self._aps.get_job(key) is not None:
            return  # a newer job with this key is waiting
        current = self._jobs.pop(key, None)
        if current is None:
            return
        due = current[1]
        log.warning(
            "scheduled job %s (due %s) was not run: the event loop reached it more than %s s (wall) late",
            key,
            datetime.fromtimestamp(due, UTC).isoformat(),
            self.misfire_grace_wall,
        )
        if self.on_missed is not None:
            self._tasks.spawn(self._run_missed(key, due), f"missed {key}")

    async def _run_missed(self, key: str, due: float) -> None:
        try:
            await self.on_missed(key, due)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("on_missed for scheduled job %s failed", key)
