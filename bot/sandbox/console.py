"""The sandbox's terminal console: type slash commands as a chosen user, see the bot's messages as the Slack
client shows them (bot.sandbox.render) with numbered buttons and checkboxes, click them by number, inject
faults. For people; tests use the control API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from bot.sandbox.faults import ERRORS
from bot.sandbox.render import Directory, change_line, mrkdwn, render_message
from bot.sandbox.tasks import appdb_view


class Sandbox(Protocol):
    """What the console uses of bot.sandbox.run.Sandbox (a protocol, so the two modules import one way)."""

    slack: Any
    clock: Any
    world: Any
    bot: Any
    ci: Any

    def info(self) -> dict[str, Any]: ...

    async def start_bot(self) -> str: ...


HELP = """Commands:
  /deploy ... | /promote ... | /rollback ...   send a slash command as the current user
  as NAME                  act as alice (engineer), bob (release manager), carol (on-call), dave
  in CHANNEL               post commands from deploys, incidents or deploys-log
  click M.I                click item I of message #M: a button, or a checklist box (ticks or unticks it)
  click I                  click item I of the latest message that has clickable items
  submit TEXT              fill the modal the bot opened for you (Had issues, Reject) with TEXT and send it
  show M                   print message #M in full (an edit prints one line: ~ #M ...)
  show [CHANNEL]           print a channel's messages again
  inject SERVICE VERSION unhealthy|healthy|errors=0.2|latency=300
  inject SERVICE VERSION migration=fails|slow|down_fails|ok  integration_tests=fail|pass
  inject flag KEY VARIANT error_rate=0.2 latency_ms=400 [env=ENV]
                           make a flag's variant misbehave in its metrics (all environments, or ENV);
                           inject flag KEY [VARIANT] clear [env=ENV] stops it
  flags [ENV]              each flag's share of the simulated users per variant, and the injections
  ci PROVIDER REPO VERSION success|failure|pending [CHECK]
                           a CI result in the local GitHub, GitLab, Jenkins or CircleCI; e.g.
                           ci github acme/web v5 failure unit-tests | ci jenkins api-integration v4 pending
  push SERVICE VERSION     a new version: two commits, its tag, its image in ECR
  appdb [ENV]              the demo application's database: its schema version and tables
  traffic SERVICE RPM      simulated requests per minute (0: no metrics)
  faults SERVICE [OPERATION,...] [RATE%] [Ns|Nm] [500|503|throttle|timeout] [latency=MS] [seed=N]
                           fail the bot's AWS calls: SERVICE ecs, elbv2, cloudwatch or * (all); e.g.
                           faults elbv2 100% 6s | faults * 20% | faults ecs UpdateService 50% 30s throttle
                           (defaults: 100%, 500, until cleared); faults lists them, faults off clears
  aws                      the AWS world: slots, task definitions, counts, weights
  kill | start             SIGKILL the bot process / start it again on the same database
  help | quit              quit stops the sandbox and removes its temporary folder"""


class Console:
    """Messages are numbered #1, #2, ... in the order they first appear; their clickable items M.1, M.2, ...
    A new message prints in full, an edit prints one line, `show M` prints the whole message again."""

    def __init__(self, sandbox: Sandbox, out: Callable[[str], None] | None = None):
        self.sandbox, self.slack = sandbox, sandbox.slack
        self.user, self.channel = "alice", "deploys"
        self.tty = sys.stdout.isatty()
        self._out = out
        self.numbers: dict[tuple[str, str], int] = {}  # (channel id, ts) -> message number
        self.where: dict[int, tuple[str, str]] = {}  # message number -> (channel id, ts)
        self.shown: dict[int, tuple[str, list[str]]] = {}  # number -> (signature, lines last printed)
        self.latest_clickable: int | None = None
        self._printed = 0  # lines printed so far (the watcher prompts again after printing)
        self._busy = False  # a command is being handled: its end prompts
        self._prompted = False  # the prompt is on screen: what is printed next starts on a line of its own

    def out(self, text: str = "") -> None:
        self._printed += 1
        if self._out is not None:
            self._out(text)
            return
        if self._prompted:  # clear the prompt's line on a terminal; elsewhere leave it and start a new one
            sys.stdout.write("\r\033[K" if self.tty else "\n")
            self._prompted = False
        print(text, flush=True)

    def directory(self) -> Directory:
        people = getattr(self.slack, "_people", {})
        tz = people.get(self.slack.users.get(self.user, ""), {}).get("tz", "UTC")
        return Directory(
            users={uid: name for name, uid in self.slack.users.items()},
            channels={cid: name for name, cid in self.slack.channels.items()},
            groups={g["id"]: handle for handle, g in self.slack.usergroups.items()},
            tz=tz,
            now=self.sandbox.clock.now(),
            tty=self.tty,
            emoji_chars=(sys.stdout.encoding or "").lower().replace("-", "") in ("utf8", "utf8mb4"),
        )

    async def run(self) -> None:
        info = self.sandbox.info()
        self.out(f"deploybot sandbox — bot {info['bot']}, slack {info['slack']}, aws {info['aws']}")
        self.out(f"database {info['db']}, time runs {info['speed']:g}x. Type 'help'.")
        self.out(f"temporary folder {info['workdir']} (removed at quit)")
        watcher = asyncio.get_running_loop().create_task(self._watch())
        try:
            async for line in self._lines():
                if line.strip() in ("quit", "exit"):
                    return
                self._busy = True
                try:
                    await self.handle(line.strip())
                except Exception as exc:  # the console must survive any typo
                    self.out(f"! {type(exc).__name__}: {exc}")
                finally:
                    self._busy = False
        finally:
            watcher.cancel()

    def _prompt(self) -> None:
        if self._out is not None:
            return
        sys.stdout.write(f"{self.user}@#{self.channel}> ")
        sys.stdout.flush()
        self._prompted = True

    async def _lines(self) -> AsyncIterator[str]:
        """Lines typed on stdin until EOF. Read in the event loop (not a thread blocked in input()), so
        SIGTERM or quit ends the console at once."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        if sys.stdin is None:  # no stdin at all: nothing will ever be typed
            return
        fd = sys.stdin.fileno()

        def readable() -> None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            queue.put_nowait(chunk)
            if not chunk:
                loop.remove_reader(fd)

        try:
            loop.add_reader(fd, readable)
        except (PermissionError, OSError):  # stdin is a regular file: it never blocks
            for line in sys.stdin:
                yield line.rstrip("\n")
            return
        buffer = b""
        try:
            self._prompt()
            while True:
                chunk = await queue.get()
                if not chunk:
                    if buffer.strip():
                        yield buffer.decode(errors="replace")
                    return
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    yield raw.decode(errors="replace").rstrip("\r")
                    self._prompt()
        finally:
            loop.remove_reader(fd)

    async def handle(self, line: str) -> None:
        if not line:
            return
        if line.startswith("/"):
            await self._slash(line)
            return
        word, *args = shlex.split(line)
        command = self._commands().get(word)
        if command is None or len(args) < command[0]:
            self.out("? " + HELP.splitlines()[0] + " — type 'help'")
            return
        await command[1](args)

    def _commands(self) -> dict[str, tuple[int, Callable[[list[str]], Awaitable[None]]]]:
        """Each console word: the least number of arguments it takes, and what it does."""
        return {
            "help": (0, self._help),
            "as": (1, self._as),
            "in": (1, self._in),
            "show": (0, self._show),
            "click": (1, self._click),
            "submit": (1, self._submit),
            "inject": (3, self._inject),
            "flags": (0, self._flags),
            "appdb": (0, self._appdb),
            "ci": (4, self._ci),
            "push": (2, self._push),
            "traffic": (2, self._traffic),
            "faults": (0, self._faults),
            "aws": (0, self._aws),
            "kill": (0, self._kill),
            "start": (0, self._start),
        }

    async def _slash(self, line: str) -> None:
        command, _, text = line.partition(" ")
        result = await self.slack.slash(self.user, self.channel, command, text)
        if result.get("message_ts"):  # the answer is a message: print it now, once
            self._print_new(self.channel)
            return
        body = result["body"]
        shown = body.get("text", json.dumps(body)) if isinstance(body, dict) else str(body)
        if result["status"] != 200 or shown.strip():
            self.out(f"(HTTP {result['status']}) {mrkdwn(shown, self.directory())}".rstrip())

    async def _help(self, args: list[str]) -> None:
        self.out(HELP)

    async def _as(self, args: list[str]) -> None:
        self.slack.user_id(args[0])
        self.user = args[0].lstrip("@")

    async def _in(self, args: list[str]) -> None:
        self.slack.channel_id(args[0])
        self.channel = args[0].lstrip("#")

    async def _show(self, args: list[str]) -> None:
        if args and args[0].lstrip("#").isdigit():
            self.show(int(args[0].lstrip("#")))
            return
        channel = args[0].lstrip("#") if args else self.channel
        for m in self._visible(channel):
            number = self.numbers.get((m["channel"], m["ts"]))
            if number is not None:
                self.shown.pop(number, None)
        self._print_new(channel)

    async def _click(self, args: list[str]) -> None:
        await self.click(args[0])

    async def _inject(self, args: list[str]) -> None:
        if args[0] == "flag":
            traffic = self._flag_traffic()
            view = traffic.inject(flag_injection_from_words(args[1:]))
            self.out("\n".join(injection_line(i) for i in view["injections"]) or "no flag injections")
            return
        fields: dict[str, Any] = {}
        for a in args[2:]:
            key, _, value = a.partition("=")
            if key in ("unhealthy", "healthy"):
                fields["unhealthy"] = key == "unhealthy"
            elif key == "errors":
                fields["error_rate"] = float(value)
            elif key == "latency":
                fields["latency_ms"] = float(value)
            elif key in ("migration", "integration_tests"):
                fields[key] = value
        self.out(json.dumps(self.sandbox.world.inject(args[0], args[1], **fields)))

    def _flag_traffic(self) -> Any:
        traffic = getattr(self.sandbox.world, "flags", None)
        if traffic is None:
            raise LookupError("this sandbox has no flag traffic (its config declares no flags)")
        return traffic

    async def _flags(self, args: list[str]) -> None:
        view = self._flag_traffic().view(args[0] if args else None)
        self.out("\n".join(flag_lines(view)))

    async def _appdb(self, args: list[str]) -> None:
        for env in args or self.sandbox.world.environments:
            view = appdb_view(self.sandbox.world.tasks.appdb(env))
            tables = "; ".join(f"{t} ({', '.join(c)})" for t, c in view["tables"].items()) or "no tables"
            self.out(f"{env}: schema {view['version']:04d} — {tables}")

    async def _ci(self, args: list[str]) -> None:
        provider, repo, version, state, *check = args
        body = {"provider": provider, "repo": repo, "version": version, "state": state}
        said = self.sandbox.ci.set_result({**body, **({"check": check[0]} if check else {})})
        self.out(f"{said['provider']} {said['repo']} {said['commit'][:7]}: {said['check']} {said['state']}")

    async def _push(self, args: list[str]) -> None:
        sha = await asyncio.to_thread(self.sandbox.ci.push, args[0], args[1])
        self.out(f"pushed {args[0]}:{args[1]} (commit {sha[:7]}, image in ECR)")

    async def _traffic(self, args: list[str]) -> None:
        self.sandbox.world.inject(args[0], requests_per_minute=float(args[1]))

    async def _faults(self, args: list[str]) -> None:
        faults = self.sandbox.world.faults
        if args == ["off"]:
            self.out(f"faults cleared ({faults.clear()} removed)")
            return
        if args:
            faults.add(fault_from_words(args))
        rules = faults.rules()
        self.out("\n".join(fault_line(r) for r in rules) if rules else "no faults (the bot's AWS calls pass)")

    async def _aws(self, args: list[str]) -> None:
        self.out(json.dumps(await asyncio.to_thread(self.sandbox.world.snapshot), indent=1, default=str))

    async def _kill(self, args: list[str]) -> None:
        await self.sandbox.bot.kill()
        self.out("bot killed (SIGKILL)")

    async def _start(self, args: list[str]) -> None:
        self.out(f"bot started at {await self.sandbox.start_bot()}")

    # ------------------------------------------------------------------------------------------ clicks

    def _message(self, number: int) -> dict[str, Any]:
        if number not in self.where:
            raise LookupError(f"there is no message #{number} (messages are #1 to #{len(self.where)})")
        cid, ts = self.where[number]
        for m in self.slack.messages(cid):
            if m["ts"] == ts:
                return m
        raise LookupError(f"message #{number} is gone")

    async def click(self, ref: str) -> None:
        number_text, dot, item_text = ref.lstrip("#").partition(".")
        if not number_text.isdigit() or (dot and not item_text.isdigit()):
            raise LookupError(f"{ref!r}: click takes MESSAGE.ITEM (e.g. click 2.1) or ITEM (e.g. click 1)")
        if not dot:
            if self.latest_clickable is None:
                raise LookupError("no message with buttons yet")
            number, item_text = self.latest_clickable, number_text
        else:
            number = int(number_text)
        message = self._message(number)
        _, items = render_message(message, self.directory(), number)
        index = int(item_text)
        if not 1 <= index <= len(items):
            raise LookupError(f"message #{number} has items {number}.1 to {number}.{len(items)}")
        item = items[index - 1]
        result = await self.slack.click(
            self.user, message["channel"], message["ts"], action_id=item.action_id, label=item.label
        )
        verb = ("untick" if item.checked else "tick") if item.kind == "checkbox" else "click"
        status = "" if result["status"] == 200 else f": HTTP {result['status']} {result['body']}"
        self.out(f"({verb} {item.label} on #{number}{status})")
        for view in self.slack.modals.open_views(self.slack.user_id(self.user))[-1:]:
            self.out(f"(a modal opened: {view['title']['text']} — `submit TEXT` fills it in and sends it)")
        self._print_new(message["channel"])

    async def _submit(self, args: list[str]) -> None:
        """The newest modal open for the current user, every input filled with the words given."""
        views = self.slack.modals.open_views(self.slack.user_id(self.user))
        if not views:
            self.out("? no modal is open for you (a button like Had issues or Reject opens one)")
            return
        view, words = views[-1], " ".join(args)
        inputs = [b for b in view["blocks"] if b.get("type") == "input"]
        values = {b["block_id"]: {b["element"]["action_id"]: words} for b in inputs}
        result = await self.slack.modals.submit(self.user, view["id"], values)
        self.out("(sent)" if result["closed"] else f"(the modal stays open: {result['errors']})")
        self._print_new(self.channel)

    # ------------------------------------------------------------------------------------------ printing

    def show(self, number: int) -> None:
        message = self._message(number)
        self._print_full(number, message)

    async def _watch(self) -> None:
        while True:
            printed = self._printed
            for channel in list(self.slack.channels):
                self._print_new(channel)
            if self._printed != printed and not self._busy:
                self._prompt()
            await asyncio.sleep(0.3)

    def _visible(self, channel: str) -> list[dict[str, Any]]:
        me = self.slack.user_id(self.user)
        return [m for m in self.slack.messages(channel) if m.get("ephemeral_for") in (None, me)]

    def _print_new(self, channel: str) -> None:
        for m in self._visible(channel):
            key = (m["channel"], m["ts"])
            number = self.numbers.get(key)
            if number is None:
                number = self.numbers[key] = len(self.numbers) + 1
                self.where[number] = key
            signature = json.dumps([m.get("text"), m.get("blocks")], sort_keys=True)
            before = self.shown.get(number)
            if before is not None and before[0] == signature:
                continue
            if before is None:
                self._print_full(number, m, signature)
            else:
                d = self.directory()
                self.out(change_line(number, before[1], m, d))
                self.shown[number] = (signature, render_message(m, d, number)[0])

    def _print_full(self, number: int, m: dict[str, Any], signature: str | None = None) -> None:
        d = self.directory()
        lines, items = render_message(m, d, number)
        if items:
            self.latest_clickable = max(number, self.latest_clickable or 0)
        channel = self.slack._channel_name(m["channel"])
        thread = m.get("thread_ts") and m["thread_ts"] != m["ts"]
        parent = self.numbers.get((m["channel"], m["thread_ts"])) if thread else None
        head = f"#{number} in #{channel}"
        head += f", reply to #{parent}" if parent else (" (thread reply)" if thread else "")
        head += " (only you)" if m.get("ephemeral_for") else ""
        head += " (edited)" if m.get("edited") else ""
        indent = "  │ " if thread else "  "
        self.out("\n" + head + "\n" + "\n".join(indent + line for line in lines))
        sig = signature or json.dumps([m.get("text"), m.get("blocks")], sort_keys=True)
        self.shown[number] = (sig, lines)


# ------------------------------------------------------------------------------------------------ faults

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)")


def fault_from_words(words: list[str]) -> dict[str, Any]:
    """The words after `faults` as a fault request (bot.sandbox.faults checks it): `elbv2 100% 6s`,
    `* 20%`, `ecs UpdateService,DescribeServices 50% 30s throttle latency=300 seed=7`."""
    service, *rest = words
    body: dict[str, Any] = {"service": service}
    for word in rest:
        lower = word.lower()
        key, _, value = lower.partition("=")
        duration = _DURATION.fullmatch(lower)
        try:
            if word.endswith("%"):
                body["rate"] = float(word[:-1]) / 100
            elif lower in ERRORS:
                body["error"] = lower
            elif key == "latency" and value:
                body["latency_ms"] = float(value.removesuffix("ms"))
            elif key == "seed" and value:
                body["seed"] = int(value)
            elif duration is not None:
                number, unit = float(duration.group(1)), duration.group(2)
                if unit == "ms":
                    body["latency_ms"] = number
                else:
                    body["seconds"] = number * (60 if unit == "m" else 1)
            elif word[:1].isupper():
                body["operations"] = [w for w in word.split(",") if w]
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{word!r}: a fault takes a rate (20%), a duration (6s, 2m), an error "
                f"({', '.join(ERRORS)}), latency=MS, seed=N and AWS operation names (ModifyRule,UpdateService)"
            ) from None
    return body


def fault_line(rule: dict[str, Any]) -> str:
    """One active fault rule as the console lists it."""
    what = rule["service"] + (" " + ",".join(rule["operations"]) if rule["operations"] else "")
    left = rule["remaining_seconds"]
    until = "until cleared" if left is None else f"{left:.0f}s left of {rule['seconds']:g}s"
    latency = f", +{rule['latency_ms']:g}ms" if rule["latency_ms"] else ""
    return (
        f"fault {rule['id']}: {what} {rule['rate'] * 100:g}% {rule['error']}{latency}, {until}, "
        f"seed {rule['seed']} — failed {rule['failed']}, passed {rule['passed']}"
    )


# ------------------------------------------------------------------------------------------------ flags

_FLAG_USAGE = (
    "inject flag KEY VARIANT error_rate=0.2 latency_ms=400 [env=ENV], or inject flag KEY [VARIANT] clear"
    " [env=ENV]"
)


def flag_injection_from_words(words: list[str]) -> dict[str, Any]:
    """The words after `inject flag` as a flag injection (bot.sandbox.flag_traffic checks it):
    `checkout-v2 on error_rate=0.2 latency_ms=400`, `checkout-v2 on errors=20% env=staging`,
    `checkout-v2 clear`."""
    if not words:
        raise ValueError(_FLAG_USAGE)
    body: dict[str, Any] = {"flag": words[0]}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        key = key.lower()
        try:
            if not eq and key == "clear":
                body["clear"] = True
            elif not eq and "variant" not in body:
                body["variant"] = word
            elif key in ("error_rate", "errors") and value:
                body["error_rate"] = float(value[:-1]) / 100 if value.endswith("%") else float(value)
            elif key in ("latency_ms", "latency") and value:
                body["latency_ms"] = float(value.lower().removesuffix("ms"))
            elif key == "env" and value:
                body["env"] = value
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{word!r}: {_FLAG_USAGE}") from None
    return body


def injection_line(injection: dict[str, Any]) -> str:
    where = injection["env"] or "every environment"
    return (
        f"flag {injection['flag']} {injection['variant']} in {where}: {injection['error_rate'] * 100:g}% "
        f"errors, {injection['latency_ms']:g} ms"
    )


def flag_lines(view: dict[str, Any]) -> list[str]:
    """GET /_sandbox/flags as the console prints it: a line per environment and flag, the injections, and
    how many of the simulator's OFREP requests were answered 304 (nothing changed)."""
    lines = []
    for env, state in view["environments"].items():
        head = f"{env}: {state['evaluated']} of {state['users']} users evaluated"
        if state.get("inferred"):
            head += f" ({state['inferred']} by another's context-free answer)"
        if state["waiting"]:
            head += f", {state['waiting']} waiting"
        if state["refused"]:
            head += f" (the bot refuses its key: HTTP {state['refused']})"
        lines.append(head)
        for flag, seen in state["flags"].items():
            shares = ", ".join(f"{v} {share * 100:.1f}%" for v, share in seen["shares"].items())
            errors = ", ".join(f"{code} {n}" for code, n in seen["errors"].items())
            lines.append(f"  {flag}: {shares}" + (f" (errors: {errors})" if errors else ""))
    lines += [injection_line(i) for i in view["injections"]] or ["no flag injections"]
    stats = view["stats"]
    if stats["requests"]:
        lines.append(
            f"OFREP: {stats['requests']} requests, {stats['not_modified']} answered 304 "
            f"({stats['not_modified'] / stats['requests'] * 100:.0f}%)"
            + ("" if view["bot_answering"] else "; the bot does not answer now")
        )
    return lines
