"""The domain's errors, each with words fit for the person who caused it: an unknown id, a conflicting change, a refusal and a missing role."""

from __future__ import annotations

from bot.domain.machine import State


class NotFound(KeyError):
    """A deployment (or alert) id that names nothing: a clear answer for the user, never a 500."""

    def __init__(self, what: str, ident: object):
        self.what, self.ident = what, ident
        super().__init__(f"There is no {what} #{ident}.")

    def __str__(self) -> str:
        return str(self.args[0])


class Conflict(Exception):
    """A state change lost a race, or asked for a move the machine does not allow."""

    def __init__(self, message: str, state: State | None = None):
        self.state = state
        super().__init__(message)


class Refused(Exception):
    """A request that cannot be carried out, with a message saying why and what to do instead."""


class Forbidden(Refused):
    """The person lacks the role the environment requires for the action (recorded in the audit)."""

    def __init__(self, message: str, action: str, env: str):
        self.action, self.env = action, env
        super().__init__(message)
