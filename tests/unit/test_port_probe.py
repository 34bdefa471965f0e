"""Probing a service's port while it starts: the ports lie in the kernel's ephemeral range,
so enough probes of a port nothing listens on draw it as their own source port and connect
to themselves. That must read as closed and leave the port free for the service to bind."""

from __future__ import annotations

import socket

from vigil.services.process import free_port, port_open

# More probes than the ephemeral range holds ports (32768-60999 here): one of them is drawn.
PROBES = 30_000


def test_a_port_nothing_listens_on_never_reads_open_and_stays_bindable() -> None:
    port = free_port()
    port -= port % 2  # connect() draws even source ports first

    answered = sum(port_open("127.0.0.1", port) for _ in range(PROBES))

    assert answered == 0, "a probe that connected to itself was taken for a listener"
    with socket.socket() as listener:  # no TIME_WAIT left on the port (the broker's bind)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert port_open("127.0.0.1", port)
