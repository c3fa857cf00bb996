"""Worker processes for the AWS adapter's blocking calls (bot.adapters.aws says why they are out of the
bot's process). Each worker serves many calls at once on threads of its own, as the bot's threads did, so
one slow call does not hold up the others; calls and answers go over one pipe per worker.

A worker is a fork of the bot when the bot has one thread (its first step), a fork of a forkserver after
that. It exits when its pipe closes (the bot stopped or was killed: the kernel closes the bot's end) and,
in case the pipe's other end leaked into another process, when its parent changes. A worker that dies
fails the calls it had (WorkerDied) and the next call starts a new one."""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from typing import Any

THREADS = 8  # calls in flight per worker (the bot's own threads allowed 6 on 2 CPUs)

Handler = Callable[..., Any]  # made in the worker by `init(*init_args)`; called with each call's arguments


class WorkerDied(Exception):
    """The worker process ended with this call in it: whether the call was made is unknown."""


class Workers:
    def __init__(self, count: int, init: Callable[..., Handler], init_args: tuple[Any, ...]):
        self.count, self.init, self.init_args = count, init, init_args
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._turn = itertools.count()

    def submit(self, *call: Any) -> Future[Any]:
        """Hand the call to a live worker (started if need be); its future has the handler's answer."""
        with self._lock:
            self._workers = [w for w in self._workers if not w.dead]
            while len(self._workers) < self.count:
                self._workers.append(_Worker(self.init, self.init_args))
            worker = self._workers[next(self._turn) % len(self._workers)]
        return worker.submit(call)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers if not w.dead and w.process.pid is not None]

    def close(self, within: float = 35.0) -> None:
        """Let the calls in flight finish (up to `within` seconds), then stop the workers."""
        with self._lock:
            workers, self._workers = self._workers, []
        for w in workers:
            w.close(within)


class _Worker:
    def __init__(self, init: Callable[..., Handler], init_args: tuple[Any, ...]):
        if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            context: Any = multiprocessing.get_context("fork")  # milliseconds, everything imported
        else:  # threads are running: a clean process that has imported boto3 once
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["bot.adapters.aws"])
        ours, theirs = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(theirs, ours, init, init_args), name="deploybot-aws", daemon=True
        )
        self.process.start()
        theirs.close()
        self.conn: multiprocessing.connection.Connection = ours
        self.dead = False
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="aws-worker-answers", daemon=True).start()

    def submit(self, call: tuple[Any, ...]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if not self.dead:
                call_id = next(self._ids)
                self._pending[call_id] = future
                try:
                    self.conn.send((call_id, call))
                    return future
                except (OSError, ValueError):
                    del self._pending[call_id]
                    self.dead = True
        future.set_exception(WorkerDied())
        return future

    def _read(self) -> None:
        try:
            while True:
                call_id, (kind, value) = self.conn.recv()
                with self._lock:
                    future = self._pending.pop(call_id, None)
                if future is not None:
                    _settle(
                        future, value if kind == "ok" else None, None if kind == "ok" else RuntimeError(value)
                    )
        except (EOFError, OSError):
            pass
        with self._lock:
            self.dead = True
            pending, self._pending = self._pending, {}
        for future in pending.values():
            _settle(future, None, WorkerDied())

    def close(self, within: float) -> None:
        with self._lock:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
        self.process.join(within)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


def _settle(future: Future[Any], value: Any, error: BaseException | None) -> None:
    """Its answer, unless its caller has given up on it (cancelled: the answer is dropped)."""
    try:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass


def _serve(
    conn: multiprocessing.connection.Connection,
    bots_end: multiprocessing.connection.Connection,
    init: Callable[..., Handler],
    init_args: tuple[Any, ...],
) -> None:
    """In the worker: run each call on a thread, send its answer back; stop when told or orphaned."""
    bots_end.close()  # a fork's copy of the bot's end: closed, so the bot's death closes the pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the bot, which then stops its workers
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="orphaned", daemon=True).start()
    handler = init(*init_args)
    send = threading.Lock()

    def run(call_id: int, call: tuple[Any, ...]) -> None:
        try:
            answer: tuple[str, Any] = ("ok", handler(*call))
        except BaseException as exc:  # the handler's own failures are its answers; this is a bug
            answer = ("raised", f"{type(exc).__name__}: {exc}")
        try:
            with send:
                conn.send((call_id, answer))
        except Exception as exc:  # an answer that cannot be pickled
            with send:
                conn.send((call_id, ("raised", f"its answer could not be sent back: {exc}")))

    pool = ThreadPoolExecutor(THREADS, thread_name_prefix="aws-call")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the bot is gone: nobody waits for the answers
            pool.shutdown(wait=False, cancel_futures=True)
            os._exit(0)
        if message is None:
            break
        pool.submit(run, *message)
    pool.shutdown(wait=True)
    conn.close()


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)
