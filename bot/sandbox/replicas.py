"""Several bots on one store (`deploybot sandbox --replicas N`): each a `deploybot serve --replica
bot-N` child process with its own log (bot.log, bot-1.log, ...), all on the sandbox's SQLite file (WAL)
or whatever store URL the sandbox hands them. The local Slack sends requests to the running, unpaused
ones in turn (a load balancer's health check takes a stopped or paused one out). POST /_sandbox/bot
{"action": "kill"|"stop"|"start"|"pause"|"resume", "replica": N}; pause and resume are SIGSTOP/SIGCONT.

A pause on the SQLite file stops the bot between two of its transactions: a process stopped inside one
holds the file's write lock, and every other bot's write then waits for it (SQLite cannot take a lock
from a process that is alive), which is not the stall past a lease the pause is for. So when the stopped
bot holds the lock it runs again for a moment and is stopped anew (`_pause`)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.adapters.store.sqlite import Store

ACTIONS = ("kill", "stop", "start", "pause", "resume")
LEASE_SECONDS = 15.0  # clock seconds a replica's lease lasts (DEPLOYBOT_LEASE_SECONDS)
SHM_WRITE_LOCK = 120  # the -shm file's byte SQLite's unix VFS locks for WAL_WRITE_LOCK ((22 + 8) * 4)
PAUSE_TRIES = 200  # stops taken, each 2 ms apart, before a pause inside a transaction is kept as it is


def replica_name(index: int) -> str:
    return f"bot-{index}"


def log_path(workdir: Path, index: int) -> Path:
    return workdir / ("bot.log" if index == 0 else f"bot-{index}.log")


class Replicas:
    """The sandbox's N bots."""

    def __init__(
        self,
        sandbox: Any,
        count: int,
        make_bot: Callable[[dict[str, str], list[str], Path], Any],
        lease_seconds: float = LEASE_SECONDS,
    ):
        """`sandbox`: bot.sandbox.run.Sandbox; `make_bot`: its BotProcess (env, args, log path)."""
        if count < 1:
            raise ValueError(f"replicas must be at least 1, got {count}")
        self.sandbox, self.count, self.lease_seconds = sandbox, count, lease_seconds
        self.make_bot = make_bot
        self.bots: list[Any] = [None] * count
        self.paused: set[int] = set()

    def migrate(self) -> None:
        """Create the schema once, before the bots open the file together."""
        Store(self.sandbox.db).close()

    def env(self, index: int) -> dict[str, str]:
        return {
            **self.sandbox.bot_env(),
            "DEPLOYBOT_REPLICA": replica_name(index),
            "DEPLOYBOT_LEASE_SECONDS": repr(self.lease_seconds),
        }

    async def start(self, index: int) -> str:
        bot = self.bots[index]
        if bot is not None and bot.running:
            return bot.url or ""
        sb = self.sandbox
        bot = self.make_bot(
            self.env(index),
            ["--host", "127.0.0.1", "--port", "0", "--config", sb.config, "--db", sb.db],
            log_path(sb.workdir, index),
        )
        self.bots[index] = bot
        url = await bot.start()
        self.paused.discard(index)
        if index == 0:
            sb.bot = bot
        self.route()
        return url

    def route(self) -> None:
        """The local Slack's round robin: every bot that runs and is not paused."""
        urls = [
            bot.url + "/slack/events"
            for i, bot in enumerate(self.bots)
            if bot is not None and bot.running and bot.url and i not in self.paused
        ]
        self.sandbox.slack.bot_events_urls = urls
        self.sandbox.slack.bot_events_url = urls[0] if urls else None

    def urls(self) -> list[str | None]:
        return [bot.url if bot is not None else None for bot in self.bots]

    async def act(self, action: str, index: int) -> dict[str, Any]:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        if not 0 <= index < self.count:
            raise ValueError(f"replica must be 0 to {self.count - 1}")
        if action == "start":
            await self.start(index)
        bot = self.bots[index]
        if bot is None or bot.proc is None:
            raise ValueError(f"replica {index} was never started")
        if action == "pause" and bot.running:
            await self._pause(bot.proc.pid)
            self.paused.add(index)
        elif action == "resume" and bot.running:
            os.kill(bot.proc.pid, signal.SIGCONT)
            self.paused.discard(index)
        elif action in ("kill", "stop"):
            if index in self.paused:  # a stopped process cannot handle SIGTERM: let it run again first
                os.kill(bot.proc.pid, signal.SIGCONT)
                self.paused.discard(index)
            await (bot.kill() if action == "kill" else bot.stop())
        self.route()
        return {
            "ok": True,
            "replica": index,
            "running": bot.running,
            "paused": index in self.paused,
            "bot": bot.url,
            "bots": self.urls(),
        }

    async def _pause(self, pid: int) -> None:
        """SIGSTOP, again until the stopped bot holds no write lock on the SQLite file (see the doc)."""
        for _ in range(PAUSE_TRIES):
            os.kill(pid, signal.SIGSTOP)
            if not self._write_lock_held(pid):
                return
            os.kill(pid, signal.SIGCONT)
            await asyncio.sleep(0.002)  # let it finish that transaction
        os.kill(pid, signal.SIGSTOP)

    def _write_lock_held(self, pid: int) -> bool:
        """Does `pid` hold the SQLite file's write lock? Read from /proc/locks (Linux), never by asking
        SQLite: a connection's read of a file whose writer is stopped can wait seconds. In WAL mode the
        write lock is a POSIX lock on byte 120 of the -shm file (the unix VFS's WAL_WRITE_LOCK)."""
        db = str(self.sandbox.db)
        shm = Path(db + "-shm")
        if "://" in db or not shm.exists() or not Path("/proc/locks").exists():
            return False  # PostgreSQL, or no lock table to read: nothing to look at
        inode = shm.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            f = line.split()
            if "->" in f:  # a waiter, not a holder
                continue
            mine = len(f) >= 8 and f[3] == "WRITE" and f[4] == str(pid) and f[5].endswith(f":{inode}")
            if mine and f[6] == str(SHM_WRITE_LOCK):
                return True
        return False

    async def stop_all(self) -> None:
        for i, bot in enumerate(self.bots):
            if bot is not None and bot.running:
                if i in self.paused and bot.proc is not None:
                    os.kill(bot.proc.pid, signal.SIGCONT)
                await bot.stop()
        self.paused.clear()

    async def control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            index = body.get("replica", 0)
            if not isinstance(index, int) or isinstance(index, bool):
                raise ValueError("replica must be a number")
            return web.json_response(await self.act(str(body.get("action")), index))
        except ValueError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
