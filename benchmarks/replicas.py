"""Issue 15's kill game in full, run by hand: two replicas on a throwaway PostgreSQL server (or on one
SQLite file in WAL mode: `sqlite`), 20 canaries on
production web (every second one bad), each SIGKILLed on the replica running it at a random instant.
Prints the takeover delays (clock seconds from the kill to the other replica's takeover on the record)
next to the lease time, and the outcomes; every check of tests/test_replica_scenarios.kill_game holds.

    .venv/bin/python -m benchmarks.replicas [KILLS] [postgres|sqlite]"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


async def main(kills: int, store: str) -> None:
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ[key] = value  # boto3 in this process talks to moto only
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    from bot.sandbox.client import SandboxClient
    from tests.test_replica_scenarios import LEASE, kill_game, replicas_sandbox

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deploybot-replicas-") as tmp:
        async with replicas_sandbox(Path(tmp), store=store) as sb, SandboxClient(sb.slack_url) as client:
            figures = await kill_game(sb, client, kills=kills)
    delays = figures["takeover_clock_s"]
    print(
        f"store: {store}, kills: {kills}, deployments: {len(figures['ids'])}, rolled back: {len(figures['rolled'])}"
    )
    if delays:
        print(
            f"takeover after a kill (clock s): min {min(delays):.1f}, median {statistics.median(delays):.1f}, "
            f"max {max(delays):.1f}; lease {LEASE:.0f}, bound lease + upkeep period + one step "
            f"{LEASE + LEASE / 3 + 60:.0f}"
        )
    print(
        f"takeovers on the record: {figures['takeovers']} (beyond the kills: a replica stalled past its lease)"
    )
    print(f"wall time {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 20, sys.argv[2] if len(sys.argv) > 2 else "postgres")
    )
