"""The sandbox: moto's server with a demo world and its emulators, a local Slack, and the real bot
(`deploybot serve`) as a child process pointed at both. Used by `deploybot sandbox` and by the tests.
On Linux each start forks the bot from a pre-imported one (bot/sandbox/zygote.py, zygote_main.py; DEPLOYBOT_SANDBOX_FORK=0
starts `python -m bot serve` afresh instead): a restart after a kill costs a fork, not two seconds of imports.

Control API (on the local Slack's address), besides the local Slack's own /_sandbox routes:
  POST /_sandbox/inject {"service","version","error_rate","latency_ms","unhealthy","requests_per_minute"}
  POST /_sandbox/inject {"flag": KEY, "variant": V, "error_rate": 0..1, "latency_ms": MS, "env": ENV
       (default: every environment), "clear": true (without a variant: all of the flag's)}  makes a flag's
       variant misbehave in the metrics the flag traffic publishes (bot.sandbox.flag_traffic)
  GET /_sandbox/flags[?env=ENV]  per environment each flag's share of the simulated users per variant,
       the active flag injections, the flag traffic's counts (requests, 304s, ...)
  POST /_sandbox/bot {"action": "kill" | "start" | "stop"}      GET /_sandbox/aws  (a snapshot of the world)
  With --replicas N: {"action": ... | "pause" | "resume", "replica": I} (bot.sandbox.replicas)
  POST /_sandbox/faults {"service": "ecs"|"elbv2"|"cloudwatch"|"*", "operations": ["ModifyRule", ...],
       "rate": 0..1 (default 1), "error": "500"|"503"|"throttle"|"timeout" (default 500), "seconds": S
       (sandbox clock; default until cleared), "latency_ms": L (wall), "seed": N}  adds a fault rule on the
       bot's AWS calls (bot.sandbox.faults); the answer lists the active rules
  GET /_sandbox/faults  (the active rules, with the attempts each failed and passed)
  DELETE /_sandbox/faults  (clears them all)
  With Sandbox(pagerduty=True), a local PagerDuty (bot.sandbox.pagerduty) the bot pages:
  POST /_sandbox/pagerduty {"fail": "500"|"503"|"429"|"400"|"timeout"|null, "seconds": S, "times": N}
  GET /_sandbox/pagerduty  (the events it accepted, the ones it rejected, the failures it served)
  POST /_sandbox/ci {"provider","repo","commit"|"version","check","state"}  a CI result (bot.sandbox.ci,
       which serves the local GitHub, GitLab, Jenkins and CircleCI);  POST /_sandbox/push {"service",
       "version"}  a new version: commits, its tag and its image in ECR
A bad request gets 400 and {"ok": false, "error": "..."} saying what is wrong."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.adapters.store import urls as store_urls
from bot.adapters.store.pg_server import PgServer, PgServerError
from bot.clock import ScaledClock
from bot.config.load import load_settings
from bot.config.tables import ConfigError
from bot.sandbox.aws import BOT_ACCESS_KEY, AwsWorld
from bot.sandbox.ci import LocalCi
from bot.sandbox.faults import TIMEOUT_MARGIN
from bot.sandbox.flag_traffic import EnvKey, FlagTraffic
from bot.sandbox.pagerduty import LocalPagerDuty, write_config
from bot.sandbox.replicas import Replicas
from bot.sandbox.slack import LocalSlack
from bot.sandbox.tasks import appdb_view
from bot.sandbox.zygote import ForkedBot, Zygote, available
from bot.usage import UsageError

BOT_START_TIMEOUT = 60.0


class BotProcess:
    """`deploybot serve` as a child process; its log goes to a file, its ready line tells its URL."""

    def __init__(self, env: dict[str, str], args: list[str], log_path: Path, zygote: Zygote | None = None):
        """`zygote`: fork the bot from that pre-imported one (bot/sandbox/zygote.py) instead of starting
        `python -m bot serve` afresh (the same process and arguments, without two seconds of imports)."""
        self.env, self.args, self.log_path, self.zygote = env, args, log_path, zygote
        self.proc: asyncio.subprocess.Process | ForkedBot | None = None
        self.url: str | None = None
        self.ready: dict[str, Any] = {}

    async def start(self) -> str:
        if self.zygote is not None:
            self.proc = await self.zygote.spawn(self.env, ["serve", *self.args], self.log_path)
        else:
            log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - a local file handed to the child
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bot",
                    "serve",
                    *self.args,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    env=self.env,
                )
            finally:
                log.close()
        try:
            line = await asyncio.wait_for(self._ready_line(), BOT_START_TIMEOUT)
        except TimeoutError:
            await self.kill()
            raise RuntimeError(
                f"the bot did not start within {BOT_START_TIMEOUT:.0f}s; see {self.log_path}"
            ) from None
        self.ready = json.loads(line)
        self.url = self.ready["listening"]
        return self.url

    async def _ready_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the bot exited during start (code {await self.proc.wait()}):\n{tail}")
            text = raw.decode(errors="replace").strip()
            if text.startswith("{") and '"ready"' in text:
                return text

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL: what a crash looks like. Nothing gets to clean up."""
        if self.running and self.proc is not None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, grace: float = 20.0) -> int | None:
        proc = self.proc
        if not self.running or proc is None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            await self.kill()
            return proc.returncode


class Sandbox:
    def __init__(
        self,
        *,
        config: str | Path | None = None,
        db: str | Path | None = None,
        speed: float = 10.0,
        workdir: str | Path | None = None,
        clock_start: datetime | float | None = None,
        pagerduty: bool = False,
        flag_users: int = 2000,
        store: str = "sqlite",
        replicas: int = 1,
    ):
        """`clock_start` pins the virtual clock: it reads that instant until the bot is ready, then runs
        `speed` times faster than the wall from there (in this process and in the bot alike). Without it
        the clock starts at the wall time now and runs from the moment the Sandbox is made. `pagerduty`: a
        local PagerDuty (bot/sandbox/pagerduty.py) the bot pages, its config's [alerts.pagerduty] enabled.
        `flag_users`: how many simulated users read the config's flags over OFREP (0: no flag traffic);
        each environment gets a random OFREP API key, in the bot's environment and in info(). `store`:
        "postgres" starts a throwaway PostgreSQL server (bot.adapters.store.pg_server) for the bot's store,
        unless `db` is a postgresql:// URL already."""
        self.config = str(Path(config or "config/deploybot.toml").resolve())
        self.own_workdir = workdir is None  # a temporary folder of its own: removed by stop()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="deploybot-sandbox-"))
        self.db = str(Path(db).resolve()) if db else str(self.workdir / "deploybot.db")
        self.store = (
            "postgres" if store == "postgres" or store_urls.is_postgres_url(str(db or "")) else "sqlite"
        )
        if store_urls.is_postgres_url(str(db or "")):
            self.db = str(db)
        elif self.store == "postgres" and db:
            raise UsageError("deploybot sandbox: --store postgres takes --db postgresql://URL, not a path")
        self.pg_server: PgServer | None = None
        if clock_start is None:
            self.clock = ScaledClock(speed)
        else:
            start = clock_start.timestamp() if isinstance(clock_start, datetime) else float(clock_start)
            self.clock = ScaledClock(speed, start=start, held=True)
        self.signing_secret = secrets.token_hex(16)
        self.bot_token = "xoxb-sandbox-" + secrets.token_hex(12)
        self.world = AwsWorld(self.clock, workdir=self.workdir)
        # A "timeout" fault holds a call past the bot's read timeout, so botocore gives up on it.
        self.world.faults.timeout_seconds = read_timeout_of(self.config) + TIMEOUT_MARGIN
        self.slack = LocalSlack(
            signing_secret=self.signing_secret, bot_token=self.bot_token, clock=self.clock
        )
        self.bot: BotProcess | None = None
        self.zygote: Zygote | None = None  # the pre-imported bot each start forks (bot/sandbox/zygote.py)
        self.aws_url = self.slack_url = ""
        self._emulator: asyncio.Task | None = None
        self.pagerduty = LocalPagerDuty(self.clock) if pagerduty else None
        self.ofrep_keys: dict[str, str] = {}  # environment -> its OFREP API key
        self._ofrep_key_envs: dict[str, str] = {}  # environment -> the variable the bot reads it from
        self.flag_traffic: FlagTraffic | None = None
        self._setup_flags(flag_users)
        # several bots on the one store (bot.sandbox.replicas); None: the one bot, as ever
        self.replicas = Replicas(self, replicas, BotProcess) if replicas > 1 else None
        self.ci = LocalCi(self._settings_or_none())

    def _settings_or_none(self) -> Any:
        try:
            return load_settings(self.config, env={})
        except (ConfigError, OSError, ValueError):
            return None

    def _setup_flags(self, users: int) -> None:
        """Keys for every environment of the config, and the flag traffic when it declares flags. A config
        that does not load gets neither: the bot says what is wrong with it when it starts."""
        try:
            settings = load_settings(self.config, env={})
        except (ConfigError, OSError, ValueError):
            return
        for name, environment in settings.environments.items():
            self.ofrep_keys[name] = "sandbox-ofrep-" + secrets.token_hex(16)
            self._ofrep_key_envs[name] = environment.flag_key_env
        if not settings.flags or users <= 0:
            return
        self.flag_traffic = FlagTraffic(
            self._bot_url,
            {
                name: EnvKey(self.ofrep_keys[name], environment.flags.metrics)
                for name, environment in settings.environments.items()
            },
            {key: list(flag.variants) for key, flag in settings.flags.items()},
            self.clock.now,
            self.world.put_metric_data,
            users=users,
            # enough that a rollout's 5% first step sees well over the analysis's 50 requests a window
            requests_per_minute=6000.0,
        )
        self.world.flags = self.flag_traffic

    def _bot_url(self) -> str | None:
        return self.bot.url if self.bot is not None and self.bot.running else None

    def _start_store(self) -> None:
        """A throwaway PostgreSQL server for `store="postgres"` without a URL given (in a thread)."""
        if self.store == "postgres" and not store_urls.is_postgres_url(self.db):
            try:
                self.pg_server = PgServer().start()
            except PgServerError as exc:  # e.g. PostgreSQL not installed: said in one line, exit 2
                raise UsageError(f"deploybot sandbox --store postgres: {exc}") from None
            self.db = self.pg_server.url

    async def start(self) -> dict[str, Any]:
        if available() and os.environ.get("DEPLOYBOT_SANDBOX_FORK", "1") != "0":
            # it imports the bot while the world starts; every bot start then forks it
            self.zygote = Zygote(self.workdir / "bot.log")
            await self.zygote.start(self.bot_env())
        self.aws_url, _ = await asyncio.gather(
            asyncio.to_thread(self.world.start), asyncio.to_thread(self._start_store)
        )
        if self.pagerduty is not None:
            dest, url = str(self.workdir / "deploybot-pagerduty.toml"), await self.pagerduty.start()
            self.config = await asyncio.to_thread(write_config, self.config, dest, url)
        app = self.slack.make_app()
        if self.pagerduty is not None:
            app.router.add_post("/_sandbox/pagerduty", self.pagerduty.control_post)
            app.router.add_get("/_sandbox/pagerduty", self.pagerduty.control_get)
        self.ci.mount(app)
        app.router.add_post("/_sandbox/push", self._push)
        app.router.add_post("/_sandbox/inject", self._inject)
        app.router.add_get("/_sandbox/flags", self._flags)
        app.router.add_get("/_sandbox/appdb", self._appdb)
        app.router.add_post("/_sandbox/bot", self.replicas.control if self.replicas else self._bot_action)
        app.router.add_get("/_sandbox/aws", self._aws)
        app.router.add_post("/_sandbox/faults", self._add_fault)
        app.router.add_get("/_sandbox/faults", self._faults)
        app.router.add_delete("/_sandbox/faults", self._clear_faults)
        app.router.add_get("/_sandbox/app/{env}/{service}/{slot}/healthz", self._app_health)
        self.slack_url = await self.slack.start()
        if self.clock.held:  # a pinned clock begins when the bot is ready: the world must be ready by then
            await asyncio.to_thread(self._provision)
            await self.start_bot()
        else:
            # The bot reads no AWS until a request comes, and nothing reaches it before start() returns: it
            # boots in its own process while this one provisions the world (each takes about a second).
            await asyncio.gather(asyncio.to_thread(self._provision), self.start_bot())
        self._emulator = asyncio.get_running_loop().create_task(self.world.run(), name="aws-emulator")
        return self.info()

    def _provision(self) -> None:
        self.world.provision()
        self.ci.seed_registry(self.world.client("ecr"))  # images v1..v20 of each service

    async def _push(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            sha = await asyncio.to_thread(self.ci.push, str(body["service"]), str(body["version"]))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"ok": False, "error": f"bad push request: {exc}"}, status=400)
        return web.json_response({"ok": True, "commit": sha})

    def bot_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_"))}
        env.update(
            {
                "SLACK_BOT_TOKEN": self.bot_token,
                "SLACK_SIGNING_SECRET": self.signing_secret,
                "SLACK_API_URL": self.slack_url + "/api/",
                "DEPLOYBOT_AWS_ENDPOINT": self.aws_url,
                "DEPLOYBOT_CLOCK": self.clock.spec(),
                "SANDBOX_APP_URL": self.slack_url + "/_sandbox/app",  # the smoke checks' target in the config
                "AWS_ACCESS_KEY_ID": BOT_ACCESS_KEY,  # its own key: faults apply to it, not to the sandbox's
                "AWS_SECRET_ACCESS_KEY": "sandbox",
                "AWS_DEFAULT_REGION": "us-east-1",
                "PYTHONUNBUFFERED": "1",
                "DEPLOYBOT_PARENT_PID": str(os.getpid()),  # the bot ends with the sandbox, even a killed one
            }
        )
        env.update(self.ci.bot_env(self.slack_url))
        if self.pagerduty is not None:
            env["PAGERDUTY_ROUTING_KEY"] = self.pagerduty.routing_key
        for name, key in self.ofrep_keys.items():
            env[self._ofrep_key_envs[name]] = key
        return env

    async def start_bot(self) -> str:
        if self.replicas is not None:  # one clock for all: it begins before they start
            if self.clock.held:
                self.clock.begin()
            await asyncio.to_thread(self.replicas.migrate)
            urls = await asyncio.gather(*(self.replicas.start(i) for i in range(self.replicas.count)))
            return urls[0]
        if self.bot is not None and self.bot.running:
            return self.bot.url or ""
        self.bot = BotProcess(
            self.bot_env(),
            ["--host", "127.0.0.1", "--port", "0", "--config", self.config, "--db", self.db],
            self.workdir / "bot.log",
            self.zygote,
        )
        url = await self.bot.start()
        if self.clock.held:  # the bot began the pinned clock when it was ready: run from the same instant
            started = ScaledClock.from_spec(self.bot.ready["clock"])
            assert isinstance(started, ScaledClock)
            self.clock.begin(started.origin)
        self.slack.bot_events_url = url + "/slack/events"
        return url

    def info(self) -> dict[str, Any]:
        return {
            "ready": True,
            "bot": self.bot.url if self.bot else None,
            "slack": self.slack_url,
            "aws": self.aws_url,
            "db": store_urls.redact(self.db),
            "store": self.store,
            "signing_secret": self.signing_secret,
            "users": dict(self.slack.users),
            "channels": dict(self.slack.channels),
            "log": str(self.workdir / "bot.log"),
            "workdir": str(self.workdir),
            "speed": self.clock.speed,
            "clock": self.clock.spec(),
            # what an OpenFeature OFREP provider takes: the base URL (it appends /ofrep/v1/...), a key each
            "ofrep": {"url": self.bot.url if self.bot else None, "api_keys": dict(self.ofrep_keys)},
            **({"bots": self.replicas.urls()} if self.replicas else {}),
        }

    async def stop(self) -> None:
        if self.flag_traffic is not None:  # first: the bot going down is no outage to report
            await self.flag_traffic.close()
        if self.replicas is not None:
            await self.replicas.stop_all()
        elif self.bot is not None:
            await self.bot.stop()
        if self.zygote is not None:
            await self.zygote.close()
        if self._emulator is not None:
            self._emulator.cancel()
            await asyncio.gather(self._emulator, return_exceptions=True)
        await self.slack.stop()
        if self.pagerduty is not None:
            await self.pagerduty.stop()
        await asyncio.to_thread(self.world.stop)
        if self.pg_server is not None:
            await asyncio.to_thread(self.pg_server.stop)
        if self.own_workdir:
            await asyncio.to_thread(shutil.rmtree, self.workdir, True)

    async def __aenter__(self) -> Sandbox:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------- control routes

    async def _inject(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as exc:
            return web.json_response(
                {"ok": False, "error": f"bad inject request: not JSON ({exc})"}, status=400
            )
        if isinstance(body, dict) and "flag" in body:
            return self._inject_flag(body)
        try:
            service = body["service"]
            fields = {
                k: body[k]
                for k in (
                    "error_rate",
                    "latency_ms",
                    "unhealthy",
                    "requests_per_minute",
                    "migration",
                    "integration_tests",
                )
                if k in body
            }
            table = self.world.inject(service, body.get("version"), **fields)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"ok": False, "error": f"bad inject request: {exc}"}, status=400)
        return web.json_response({"ok": True, "behaviour": table})

    def _inject_flag(self, body: dict[str, Any]) -> web.Response:
        if self.flag_traffic is None:
            return web.json_response(
                {"ok": False, "error": "bad inject request: this sandbox has no flag traffic (no flags)"},
                status=400,
            )
        try:
            view = self.flag_traffic.inject(body)
        except ValueError as exc:
            return web.json_response({"ok": False, "error": f"bad inject request: {exc}"}, status=400)
        return web.json_response({"ok": True, **view})

    async def _flags(self, request: web.Request) -> web.Response:
        if self.flag_traffic is None:
            return web.json_response({"ok": True, "environments": {}, "injections": []})
        try:
            view = self.flag_traffic.view(request.query.get("env"))
        except ValueError as exc:
            return web.json_response({"ok": False, "error": f"bad flags request: {exc}"}, status=400)
        return web.json_response({"ok": True, **view})

    async def _appdb(self, request: web.Request) -> web.Response:
        """The demo application's database in an environment: its schema version and tables."""
        env = request.query.get("env", "")
        if env not in self.world.environments:
            known = ", ".join(self.world.environments)
            return web.json_response({"ok": False, "error": f"env must be one of {known}"}, status=400)
        return web.json_response({"ok": True, **appdb_view(self.world.tasks.appdb(env))})

    async def _bot_action(self, request: web.Request) -> web.Response:
        action = (await request.json()).get("action")
        if self.bot is None:
            return web.json_response({"ok": False, "error": "the bot was never started"}, status=409)
        if action == "kill":
            await self.bot.kill()
        elif action == "stop":
            await self.bot.stop()
        elif action == "start":
            await self.start_bot()
        else:
            return web.json_response({"ok": False, "error": "action must be kill, stop or start"}, status=400)
        return web.json_response({"ok": True, "running": self.bot.running, "bot": self.bot.url})

    async def _app_health(self, request: web.Request) -> web.Response:
        """What a slot's service answers on /healthz: its version when its tasks run and are healthy."""
        env, service, slot = (request.match_info[k] for k in ("env", "service", "slot"))
        snapshot = await asyncio.to_thread(self.world.snapshot)
        try:
            state = snapshot[env][service]["slots"][slot]
        except KeyError:
            return web.Response(status=404, text=f"no {service} {slot} slot in {env}")
        version = state["image"].rsplit(":", 1)[-1]
        if state["running"] == 0:
            return web.Response(status=503, text=f"{service} {slot}: no tasks running")
        if self.world.behaviour(service, version).unhealthy:
            return web.Response(status=503, text=f"{service} {version}: unhealthy")
        return web.Response(text=f"ok {service} {version}")

    async def _add_fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as exc:
            return web.json_response(
                {"ok": False, "error": f"bad fault request: not JSON ({exc})"}, status=400
            )
        try:
            added = self.world.faults.add(body)
        except ValueError as exc:
            return web.json_response({"ok": False, "error": f"bad fault request: {exc}"}, status=400)
        return web.json_response({"ok": True, "added": added, "faults": self.world.faults.rules()})

    async def _faults(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "faults": self.world.faults.rules()})

    async def _clear_faults(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "cleared": self.world.faults.clear(), "faults": []})

    async def _aws(self, _request: web.Request) -> web.Response:
        return web.json_response(
            await asyncio.to_thread(self.world.snapshot), dumps=lambda o: json.dumps(o, default=str)
        )


def read_timeout_of(config: str | Path) -> float:
    """The bot's AWS read timeout as its config sets it (`[aws] read_timeout_seconds`, default 30); the bot
    checks the config itself, so a file this cannot read gives the default."""
    try:
        value = tomllib.loads(Path(config).read_text()).get("aws", {}).get("read_timeout_seconds", 30.0)
    except (OSError, ValueError, AttributeError):
        return 30.0
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 30.0


async def run_sandbox(args: Any) -> int:
    sandbox = Sandbox(
        config=args.config,
        db=args.db,
        speed=args.speed,
        clock_start=getattr(args, "clock_start", None),
        store=getattr(args, "store", "sqlite"),
        replicas=getattr(args, "replicas", 1),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with sandbox:
        if args.headless:
            print(json.dumps(sandbox.info()), flush=True)
            await stop.wait()
        else:
            from bot.sandbox.console import Console

            console = Console(sandbox)
            done = loop.create_task(console.run())
            stopper = loop.create_task(stop.wait())
            await asyncio.wait({done, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in (done, stopper):
                t.cancel()
    return 0
