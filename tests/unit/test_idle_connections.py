"""The SSH connections a closed RemoteHost leaves for the next one: reused only alive, fresh, under
the same key, one user at a time, and never more kept than the cap."""
from __future__ import annotations

import time

from dmf.ssh import IdleConnections


class FakeTransport:
    def __init__(self):
        self.active = True

    def is_active(self) -> bool:
        return self.active


class FakeClient:
    def __init__(self):
        self.transport, self.closed = FakeTransport(), False

    def get_transport(self):
        return self.transport

    def close(self):
        self.closed, self.transport.active = True, False


def test_a_connection_given_back_is_taken_once_and_only_under_its_key():
    idle, client = IdleConnections(), FakeClient()
    idle.give("a", client)
    assert idle.take("b") is None
    assert idle.take("a") is client and not client.closed
    assert idle.take("a") is None  # in use: no second user


def test_a_dropped_or_stale_connection_is_closed_not_reused():
    idle = IdleConnections(max_idle=0.05)
    dropped, stale = FakeClient(), FakeClient()
    idle.give("a", stale)
    time.sleep(0.1)
    idle.give("a", dropped)
    dropped.transport.active = False
    assert idle.take("a") is None
    assert dropped.closed and stale.closed


def test_a_connection_closed_by_its_user_is_not_kept_and_the_surplus_is_closed():
    idle = IdleConnections(per_key=2)
    gone = FakeClient()
    gone.close()
    idle.give("a", gone)
    assert idle.take("a") is None
    clients = [FakeClient() for _ in range(3)]
    for client in clients:
        idle.give("a", client)
    assert clients[0].closed and not any(c.closed for c in clients[1:])
    assert {idle.take("a"), idle.take("a"), idle.take("a")} == {clients[1], clients[2], None}
