"""Unit tests of bot/domain, bot/config and bot/app: no moto, no network, seconds. A test here that opens
a socket fails loudly (the event loop's own socketpair is not a connection)."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a unit test tried to use the network; it belongs in the scenario tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
