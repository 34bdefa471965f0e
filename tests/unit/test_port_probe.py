"""Probing a service's port while it starts: for a port in the kernel's ephemeral range
(one set by hand; `free_port` picks below it), enough probes of it while nothing listens draw
it as their own source port and connect to themselves. That must read as closed and leave
the port free for the service to bind. And the ports `free_port` hands out lie below that
range, where no outgoing connection takes them before their service binds."""

from __future__ import annotations

import socket
from pathlib import Path

from vigil.services.process import free_port, port_open

# More probes than the ephemeral range holds ports (32768-60999 here): one of them is drawn.
PROBES = 30_000


def test_a_port_nothing_listens_on_never_reads_open_and_stays_bindable() -> None:
    with socket.socket() as sock:  # a port in the ephemeral range, as the kernel gives one
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    port -= port % 2  # connect() draws even source ports first

    answered = sum(port_open("127.0.0.1", port) for _ in range(PROBES))

    assert answered == 0, "a probe that connected to itself was taken for a listener"
    with socket.socket() as listener:  # no TIME_WAIT left on the port (the broker's bind)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert port_open("127.0.0.1", port)


def test_free_ports_lie_below_the_ephemeral_range_and_are_not_handed_out_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(1024 <= port < low for port in ports), "no outgoing connection may draw them"
    assert len(set(ports)) == len(ports)
    for port in ports:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))
