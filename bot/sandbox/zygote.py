"""A pre-imported bot for the sandbox to fork: `deploybot serve` without paying its imports at every start.

Starting `python -m bot serve` costs about two seconds of CPU before the bot does anything: importing
boto3, aiohttp, slack-bolt and the bot (compiling and executing their modules). The sandbox starts the bot
once per scenario and again after every kill (the crash scenarios kill it dozens of times), so that was
most of their time. Here one process imports the bot once (the zygote) and forks a child for every start:
the child is the bot, a process of its own, started as `python -m bot serve ARGS` would be (its own
environment, working directory, stdout pipe and log file), serving from a fresh interpreter state (the
zygote never starts an event loop, a thread, a store or a socket before forking). A SIGKILL is still a
SIGKILL of that process: nothing of it survives in the zygote.

Protocol, over a Unix SEQPACKET socket (requests) and the zygote's stdout (one JSON line per event):
  request {"spawn": {"env", "cwd", "args"}} with two file descriptors (the child's stdout and stderr)
      -> {"started": PID}
  request {"signal": PID, "sig": N}  (only while PID runs: the zygote is its parent and reaps it, so a
      signal can never reach another process that reused the pid)
  the child ended -> {"exited": PID, "code": N}  (negative: killed by signal -N, as asyncio reports it)
  the zygote's stdout first says {"zygote": "ready"}. EOF on the socket ends the zygote; its children get
  SIGTERM when it dies (each bot asks for that from its parent, DEPLOYBOT_PARENT_PID), and the zygote gets
  SIGTERM when the sandbox dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections import deque
from pathlib import Path
from typing import Any


def available() -> bool:
    """Forking a pre-imported bot needs Linux (pidfd, the parent-death signal)."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


# ---------------------------------------------------------------------------------- the sandbox's side


class ForkedBot:
    """A bot forked by the zygote, with what BotProcess uses of asyncio's Process: pid, returncode,
    stdout, kill(), send_signal(), wait()."""

    def __init__(self, zygote: Zygote, pid: int, stdout: asyncio.StreamReader, transport: Any):
        self.zygote, self.pid, self.stdout, self._transport = zygote, pid, stdout, transport
        self.returncode: int | None = None
        self._ended = asyncio.Event()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            self.zygote.send({"signal": self.pid, "sig": int(sig)})

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()  # its stdout ends by itself (EOF), after whatever it said last


class Zygote:
    """The sandbox's handle on the zygote process: start() it once, spawn() a bot per start, close()."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self._starting: deque[asyncio.Future[ForkedBot]] = deque()
        self._pending: dict[int, Any] = {}  # pid -> (stdout reader, transport) until "started" is read
        self._bots: dict[int, ForkedBot] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - a local file handed to the child
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.sandbox.zygote_main",
                str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            log.close()
            theirs.close()
        self._sock = ours
        self._ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="sandbox-zygote")

    def send(self, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        if self._sock is None:
            raise RuntimeError("the zygote is not running")
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self._sock, [data], list(fds))
        else:
            self._sock.send(data)

    async def spawn(self, env: dict[str, str], args: list[str], log_path: Path) -> ForkedBot:
        """Fork a bot: `python -m bot ARGS` with `env`, its stdout a new pipe, its stderr `log_path`."""
        assert self._ready is not None
        await self._ready
        loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        future: asyncio.Future[ForkedBot] = loop.create_future()
        try:
            reader = asyncio.StreamReader(limit=2**20)
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", 0)
            )
            self._starting.append(future)
            self._pending[id(future)] = (reader, transport)
            self.send({"spawn": {"env": env, "cwd": os.getcwd(), "args": args}}, (write_end, log))
        finally:
            os.close(write_end)
            os.close(log)
        return await future

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while raw := await self.proc.stdout.readline():
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                self._on(event)
        finally:
            error = RuntimeError(f"the sandbox's zygote ended (see {self.log_path})")
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(error)
            while self._starting:
                future = self._starting.popleft()
                _, transport = self._pending.pop(id(future))
                transport.close()
                if not future.done():
                    future.set_exception(error)
            for bot in self._bots.values():  # its children die with it (their parent-death signal)
                bot._exited(-signal.SIGTERM)
            self._bots.clear()

    def _on(self, event: dict[str, Any]) -> None:
        if "zygote" in event and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif "started" in event:
            future = self._starting.popleft()
            reader, transport = self._pending.pop(id(future))
            bot = self._bots[event["started"]] = ForkedBot(self, event["started"], reader, transport)
            if not future.done():
                future.set_result(bot)
        elif "exited" in event:
            ended = self._bots.pop(event["exited"], None)
            if ended is not None:
                ended._exited(int(event["code"]))

    async def close(self) -> None:
        """End the zygote (its bots first: whoever still runs gets SIGTERM, as at the sandbox's death)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.proc is not None and self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
