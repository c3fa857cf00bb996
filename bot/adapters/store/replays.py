"""A request handled while its claim is still on the way to the store (`handlers/app.py`, slash commands
that start with a store write).

Awaiting the claim before handling the request cost a whole hop to the store's thread on the ack's path:
under a burst of /deploy, that hop (its wait for the thread and for the GIL) was most of what the bot
added to a bare bolt app. So the claim is handed to the store's thread first and the request is handled
at once, behind a `Guard`:

- every store call the request makes (and every task it starts, which inherits the guard) reaches the
  store's thread after the claim (`flush`), and there, in the thread's order, is refused with `Replayed`
  when the claim found the request seen before (`check`): a replay writes nothing, not even halfway;
- whatever else a request would do beyond the store (a Slack post) asks `fresh()` first;
- the answer waits for the claim: a replay is answered with the first copy's answer, never its own.

What a handled request changes in memory before its first store write must not decide anything for
another request: only commands whose handling is so (deploy, rollback, promote: the store's one
transaction decides) are handled before their claim is known."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, TypeVar

R = TypeVar("R")


class Replayed(Exception):
    """This request was claimed before (a Slack retry or a replay): what it would do is not done."""

    quiet = True  # expected, not a failure: a background task stopped by it is not logged as one


class Guard:
    """One request's claim while it is on its way: `future` resolves with what the claim found (None:
    this request claimed it)."""

    __slots__ = ("_flush", "error", "future", "seen", "sent", "submitted")

    def __init__(self, future: asyncio.Future[Any], flush: Callable[[], None]):
        self.future = future
        self._flush = flush
        self.submitted = False  # the claim has been handed to the store's thread
        self.sent: asyncio.Future[None] = future.get_loop().create_future()  # set when it has been
        self.seen = False  # set on the store's thread by the claim, before any later call runs there
        self.error: BaseException | None = None  # likewise: the claim itself failed

    def flush(self) -> None:
        """On the event loop, before one of the request's store calls is handed over: the claim first."""
        if not self.submitted:
            self._flush()

    def handed_over(self) -> None:
        """The claim is on the store's thread (RequestClaims)."""
        self.submitted = True
        if not self.sent.done():
            self.sent.set_result(None)

    def check(self) -> None:
        """On the store's thread, before one of the request's calls runs (the claim ran before it)."""
        if self.seen:
            raise Replayed("this request was handled before")
        if self.error is not None:
            raise self.error

    async def fresh(self) -> bool:
        """Whether the claim was this request's (False: a replay); raises what the claim raised."""
        return await asyncio.shield(self.future) is None


_current: ContextVar[Guard | None] = ContextVar("request_guard", default=None)


def current() -> Guard | None:
    return _current.get()


def guarded(job: Callable[[], R]) -> Callable[[], R]:
    """`job` (a store call, about to be handed to the store's thread) as the current request may run it:
    unchanged outside any guard; under one, behind its claim and refused on the thread when that claim
    found the request seen before."""
    guard = _current.get()
    if guard is None:
        return job
    guard.flush()  # the claim reaches the store's thread before this call

    def run() -> R:
        guard.check()
        return job()

    return run


async def behind_claim() -> None:
    """Before an awaited store call: until the current request's claim has gone to the store's thread
    with the rest of its burst (one turn of the event loop), so the burst's claims still go together in
    one transaction instead of each pushed out alone by its own request's first call."""
    guard = _current.get()
    if guard is not None and not guard.submitted:
        await asyncio.shield(guard.sent)


def enter(guard: Guard) -> Token[Guard | None]:
    return _current.set(guard)


def leave(token: Token[Guard | None]) -> None:
    _current.reset(token)


async def fresh() -> bool:
    """Outside the store: whether what the current request would do may be done (True when it is not
    guarded: its claim was awaited before it was handled, or it has none)."""
    guard = _current.get()
    if guard is None:
        return True
    try:
        return await guard.fresh()
    except Exception:  # the claim failed: the request was answered so, and nothing of it is done
        return False
