"""The canary benchmark's AWS world in its own process, as in the sandbox (bot.sandbox.run keeps moto and
its emulator in the sandbox process and runs the bot as a child).

In one process with moto's threaded server, every thread hop of the measured side (the bot's store and
boto3 calls, its event loop waking up) waited for moto's request threads and the emulator to let go of
the GIL: contention the sandbox does not have, and which the bot, with more hops than a one-thread
script, paid more of. So the world (moto's ThreadedMotoServer, the demo world, its emulator loop) runs in
a child process; the benchmark process holds only the two measured sides and asks the child over a pipe
for a fresh world and for the forced emulator ticks. Both processes read the same ScaledClock (speed,
origin and start passed by spec), so they agree on "now"."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from bot.clock import ScaledClock

TRAFFIC_RPM = 60000.0  # one 5 s tick at 5%: 250 canary requests (> min_requests)


class RemoteWorld:
    """The world in a child process: endpoint, clock, fresh(), tick(), ticks, stop()."""

    def __init__(self, speed: float, service: str, env: str):
        self.clock = ScaledClock(speed)
        context = multiprocessing.get_context("spawn")  # a clean child: no threads, no moto of ours
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_child, args=(child, self.clock.spec(), service, env), name="canary-world", daemon=True
        )
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        if not self._conn.poll(120):
            raise RuntimeError("the world's process did not start within 120 s")
        self.endpoint, self.tick_seconds = self._conn.recv()

    def _ask(self, *request: Any) -> Any:
        with self._lock:  # the forced ticks come from boto3's worker threads
            self._conn.send(request)
            if not self._conn.poll(60):
                raise RuntimeError(f"the world's process did not answer {request[0]!r} within 60 s")
            ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"the world's process failed {request[0]!r}: {value}")
        return value

    @property
    def ticks(self) -> int:
        """Emulator ticks so far (the world's own loop and the forced ones)."""
        return int(self._ask("ticks"))

    async def fresh(self) -> None:
        """Reset and provision the world, its emulator loop running again."""
        await asyncio.to_thread(self._ask, "fresh")

    def tick(self) -> None:
        """One forced emulator tick (blocking), then wait until the clock has passed the next whole
        second, so a measurement's EndTime (floor(now)) lies after the tick's datapoints."""
        self._ask("tick")
        due = math.floor(self.clock.now()) + 1
        while self.clock.now() < due:
            time.sleep(0.2 / self.clock.speed)

    async def stop(self) -> None:
        try:
            await asyncio.to_thread(self._ask, "stop")
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()


# ------------------------------------------------------------------------------------------ the child


def _child(conn: Connection, spec: str, service: str, env: str) -> None:
    asyncio.run(_serve(conn, spec, service, env))


async def _fresh(world: Any, service: str, env: str) -> None:
    """A new world: provisioned, no drain at the scale-down, the service's traffic on."""
    from bot.sandbox.aws import SLOTS

    world.reset()
    world.provision()
    elb = world.client("elbv2")
    for slot in SLOTS:  # no 30 s drain at the scale-down
        elb.modify_target_group_attributes(
            TargetGroupArn=world.target_group_arn(service, env, slot),
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}],
        )
    world.inject(service, requests_per_minute=TRAFFIC_RPM)
    await world.tick()  # the stable group has datapoints before anything starts


async def _serve(conn: Connection, spec: str, service: str, env: str) -> None:
    from bot.sandbox.aws import AwsWorld

    clock = ScaledClock.from_spec(spec)
    world = AwsWorld(clock)  # type: ignore[arg-type]
    endpoint = world.start()
    ticks = 0
    tick = world.tick

    async def counted() -> None:
        nonlocal ticks
        ticks += 1
        await tick()

    world.tick = counted  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def readable() -> None:
        while conn.poll():
            requests.put_nowait(conn.recv())

    loop.add_reader(conn.fileno(), readable)
    conn.send((endpoint, world.tick_seconds))
    running: asyncio.Task | None = None

    async def pause() -> None:
        nonlocal running
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            running = None

    while True:
        what, *_ = await requests.get()
        try:
            value: Any = None
            if what == "fresh":
                await pause()
                await _fresh(world, service, env)
                running = loop.create_task(world.run())
            elif what == "tick":
                await world.tick()
            elif what == "ticks":
                value = ticks
            elif what == "stop":
                await pause()
                world.stop()
                conn.send((True, None))
                return
            conn.send((True, value))
        except Exception as exc:  # the parent prints it and stops
            conn.send((False, f"{type(exc).__name__}: {exc}"))
