"""What parsing a DescribeServices answer costs the bot: botocore's JSON parser with its default timestamp
parser (dateutil, local zone) versus the bot's (bot.adapters.aws.aws_timestamp), on the same bytes in the
same run.

Run it by hand from the repository root (a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/aws_timestamps.py [--services 1] [--events 100] [--rounds 2000]

An ECS service keeps its last 100 events, each with a time, and the bot reads DescribeServices at every
rollout poll, so each answer carries ~100 timestamps; CloudWatch and ELB answers carry few."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import botocore.session  # noqa: E402
from botocore.parsers import create_parser  # noqa: E402

from bot.adapters.aws import aws_timestamp  # noqa: E402


def answer(services: int, events: int) -> bytes:
    t = 1764700000.0
    return json.dumps(
        {
            "services": [
                {
                    "serviceName": f"web-{s}",
                    "serviceArn": f"arn:aws:ecs:us-east-1:123456789012:service/c/web-{s}",
                    "status": "ACTIVE",
                    "desiredCount": 4,
                    "runningCount": 4,
                    "createdAt": t,
                    "deployments": [
                        {"id": "ecs-svc/1", "status": "PRIMARY", "createdAt": t, "updatedAt": t + 5,
                         "rolloutState": "COMPLETED", "desiredCount": 4, "runningCount": 4}
                    ],
                    "events": [
                        {"id": f"e{i}", "createdAt": t - i, "message": f"(service web-{s}) has reached a steady state."}
                        for i in range(events)
                    ],
                }
                for s in range(services)
            ],
            "failures": [],
        }
    ).encode()  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2000)
    a = ap.parse_args()
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("DescribeServices").output_shape
    body = answer(a.services, a.events)
    response = {"body": body, "headers": {}, "status_code": 200}
    parsers = {"botocore": create_parser("json"), "bot": create_parser("json")}
    parsers["bot"]._timestamp_parser = aws_timestamp  # what set_parser_defaults gives the bot's clients
    same = [parsers[n].parse(response, shape)["services"] for n in parsers]
    assert same[0] == same[1], "the two parsers read different values"
    times: dict[str, list[float]] = {n: [] for n in parsers}
    for _ in range(a.rounds):
        for name, parser in parsers.items():  # side by side, alternating
            start = time.perf_counter()
            parser.parse(response, shape)
            times[name].append(time.perf_counter() - start)
    base, bot = statistics.median(times["botocore"]), statistics.median(times["bot"])
    print(
        f"DescribeServices: {a.services} service(s), {a.events} events each, {len(body):,} bytes, {a.rounds} rounds"
    )
    print(f"  botocore's timestamp parser  median {base * 1e6:8.1f} us")
    print(f"  the bot's (aws_timestamp)    median {bot * 1e6:8.1f} us   {bot / base:.2f}x")
    print(
        json.dumps(
            {
                "botocore_us": round(base * 1e6, 1),
                "bot_us": round(bot * 1e6, 1),
                "ratio": round(bot / base, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
