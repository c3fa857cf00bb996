"""The zygote process (bot/sandbox/zygote.py is the sandbox's side and tells the protocol): import the
bot once, then fork a `deploybot serve` for every start the sandbox asks for."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

MAX_MESSAGE = 1 << 20


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _serve_forks(sock: socket.socket) -> dict[str, Any] | None:
    """The zygote's loop. Returns in a forked child only, with what that child is to run; None in the
    zygote once the sandbox closed the socket."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    children: dict[int, int] = {}  # pid -> its pidfd
    while True:
        for key, _ in sel.select():
            if key.fileobj is not sock:  # a child ended: reap it, and say so
                pid = key.data
                sel.unregister(key.fileobj)
                os.close(children.pop(pid))
                _, status = os.waitpid(pid, 0)
                _emit({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
                continue
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 2)
            if not data:
                return None
            message = json.loads(data)
            if "signal" in message:
                if message["signal"] in children:  # not reaped yet: still that process
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(message["signal"], message["sig"])
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                sel.close()
                for pidfd in children.values():
                    os.close(pidfd)
                sock.close()
                os.dup2(fds[0], 1)
                os.dup2(fds[1], 2)
                for fd in fds:
                    os.close(fd)
                return dict(message["spawn"])
            for fd in fds:
                os.close(fd)
            pidfd = os.pidfd_open(pid)
            children[pid] = pidfd
            sel.register(pidfd, selectors.EVENT_READ, pid)
            _emit({"started": pid})


def _die_with_parent() -> None:
    """SIGTERM here when the sandbox's process dies, even by SIGKILL (as the bot asks for itself)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]))
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:
        return 0
    import bot.__main__  # noqa: F401 - what `python -m bot serve` imports before it serves
    import bot.wiring  # noqa: F401

    _emit({"zygote": "ready"})
    child = _serve_forks(sock)
    if child is None:
        return 0
    # the child: `python -m bot ARGS` with its own environment; its parent is the zygote
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.clear()
    os.environ.update(child["env"])
    os.environ["DEPLOYBOT_PARENT_PID"] = str(os.getppid())
    os.chdir(child["cwd"])
    sys.argv = [str(Path(bot.__main__.__file__)), *child["args"]]
    return bot.__main__.main(child["args"])


if __name__ == "__main__":
    sys.exit(main())
