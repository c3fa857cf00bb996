"""The sandbox's terminal console: type slash commands as a chosen user, see the bot's messages as text
with numbered buttons, click them by number, inject faults. For people; tests use the control API."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.sandbox.run import Sandbox

HELP = """Commands:
  /deploy ... | /promote ... | /rollback ...   send a slash command as the current user
  as NAME                  act as alice (engineer), bob (release manager), carol (on-call), dave
  in CHANNEL               post commands from deploys, incidents or deploys-log
  show [CHANNEL]           print a channel's messages again
  click N                  click button N from the last messages printed
  inject SERVICE VERSION unhealthy|healthy|errors=0.2|latency=300
  traffic SERVICE RPM      simulated requests per minute (0: no metrics)
  aws                      the AWS world: slots, task definitions, counts, weights
  kill | start             SIGKILL the bot process / start it again on the same database
  help | quit"""


def render(message: dict[str, Any], buttons: list[tuple[str, str, str]]) -> str:
    """A message as text; its buttons are appended to `buttons` and shown with their numbers."""
    lines: list[str] = []
    for block in message.get("blocks") or []:
        kind = block.get("type")
        if kind == "section":
            if block.get("text"):
                lines.append(block["text"]["text"])
            for f in block.get("fields", []):
                lines.append("  " + f["text"].replace("\n", ": "))
        elif kind == "context":
            lines.append("  " + " ".join(e.get("text", "") for e in block.get("elements", [])))
        elif kind == "actions":
            labels = []
            for el in block.get("elements", []):
                if el.get("type") == "button":
                    buttons.append((message["ts"], el.get("action_id", ""), el["text"]["text"]))
                    labels.append(f"[{len(buttons)}] {el['text']['text']}")
            lines.append("  " + "  ".join(labels))
    if not lines:
        lines.append(message.get("text", ""))
    head = "  └ " if message.get("thread_ts") and message["thread_ts"] != message["ts"] else ""
    flags = " (only you)" if message.get("ephemeral_for") else ""
    flags += " (edited)" if message.get("edited") else ""
    return head + ("\n" + (" " * len(head))).join(lines) + flags


class Console:
    def __init__(self, sandbox: Sandbox):
        self.sandbox, self.slack = sandbox, sandbox.slack
        self.user, self.channel = "alice", "deploys"
        self.buttons: list[tuple[str, str, str]] = []
        self.seen: dict[str, tuple[str, bool, str]] = {}

    def out(self, text: str = "") -> None:
        print(text, flush=True)

    async def run(self) -> None:
        info = self.sandbox.info()
        self.out(f"deploybot sandbox — bot {info['bot']}, slack {info['slack']}, aws {info['aws']}")
        self.out(f"database {info['db']}, time runs {info['speed']:g}x. Type 'help'.")
        watcher = asyncio.get_running_loop().create_task(self._watch())
        try:
            while True:
                line = await asyncio.to_thread(self._read)
                if line is None or line.strip() in ("quit", "exit"):
                    return
                try:
                    await self.handle(line.strip())
                except Exception as exc:  # the console must survive any typo
                    self.out(f"! {type(exc).__name__}: {exc}")
        finally:
            watcher.cancel()

    def _read(self) -> str | None:
        try:
            return input(f"{self.user}@#{self.channel}> ")
        except EOFError:
            return None

    async def handle(self, line: str) -> None:
        if not line:
            return
        if line.startswith("/"):
            command, _, text = line.partition(" ")
            result = await self.slack.slash(self.user, self.channel, command, text)
            body = result["body"]
            self.out(
                f"(HTTP {result['status']}) "
                + (body.get("text", json.dumps(body)) if isinstance(body, dict) else str(body))
            )
            return
        word, *args = shlex.split(line)
        if word == "help":
            self.out(HELP)
        elif word == "as" and args:
            self.slack.user_id(args[0])
            self.user = args[0]
        elif word == "in" and args:
            self.slack.channel_id(args[0])
            self.channel = args[0].lstrip("#")
        elif word == "show":
            self.seen.clear()
            self._print_new(args[0].lstrip("#") if args else self.channel)
        elif word == "click" and args:
            ts, action_id, label = self.buttons[int(args[0]) - 1]
            result = await self.slack.click(self.user, self.channel, ts, action_id=action_id)
            self.out(f"(clicked {label}: HTTP {result['status']})")
        elif word == "inject" and len(args) >= 3:
            fields: dict[str, Any] = {}
            for a in args[2:]:
                key, _, value = a.partition("=")
                if key in ("unhealthy", "healthy"):
                    fields["unhealthy"] = key == "unhealthy"
                elif key == "errors":
                    fields["error_rate"] = float(value)
                elif key == "latency":
                    fields["latency_ms"] = float(value)
            self.out(json.dumps(self.sandbox.world.inject(args[0], args[1], **fields)))
        elif word == "traffic" and len(args) == 2:
            self.sandbox.world.inject(args[0], requests_per_minute=float(args[1]))
        elif word == "aws":
            self.out(json.dumps(await asyncio.to_thread(self.sandbox.world.snapshot), indent=1, default=str))
        elif word == "kill":
            await self.sandbox.bot.kill()
            self.out("bot killed (SIGKILL)")
        elif word == "start":
            self.out(f"bot started at {await self.sandbox.start_bot()}")
        else:
            self.out("? " + HELP.splitlines()[0] + " — type 'help'")

    async def _watch(self) -> None:
        while True:
            for channel in self.slack.channels:
                self._print_new(channel)
            await asyncio.sleep(0.3)

    def _print_new(self, channel: str) -> None:
        for m in self.slack.messages(channel):
            if m.get("ephemeral_for") and m["ephemeral_for"] != self.slack.user_id(self.user):
                continue
            key = (m.get("text", ""), bool(m.get("edited")), json.dumps(m.get("blocks"), sort_keys=True))
            if self.seen.get(f"{channel}:{m['ts']}") == key:
                continue
            self.seen[f"{channel}:{m['ts']}"] = key
            sys.stdout.write(f"\n#{channel} {m['ts']}\n{render(m, self.buttons)}\n")
            sys.stdout.flush()
