"""AWS calls made in a worker process (`[aws] processes`), against moto's server: the same answers and the
same errors as in the bot's own threads, a worker that dies fails only the call it had and is replaced,
and workers do not outlive a bot that is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from bot.adapters.aws import Aws
from bot.app.ports import PlatformError
from bot.config.model import AwsSettings
from bot.sandbox.aws import AwsWorld
from tests import test_platform_ecs

pytestmark = pytest.mark.xdist_group("aws-processes")
server, world = test_platform_ecs.server, test_platform_ecs.world  # moto's server; reset and provisioned


@pytest.fixture
def pair(world):
    """The same settings in threads and in one worker process."""
    threads = Aws(AwsSettings(endpoint_url=world.endpoint, max_attempts=1))
    workers = Aws(AwsSettings(endpoint_url=world.endpoint, max_attempts=1, processes=1))
    yield threads, workers
    workers.close()


def worker_pids(aws: Aws) -> set[int]:
    assert aws._pool is not None
    return set(aws._pool.pids())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours still answers kill(0): it has exited
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


async def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return not alive(pid)


async def test_a_worker_answers_what_a_thread_answers(pair, world):
    threads, workers = pair
    here = await threads.call("ecs", "list_services", cluster="staging")
    there = await workers.call("ecs", "list_services", cluster="staging")
    assert there["serviceArns"] == here["serviceArns"] and here["serviceArns"]
    (pid,) = worker_pids(workers)
    assert pid != os.getpid() and alive(pid)
    assert not workers._clients  # no client was made in this process


async def test_aws_errors_from_a_worker_are_platform_errors_with_aws_code(pair):
    _, workers = pair
    with pytest.raises(PlatformError) as missing:
        await workers.call("elbv2", "describe_load_balancers", Names=["no-such-lb"])
    assert missing.value.code == "LoadBalancerNotFound"
    assert "ELBV2 DescribeLoadBalancers failed: LoadBalancerNotFound" in str(missing.value)
    with pytest.raises(PlatformError) as invalid:  # botocore's own error, before any request
        await workers.call("ecs", "describe_services")
    assert "services" in str(invalid.value) and invalid.value.code is None


async def held(world: AwsWorld) -> bool:
    """Wait until the held ListClusters has reached moto (the fault rule counts it)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if world.faults.rules()[0]["failed"] >= 1:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_worker_that_dies_mid_call_fails_that_call_and_is_replaced(pair, world):
    _, workers = pair
    await workers.call("ecs", "list_clusters")
    (pid,) = worker_pids(workers)
    world.faults.timeout_seconds = 20
    world.faults.add({"service": "ecs", "operations": ["ListClusters"], "error": "timeout"})
    call = asyncio.ensure_future(workers.call("ecs", "list_clusters"))
    assert await held(world)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(PlatformError) as died:
        async with asyncio.timeout(10):  # at once, not when the held call would have timed out
            await call
    assert "worker process died" in str(died.value)
    world.faults.clear()
    again = await workers.call("ecs", "list_clusters")
    assert again["clusterArns"]
    assert worker_pids(workers) and pid not in worker_pids(workers)


async def test_a_held_call_does_not_hold_up_the_others_in_its_worker_nor_a_cancelled_one_the_next(
    pair, world
):
    _, workers = pair
    world.faults.timeout_seconds = 20
    world.faults.add({"service": "ecs", "operations": ["ListClusters"], "error": "timeout"})
    slow = asyncio.ensure_future(workers.call("ecs", "list_clusters"))
    try:
        assert await held(world)
        async with asyncio.timeout(10):
            out = await workers.call("ecs", "list_services", cluster="staging")
        assert out["serviceArns"] and not slow.done() and len(worker_pids(workers)) == 1
    finally:
        world.faults.clear()  # lets the held call go
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
    # the cancelled call's answer comes back to nobody; the worker's answers still get through
    async with asyncio.timeout(15):
        for _ in range(3):
            assert (await workers.call("ecs", "list_clusters"))["clusterArns"]


async def test_close_stops_the_workers(pair):
    _, workers = pair
    await workers.call("ecs", "list_clusters")
    (pid,) = worker_pids(workers)
    workers.close()
    assert await gone(pid)


BOT = """
import os, sys, time
from bot.adapters.aws import Aws
from bot.config.model import AwsSettings
aws = Aws(AwsSettings(endpoint_url=sys.argv[1], processes=1))
aws.start()
(pid,) = aws._pool.pids()
print(pid, flush=True)
time.sleep(600)
"""


async def test_workers_do_not_outlive_a_killed_bot(world, aws_env):
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BOT, world.endpoint, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert bot.stdout is not None
        async with asyncio.timeout(60):
            worker = int(await bot.stdout.readline())
        assert alive(worker)
        bot.kill()
        await bot.wait()
        assert await gone(worker)
    finally:
        if bot.returncode is None:
            bot.kill()
            await bot.wait()
