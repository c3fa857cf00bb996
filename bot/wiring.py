"""The one composition root: it builds the store, the cloud, the engine and the Slack app from the config
and runs them. The only module of bot/ that knows handlers/ (tests/test_architecture.py keeps it so)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.aws import Aws
from bot.adapters.backups.rds import RdsBackups
from bot.adapters.evidence.build import build_evidence, tokens
from bot.adapters.health import Readiness, mount_health, serve_health
from bot.adapters.http import AiohttpClient
from bot.adapters.metrics.batch import MetricDataBatcher
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics
from bot.adapters.ofrep import mount_ofrep
from bot.adapters.pagerduty import PagerDuty
from bot.adapters.platforms.ecs import EcsPlatform
from bot.adapters.scheduler import Scheduler
from bot.adapters.store import urls as store_urls
from bot.adapters.store.aftercare import AsyncAftercare
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.adapters.telemetry import Telemetry
from bot.app.engine import Engine
from bot.app.leases import DEFAULT_TTL, Leases
from bot.app.replica import Replica
from bot.clock import Clock, ScaledClock
from bot.config.load import load_settings
from bot.config.model import Settings
from bot.logs import setup_logging
from bot.usage import UsageError, db_default
from handlers.app import build_app, web_app
from handlers.charts import ChartPoster
from handlers.listeners.events import HomeTab
from handlers.notifier import SlackNotifier, add_retry_handlers
from handlers.outbox_lease import OutboxLease
from handlers.pipeline_notifier import PipelineNotifier
from handlers.slack_telemetry import count_slack_calls

log = logging.getLogger("deploybot")


def _exit_with_parent() -> None:
    """A sandbox's bot dies with the sandbox: when the process that started it names itself in
    DEPLOYBOT_PARENT_PID, the kernel sends SIGTERM here if that parent dies, even by SIGKILL (Linux)."""
    parent = os.environ.get("DEPLOYBOT_PARENT_PID", "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _started_aws(settings: Settings, telemetry: Telemetry) -> Aws:
    """The AWS adapter with its worker processes started: forks of this process while it has one thread."""
    aws = Aws(settings.aws, observer=telemetry, freeze=True)
    try:
        aws.start()
    except Exception as exc:  # cannot fork, or the worker failed to start: said in one line
        raise UsageError(
            f"deploybot serve: the AWS worker process did not start ({exc!r}); "
            "[aws] processes = 0 makes the calls in this process"
        ) from None
    return aws


async def serve(args: argparse.Namespace) -> int:
    """Build every piece from the config and run until SIGTERM/SIGINT: the store, the cloud, the engine,
    the Slack app and its notifier, behind HTTP or Socket Mode."""

    _exit_with_parent()
    # The store and boto3 each run on a thread of their own; under a burst of requests the event loop holds
    # the GIL and a thread waits out the whole switch interval (5 ms) at each hop. 1 ms keeps hops short.
    sys.setswitchinterval(0.001)
    settings = load_settings(args.config)
    paging = settings.alerts.pagerduty
    pagerduty_key = os.environ.get(paging.routing_key_env, "") if paging.enabled else ""
    db_path = args.db or db_default()
    db_secrets = store_urls.secrets(db_path)  # a URL's password is never logged
    setup_logging(
        [*settings.secrets.values(), pagerduty_key, *db_secrets, *tokens(settings, os.environ)],
        os.environ.get("DEPLOYBOT_LOG_LEVEL", "INFO"),
        getattr(args, "log_format", "text"),
    )
    if paging.enabled and not pagerduty_key:
        raise UsageError(
            f"deploybot serve: [alerts.pagerduty] is enabled: set {paging.routing_key_env} in the environment"
        )
    _require_secrets(settings, args.socket_mode)
    clock = ScaledClock.from_spec(os.environ.get("DEPLOYBOT_CLOCK", "1"))
    telemetry = Telemetry(clock.now)  # /metrics: fed by the store's writes, AWS and Slack calls
    aws = _started_aws(settings, telemetry)  # before the store's thread (or any other) starts
    try:
        store = telemetry.observe_store(AsyncStore(Store(db_path, clock)))
    except ConnectionError as exc:  # PostgreSQL unreachable: said in one line, the password redacted
        raise UsageError(f"deploybot serve: {exc}") from None
    # the reads of one analysis tick arriving within 50 ms (half a clock second on a fast sandbox clock)
    # share GetMetricData calls: a deployment's task running a little late still joins its tick
    window = min(0.05, clock.real_seconds(0.5))
    batcher = MetricDataBatcher(aws, window_seconds=window, observer=telemetry)
    engine = Engine(
        settings,
        store,
        EcsPlatform(aws),
        CloudWatchMetrics(aws, batcher),
        clock,
        timer=Scheduler(clock, misfire_grace_seconds=300.0),
        http=AiohttpClient(),
        backups=RdsBackups(aws),
        aftercare=AsyncAftercare(store),
        evidence=(evidence := build_evidence(settings, aws, os.environ)),
    )
    base_url = os.environ.get("SLACK_API_URL", "https://slack.com/api/")
    client = add_retry_handlers(AsyncWebClient(token=settings.secrets.bot_token, base_url=base_url))
    count_slack_calls(client, telemetry)
    pagerduty = (
        PagerDuty(pagerduty_key, paging.url, timeout_seconds=paging.timeout_seconds)
        if paging.enabled
        else None
    )
    notifier = SlackNotifier(client, store, settings.alerts, clock=clock, pagerduty=pagerduty)
    pipeline_messages = PipelineNotifier(notifier, store, clock)  # each pipeline's one message
    engine.pipelines.on_watch(pipeline_messages.watch)
    home = HomeTab(client, store, clock, live=notifier.live)
    notifier.on_change = home.changed
    notifier.charts = ChartPoster(client, store, notifier.outbox, on_posted=home.changed)
    # the notifier reads the store's outbox (it subscribed to the store's nudge): nothing to wire here
    app = build_app(engine, client, settings.secrets.signing_secret, notifier, home)
    replica = _replica(args, store, clock, engine, telemetry)  # one of several bots on this store, or None
    outbox = OutboxLease(notifier, pipeline_messages, replica.leases, store) if replica else None

    await engine.flag_book.load()  # before anything is served: no evaluation answers from an empty book
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    runner = None
    socket_handler = None
    readiness = Readiness()
    watch_loop = loop.create_task(telemetry.watch_loop(), name="loop-lag")
    if args.socket_mode:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        if settings.secrets.ofrep_keys:  # Socket Mode serves no Slack HTTP: no OFREP
            log.warning(
                "socket mode serves no HTTP: flags are not served over OFREP here (run `deploybot serve` in HTTP mode for applications)"
            )
        info: dict[str, Any] = {"socket_mode": True, "db": db_path}
        health_port = getattr(args, "health_port", None)
        if health_port is not None:  # /healthz, /readyz, /metrics for the orchestrator
            runner, bound = await serve_health(args.host, health_port, store, telemetry, readiness)
            host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
            info["health"] = f"http://{host}:{bound}"
        socket_handler = AsyncSocketModeHandler(app, settings.secrets.app_token)
        await socket_handler.connect_async()
        _ready({**info, **_named(replica)}, clock)
    else:
        http_app = web_app(app, store, settings.secrets.signing_secret, path="/slack/events")

        mount_health(http_app, store, telemetry, readiness)  # /healthz, /readyz, /metrics
        mount_ofrep(http_app, engine.flag_book.snapshot, settings.secrets.ofrep_keys)
        runner = web.AppRunner(http_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]  # the real port when --port 0
        host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        _ready({"listening": f"http://{host}:{port}", "db": db_path, **_named(replica)}, clock)
    log.info(
        "deploybot serving (%s) with config %s, database %s",
        "socket mode" if args.socket_mode else "HTTP",
        settings.path,
        db_path,
    )
    flags_follow = loop.create_task(_follow_flags(engine, stop), name="flags-follow")
    if outbox is None:
        await notifier.start()  # alert timers rebuilt from the store before anything else is said
        await pipeline_messages.start()
    upkeep = _upkeep(replica, outbox, stop)
    engine.start_scheduler()
    await engine.resume_in_flight()
    readiness.set(True, "serving")
    # Everything built so far lives as long as the process: out of the collector's generations, so a full
    # collection walks only what came since (it took 0.1-0.5 s of the loop with ~100k start-up objects).
    gc.freeze()
    await stop.wait()
    readiness.set(False, "shutting down")
    await asyncio.gather(flags_follow, return_exceptions=True)
    await _stop_upkeep(replica, upkeep)
    watch_loop.cancel()
    log.info("shutting down: in-flight deployments stay recorded and resume at the next start")
    if runner is not None:
        await runner.cleanup()
    if socket_handler is not None:
        await socket_handler.close_async()
    await engine.shutdown()
    await evidence.close()
    await asyncio.to_thread(aws.close)
    await pipeline_messages.drain()
    await notifier.drain(within=15.0 if replica is None else 4.0)  # a replica exits within 10 s
    if replica is not None:
        await replica.leases.release_all()
    await home.close()
    if pagerduty is not None:
        await pagerduty.close()
    store.close()
    return 0


async def _follow_flags(engine: Engine, stop: asyncio.Event, every: float = 1.0) -> None:
    """Another process sharing the store (a replica, `deploybot` run by hand) may change a flag: the book
    reads the store's flags revision each second and loads again when it moved (this process's own
    changes are in the book at once)."""
    while not stop.is_set():
        try:
            await engine.flag_book.refresh()
        except Exception:
            log.exception("reading the flags' states failed; trying again")
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


def report(args: argparse.Namespace) -> int:
    """`deploybot report`: the store read, the figures computed and worded (handlers/report_cli.py)."""
    from handlers.report_cli import run

    return run(args)


def _replica(
    args: argparse.Namespace, store: AsyncStore, clock: Clock, engine: Engine, telemetry: Telemetry
) -> Replica | None:
    """`--replica NAME`: this bot shares its store with others; its runs and the outbox are leased."""
    name = getattr(args, "replica", None)
    if not name:
        return None
    if name == "auto":
        name = f"{socket.gethostname()}:{os.getpid()}"
    ttl = float(os.environ.get("DEPLOYBOT_LEASE_SECONDS", DEFAULT_TTL))
    leases = Leases(store, clock, name, ttl)
    telemetry.leases_held = lambda: len(leases.tokens)  # runs, the outbox, timers this replica holds
    return Replica(store, clock, leases, engine.runner, engine.scheduling)


def _upkeep(replica: Replica | None, outbox: OutboxLease | None, stop: asyncio.Event) -> list[asyncio.Task]:
    """A replica's leases renewed and taken over, and the outbox delivered while it holds that lease."""
    if replica is None or outbox is None:
        return []
    loop = asyncio.get_running_loop()
    return [loop.create_task(outbox.run(stop)), loop.create_task(replica.run(stop))]


async def _stop_upkeep(replica: Replica | None, upkeep: list[asyncio.Task]) -> None:
    """SIGTERM: take no more runs (the leases are handed back as the runs stop)."""
    if replica is not None:
        replica.leases.closing = True
    for task in upkeep:
        task.cancel()
    await asyncio.gather(*upkeep, return_exceptions=True)


def _named(replica: Replica | None) -> dict[str, Any]:
    return {} if replica is None else {"replica": replica.leases.owner}


def _require_secrets(settings: Settings, socket_mode: bool) -> None:
    missing = [
        name
        for name, value in (
            ("SLACK_BOT_TOKEN", settings.secrets.bot_token),
            ("SLACK_SIGNING_SECRET", settings.secrets.signing_secret),
            ("SLACK_APP_TOKEN", settings.secrets.app_token if socket_mode else "x"),
        )
        if not value
    ]
    if missing:
        raise UsageError(
            f"deploybot serve: set {', '.join(missing)} in the environment "
            f"(see README: connecting a real Slack workspace)"
        )


def _ready(info: dict[str, Any], clock: Clock | None = None) -> None:
    """The one line a parent process waits for. A clock held at its start (the sandbox pins it so the
    boot eats no virtual time) begins now, and the line tells the parent from which wall instant."""
    if isinstance(clock, ScaledClock):
        if clock.held:
            clock.begin()
        info = {**info, "clock": clock.spec()}
    print(json.dumps({"ready": True, **info}), flush=True)
