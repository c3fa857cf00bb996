"""What the sandbox's flag traffic costs: the AWS world's tick with and without it, a flag traffic tick in
the steady state (304s) and while a change is re-evaluated, and the share of 304s.

Run it by hand from the repository root (it is a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/flag_traffic.py [--ticks 40] [--users 2000]

What it does:
  1. Starts the sandbox (moto, the local Slack and the real bot, `deploybot serve`, as a child process)
     and detaches the flag traffic from the AWS world's loop, so this script drives every flag tick
     itself (`FlagTraffic.tick()`) and times it: wall time in this process, and the CPU time of this
     process and of the bot process (from /proc) over the same span.
  2. The first answers: ticks until every simulated user of every environment has an answer (with every
     flag off, one user's context-free answer is everyone's).
  3. The steady state: `--ticks` ticks with nothing changed (every request should be a 304).
  4. A change: checkout-v2 at 25% in staging, written to the bot's database as another process would
     (the bot follows the store each second; its ETags for staging change), then ticks until a probe
     sees it and until every staging user has been asked again (a split: each user's own answer).
  5. The AWS world's own tick (`AwsWorld.tick()`: ECS emulation, ALB metrics to moto), `--ticks` times
     without the flag traffic and `--ticks` times with it attached (the tick then only starts a flag tick
     in the background: what the world's tick pays is the kick, not the flag tick).
Prints median and max per phase, requests per tick and the 304 share. Everything is on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.adapters.store.sqlite import Store  # noqa: E402
from bot.config.load import load_settings  # noqa: E402
from bot.domain.flags import at_percent  # noqa: E402
from bot.sandbox.run import Sandbox  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "config" / "deploybot.toml"


def cpu_of(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phase:
    def __init__(self, name: str, bot_pid: int):
        self.name, self.bot_pid = name, bot_pid
        self.ticks: list[float] = []
        self.requests = self.not_modified = 0

    async def run(self, tick, stats) -> None:
        before = (stats.requests, stats.not_modified)
        start = time.perf_counter()
        await tick()
        self.ticks.append((time.perf_counter() - start) * 1000)
        self.requests += stats.requests - before[0]
        self.not_modified += stats.not_modified - before[1]

    def line(self, cpu_here: float, cpu_bot: float) -> str:
        n = len(self.ticks)
        share = f"{self.not_modified / self.requests * 100:.0f}%" if self.requests else "-"
        return (
            f"{self.name:<28} {n:>5} ticks  median {statistics.median(self.ticks):7.1f} ms  "
            f"max {max(self.ticks):7.1f} ms  total {sum(self.ticks):7.0f} ms  "
            f"{self.requests / n:7.1f} req/tick  304s {share:>4}  "
            f"cpu here {cpu_here * 1000:6.0f} ms, bot {cpu_bot * 1000:6.0f} ms"
        )


async def measure(phase: Phase, step, stats, until) -> str:
    here, bot = time.process_time(), cpu_of(phase.bot_pid)
    while not until(len(phase.ticks)):
        await phase.run(step, stats)
    return phase.line(time.process_time() - here, cpu_of(phase.bot_pid) - bot)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    with tempfile.TemporaryDirectory() as tmp:
        sb = Sandbox(config=CONFIG, speed=60, workdir=tmp, flag_users=args.users)
        traffic, world = sb.flag_traffic, sb.world
        assert traffic is not None
        world.flags = None  # this script ticks the flag traffic itself, from the start
        async with sb:
            assert sb.bot is not None and sb.bot.proc is not None
            pid, stats = sb.bot.proc.pid, traffic.stats

            def waiting(env: str | None = None) -> int:
                return sum(len(e.waiting) for n, e in traffic.envs.items() if env in (None, n))

            async def tick() -> None:
                assert await traffic.tick(), "the bot did not answer"

            def steady(name: str) -> Phase:
                return Phase(name, pid)

            print(f"{args.users} simulated users per environment, {len(traffic.envs)} environments")
            first = Phase("first answers (all flags off)", pid)
            print(await measure(first, tick, stats, lambda n: n > 0 and not waiting()))
            print(await measure(steady("steady state"), tick, stats, lambda n: n >= args.ticks))

            settings = load_settings(CONFIG, env={})
            store = Store(sb.db)  # as another process sharing the database would; the bot follows each second
            flag, now = settings.flags["checkout-v2"], store.flag_state("staging", "checkout-v2")
            store.set_flag(
                "staging", "checkout-v2", at_percent(flag, now.state, 25), expected_revision=now.revision,
                actor="bench", action="flag_changed", details={},
            )  # fmt: skip
            store.close()
            seen = stats.changes_seen
            detect = Phase("until a probe sees the change", pid)
            print(await measure(detect, tick, stats, lambda n: stats.changes_seen > seen))
            changed = Phase("re-evaluating staging", pid)
            print(await measure(changed, tick, stats, lambda n: n > 0 and not waiting("staging")))
            print(await measure(steady("steady state again"), tick, stats, lambda n: n >= args.ticks))
            view = traffic.view("staging")["environments"]["staging"]["flags"]["checkout-v2"]["shares"]
            print(f"staging checkout-v2 shares after 25%: {view}")
            total = stats.requests
            print(
                f"all OFREP requests: {total}, 304: {stats.not_modified} ({stats.not_modified / total:.0%})"
            )

            for label, flags in (("no flag traffic", None), ("flag traffic attached", traffic)):
                world.flags = flags
                times = []
                for _ in range(args.ticks):
                    await world.clock.sleep(world.tick_seconds)
                    start = time.perf_counter()
                    await world.tick()
                    times.append((time.perf_counter() - start) * 1000)
                print(
                    f"AWS world tick, {label:<22} median {statistics.median(times):6.2f} ms  "
                    f"max {max(times):6.2f} ms"
                )
            world.flags = None
            kicks = []
            for _ in range(args.ticks):
                await asyncio.sleep(0.25)  # past min_wall_seconds: each kick starts a flag tick
                start = time.perf_counter()
                traffic.kick()
                kicks.append((time.perf_counter() - start) * 1e6)
            print(
                f"FlagTraffic.kick() (what the AWS tick pays) median {statistics.median(kicks):6.1f} us  "
                f"max {max(kicks):6.1f} us"
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
