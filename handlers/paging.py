"""PagerDuty's delivery queue: what each alert owes PagerDuty is derived from the store (Alert.paged, the
last action PagerDuty confirmed, and the page_attempts rows — bot.adapters.store.alerts), so the queue is
persistent by construction: a restart carries on where the last process stopped, and nothing is sent twice
once confirmed.

- One worker per deployment (its incident: one dedup_key), sending its alerts' owed actions strictly in
  order — trigger, then acknowledge, then resolve — each only after the one before was confirmed. Workers
  are independent: one incident failing does not hold another's pages (an outage holds them all anyway).
- A failure is retried for as long as the alert owes something, with exponential backoff and jitter on
  the injected clock (2 s doubling to 5 min; at least PagerDuty's Retry-After). Each attempt is one try
  of the client (bot.adapters.pagerduty), whose own quick retries are for callers without a queue.
- After 5 minutes (clock time) of failing, one "paging is failing" warning — a domain event appended to
  the outbox in the transaction that records it was said, so the deployment's thread and the warning
  channels get it exactly as other warnings, once, across restarts; when the alert's pages are all
  delivered, one "paging works again" line (the same way).
- A 400 (PagerDuty rejected the event as malformed) is recorded and warned at once, and not retried by
  this process (the next start tries it once more: a fixed config or a new release may cure it)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from bot.adapters.pagerduty import PagerDuty, PagerDutyError
from bot.app.storage import Storage
from bot.clock import Clock
from bot.domain import alerts as policy
from bot.domain.model import Alert, Deployment
from handlers.ui import alert_blocks
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)
FIRST_RETRY = 2.0  # clock seconds before the first retry; doubling up to MAX_RETRY
MAX_RETRY = 300.0
WARN_AFTER = 300.0  # failing this long (clock seconds): "paging is failing" in the deployment's thread


class Backoff:
    """Exponential backoff with jitter: the n-th wait is drawn from [d/2, d], d = first * 2**n capped."""

    def __init__(
        self, first: float = FIRST_RETRY, cap: float = MAX_RETRY, jitter: Callable[[], float] = random.random
    ):
        self.first, self.cap, self.jitter = first, cap, jitter
        self.failures = 0

    def next(self, at_least: float | None = None) -> float:
        base = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        return max(base * (0.5 + self.jitter() / 2), at_least or 0.0)

    def reset(self) -> None:
        self.failures = 0


class Pager:
    """Delivers what alerts owe PagerDuty (see the module's docstring). `wake(deployment_id)` after a
    change to one of its alerts; `run(queue)` recovers what is owed at start and serves the queue."""

    def __init__(
        self,
        store: Storage,
        pagerduty: PagerDuty,
        clock: Clock,
        *,
        link: Callable[[Deployment], Awaitable[str | None]],
        warn_after: float = WARN_AFTER,
        backoff: Callable[[], Backoff] = Backoff,
    ):
        self.store, self.pagerduty, self.clock = store, pagerduty, clock
        self.link, self.warn_after, self.backoff = link, warn_after, backoff
        self.workers: dict[int, asyncio.Task[None]] = {}  # deployment id -> its worker
        self.waiting: dict[int, float] = {}  # deployment id -> the clock instant its backoff ends
        self._again: set[int] = set()  # woken while its worker was busy: read the store once more
        self._refused: set[tuple[int, str]] = set()  # (alert, action) PagerDuty rejected as malformed
        self._closing = False

    # ------------------------------------------------------------------------------- lifecycle

    async def run(self, queue: asyncio.Queue[tuple[str, Alert, Deployment] | None]) -> None:
        """Send what was owed at start (in order, ahead of anything new), then each page as it comes;
        None on the queue stops it."""
        try:
            await self.recover()
            while (item := await queue.get()) is not None:
                self.wake(item[2].id)
        except asyncio.CancelledError:
            for worker in self.workers.values():  # stopped for good: no send is waited for
                worker.cancel()
            raise
        finally:
            await self.close()

    async def recover(self) -> None:
        """What PagerDuty was never confirmed to have (the bot stopped before sending it, PagerDuty was
        down or refused it): every deployment owing a page gets its worker."""
        try:
            for a, _ in await self.store.pages_owed():
                self.wake(a.deployment_id)
        except Exception:
            log.exception("could not read the alerts PagerDuty still needs")

    def wake(self, deployment_id: int) -> None:
        if self._closing:
            return
        worker = self.workers.get(deployment_id)
        if worker is not None and not worker.done():
            self._again.add(deployment_id)
            return
        for done in [d for d, w in self.workers.items() if w.done()]:
            del self.workers[done]
        loop = asyncio.get_running_loop()
        self.workers[deployment_id] = loop.create_task(
            self._deliver(deployment_id), name=f"pagerduty-{deployment_id}"
        )

    async def close(self) -> None:
        """Stop: workers waiting out a backoff stop at once; one sending finishes that send (the caller
        bounds the wait)."""
        self._closing = True
        for deployment_id, worker in self.workers.items():
            if deployment_id in self.waiting:
                worker.cancel()
        try:
            await asyncio.gather(*self.workers.values(), return_exceptions=True)
        finally:
            for worker in self.workers.values():
                worker.cancel()

    def quiet(self) -> bool:
        """Every worker is done or waiting out a backoff that has not ended (tests stepping a manual clock
        move it on only then)."""
        now = self.clock.now()
        return all(w.done() or self.waiting.get(d, now) > now for d, w in self.workers.items())

    # ------------------------------------------------------------------------------- delivery

    async def _deliver(self, deployment_id: int) -> None:
        backoff = self.backoff()
        while not self._closing:
            self._again.discard(deployment_id)
            try:
                step = await self._next(deployment_id)
                if step is None:
                    if deployment_id in self._again:
                        continue  # something changed while the store was read
                    return
                wait = await self._attempt(*step, backoff)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store failed us: the page is still owed, so try again later
                log.exception("PagerDuty delivery for deployment #%s", deployment_id)
                wait = backoff.next()
            if wait is not None:
                await self._wait(deployment_id, wait)

    async def _next(self, deployment_id: int) -> tuple[Alert, str] | None:
        """The first owed action of the deployment's alerts, oldest alert first; an alert whose next
        action PagerDuty refused is passed over (its later actions cannot go before it)."""
        for a, due in await self.store.pages_owed(deployment_id):
            if (a.id, due[0]) not in self._refused:
                return a, due[0]
        return None

    async def _attempt(self, a: Alert, action: str, backoff: Backoff) -> float | None:
        """Send one action; None when it is done with (delivered, or refused), else how long to wait."""
        retry_after = None
        try:
            await self.store.page_attempt(a.id, action)
            await self._send(action, a)
        except asyncio.CancelledError:
            raise
        except PagerDutyError as exc:
            problem, retryable, retry_after = exc.problem, exc.retryable, exc.retry_after
        except Exception as exc:  # a bug or the store: logged whole, retried like an outage
            log.exception("PagerDuty %s for deployment #%s", action, a.deployment_id)
            problem, retryable = f"{type(exc).__name__}: {exc}", True
        else:
            await self.store.mark_paged(a.id, action)
            backoff.reset()
            return None
        return await self._failed(a, action, problem, retryable, retry_after, backoff)

    async def _failed(
        self,
        a: Alert,
        action: str,
        problem: str,
        retryable: bool,
        retry_after: float | None,
        backoff: Backoff,
    ) -> float | None:
        trouble = await self.store.page_failed(a.id, action, problem, refused=not retryable)
        now = self.clock.now()
        since = trouble.failing_since if trouble.failing_since is not None else now
        if not retryable:
            log.error(
                "PagerDuty refused the %s of deployment #%s (%s); not retried",
                action,
                a.deployment_id,
                problem,
            )
            self._refused.add((a.id, action))
            await self.store.warn_paging(a.id)
            return None
        warned = trouble.warned
        if not warned and now - since >= self.warn_after - 1e-3:
            warned = await self.store.warn_paging(a.id) or warned
        wait = backoff.next(retry_after)
        if not warned and retry_after is None:  # the next attempt comes by the warning's time: it says
            wait = min(wait, max(since + self.warn_after - now, 0.0)) or wait  # whether paging still fails
        log.warning(
            "PagerDuty %s for deployment #%s failed (%s), failing for %.0fs (%d failures); next try in %.0fs",
            action, a.deployment_id, problem, now - since, trouble.attempts, wait,
        )  # fmt: skip
        return wait

    async def _wait(self, deployment_id: int, seconds: float) -> None:
        deadline = self.clock.now() + seconds
        self.waiting[deployment_id] = deadline
        try:
            while (left := deadline - self.clock.now()) > 0:
                await self.clock.sleep(left)  # measured as the sleep starts: a clock jump cannot stretch it
        finally:
            self.waiting.pop(deployment_id, None)

    async def _send(self, action: str, a: Alert) -> dict[str, Any]:
        d = await self.store.get(a.deployment_id)
        key = policy.pagerduty_dedup_key(d.id)
        # one try each time: the backoff here is the retrying (the client's quick retries would only
        # stretch an attempt, in real time, whatever the clock)
        if action == "acknowledge":
            return await self.pagerduty.acknowledge(key, attempts=1)
        if action == "resolve":
            return await self.pagerduty.resolve(key, attempts=1)
        link = await self.link(d)  # the link is there if the message is
        what = alert_blocks.alert_title(a.event, d)
        return await self.pagerduty.trigger(
            key,
            # plain text, not mrkdwn: no markup can ride back into Slack on PD's integration
            slack_ui.plain(f"{what}: {slack_ui.title(d)}: {a.text}"),
            component=d.service,
            group=d.env,
            event_class=a.event,
            custom_details={"deployment": d.id, "version": d.version, "state": d.state.value},
            links=[{"href": link, "text": "The deployment in Slack"}] if link else None,
            timestamp=a.raised_at,
            attempts=1,
        )
