"""Delivery failures are counted per topic, never silently dropped."""

from __future__ import annotations

from vigil.produce import EventSender
from vigil.services.process import free_port


def test_undeliverable_messages_are_counted_with_the_error() -> None:
    # Nothing listens on this port: every message times out in the client.
    sender = EventSender(f"127.0.0.1:{free_port()}", **{"message.timeout.ms": 1500,
                                                       "enable.idempotence": False})
    sender.send("logs", [b'{"a": 1}'] * 7, [b"k"] * 7)
    sender.send("metrics", [b'{"b": 2}'] * 3, [None] * 3)
    assert sender.flush(30) == 0
    report = sender.report
    assert report.queued == {"logs": 7, "metrics": 3}
    assert report.failed == {"logs": 7, "metrics": 3}
    assert report.total(report.delivered) == 0
    assert sum(report.errors.values()) == 10
    total_line = next(line for line in report.summary().splitlines()
                      if line.startswith("total"))
    assert total_line.split()[1:3] == ["0", "10"]  # sent, failed
