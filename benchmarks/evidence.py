"""What does reading a production request's evidence cost? The bot's clients (bot/adapters/evidence)
read what a request of web v5 reads — the commits of v4 and v5 and their comparison (what changes),
v5's commit again, its check runs and its combined status (the CI verdict) — against the sandbox's local
GitHub (bot.sandbox.ci) on loopback, compared in the same run with the same GETs made by a bare aiohttp
loop over one shared session (the floor: the clients keep one session each) and, for scale, with a new
session per GET.

Run it by hand from the repository root (a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/evidence.py [--rounds 300]

Prints the GETs per request, p50/p99 per request for the clients and both baselines, and the ratio to the
floor (target: <= 1.3x). Exit code 1 when the target is missed. Loopback only."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.adapters.evidence.github import GitHub  # noqa: E402
from bot.app.evidence import EvidenceReader  # noqa: E402
from bot.config.evidence import Provider  # noqa: E402
from bot.config.load import load_settings  # noqa: E402
from bot.sandbox.ci import LocalCi  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "config" / "deploybot.toml"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


async def main(rounds: int) -> int:
    settings = load_settings(CONFIG, env={})
    ci = LocalCi(settings)
    hits = 0

    @web.middleware
    async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
        nonlocal hits
        hits += 1
        return await handler(request)

    app = web.Application(middlewares=[count])
    ci.mount(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/github"  # type: ignore[union-attr]
    github = GitHub(Provider("github", base, "GITHUB_TOKEN"), ci.tokens["github"])
    reader = EvidenceReader({"github": github}, {"github": github})
    target = settings.target("web", "production")
    headers = {"Authorization": f"Bearer {ci.tokens['github']}"}
    v4, v5 = ci.repos["acme/web"].sha("v4"), ci.repos["acme/web"].sha("v5")
    paths = [
        "/repos/acme/web/git/ref/tags/v4",
        "/repos/acme/web/git/ref/tags/v5",
        f"/repos/acme/web/compare/{v4}...{v5}",
        "/repos/acme/web/git/ref/tags/v5",
        f"/repos/acme/web/commits/{v5}/check-runs?per_page=100",
        f"/repos/acme/web/commits/{v5}/status",
    ]

    async def clients() -> None:
        assert (await reader.changes(target, "v4", "v5") or {}).get("total") == 2
        assert (await reader.ci(target, "v5")).state == "success"

    async def bare_new_sessions() -> None:
        for p in paths:
            async with aiohttp.ClientSession(headers=headers) as s, s.get(base + p) as r:
                await r.json()

    shared = aiohttp.ClientSession(headers=headers)

    async def bare_shared() -> None:
        for p in paths:
            async with shared.get(base + p) as r:
                await r.json()

    hits = 0
    await clients()
    per_request = hits
    times: dict[str, list[float]] = {"clients": [], "bare, a session per GET": [], "bare, one session": []}
    runs = {
        "clients": clients,
        "bare, a session per GET": bare_new_sessions,
        "bare, one session": bare_shared,
    }
    for n in range(rounds):
        order = list(runs.items()) if n % 2 == 0 else list(reversed(runs.items()))
        for name, run in order:
            t0 = time.perf_counter()
            await run()
            times[name].append(time.perf_counter() - t0)
    await shared.close()
    await reader.close()
    await runner.cleanup()
    print(f"GETs per request: {per_request} (the bare loops make {len(paths)})")
    for name, xs in times.items():
        print(
            f"{name:26s} p50 {pct(xs, 0.5):6.2f} ms  p99 {pct(xs, 0.99):6.2f} ms  mean {statistics.mean(xs) * 1000:6.2f} ms"
        )
    floor = statistics.median(times["clients"]) / statistics.median(times["bare, one session"])
    fresh = statistics.median(times["clients"]) / statistics.median(times["bare, a session per GET"])
    ok = floor <= 1.3 and per_request == len(paths)
    print(f"clients / bare (one session), median: {floor:.2f}x (target <= 1.3x) {'OK' if ok else 'MISS'}")
    print(f"clients / bare (a session per GET), median: {fresh:.2f}x (no target)")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    sys.exit(asyncio.run(main(parser.parse_args().rounds)))
