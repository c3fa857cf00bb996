"""How much slower is the store on PostgreSQL than on SQLite? Both measured in the same run.

Run it by hand from the repository root (a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/store_backends.py [--deployments 200] [--url postgresql://...]

What it does: starts a throwaway PostgreSQL server (bot.adapters.store.pg_server; or uses --url) and a
SQLite file in a temporary folder; on each, through the sync store as the store's thread runs it, plays
`--deployments` deployments' store traffic the way a canary makes it: request_or_amend, the start
transition, six save_progress calls with an audit event and an outbox event each, two reads (`get`,
`lock_info`), an outbox read and delivery mark, and the succeed transition (13 calls). Prints the
server's start time, then per backend the median and p99 of one call and deployments per second, and
the ratio PostgreSQL / SQLite. PostgreSQL is reached over TCP on 127.0.0.1 (as a replica would, over a
network), SQLite on local disk in WAL mode.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bot.adapters.store.pg_server import PgServer
from bot.adapters.store.sqlite import Store
from bot.domain.events import Detail, Started, StepStarted, Succeeded


def play(store: Store, n: int) -> tuple[list[float], float]:
    """n deployments' store calls; each call's seconds and the whole run's."""
    calls: list[float] = []

    def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        calls.append(time.perf_counter() - t)
        return out

    began = time.perf_counter()
    for i in range(n):
        d = timed(store.request_or_amend, service=f"svc{i % 50}", env="staging", version=f"v{i}",
                  strategy="canary", kind="deploy", requested_by="U1", plan=[{"kind": "x"}] * 6)  # fmt: skip
        timed(store.transition, d.id, "start", "deploybot", events=[Started()])
        for step in range(6):
            timed(store.save_progress, d.id, step_index=step, context={"weight": step * 10},
                  event=("deploybot", "step_finished", {"step": step}), events=[StepStarted(step, "x")])  # fmt: skip
        timed(store.get, d.id)
        timed(store.lock_info, d.service, d.env)
        entries = timed(store.outbox_after, "notifier")
        timed(store.mark_delivered, "notifier", entries[-1].id)
        timed(store.transition, d.id, "succeed", "deploybot", events=[Succeeded(), Detail("done")])
    return calls, time.perf_counter() - began


def report(name: str, calls: list[float], wall: float, n: int) -> float:
    calls = sorted(calls)
    p50, p99 = statistics.median(calls) * 1000, calls[int(len(calls) * 0.99)] * 1000
    print(f"{name:10} call p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  {n / wall:7.1f} deployments/s")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--url", help="a PostgreSQL server of yours (default: a throwaway one)")
    args = parser.parse_args()
    server = None
    if args.url is None:
        server = PgServer().start()
        print(f"throwaway PostgreSQL started in {server.started_in:.2f} s (initdb + pg_ctl start)")
    try:
        with tempfile.TemporaryDirectory() as folder:
            walls = {}
            for name, url in (
                ("sqlite", str(Path(folder) / "bench.db")),
                ("postgres", args.url or server.url),
            ):  # type: ignore[union-attr]
                store = Store(url)
                play(store, 5)  # warm-up (connections, prepared statements, caches)
                calls, wall = play(store, args.deployments)
                walls[name] = report(name, calls, wall, args.deployments)
                store.close()
            print(f"postgres / sqlite wall time: {walls['postgres'] / walls['sqlite']:.2f}x")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
