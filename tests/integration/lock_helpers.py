"""A detection run while another session holds the detection lock (tests of what a
detection does before, and while, it waits for its turn)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from vigil.detect.hours import DETECTION_LOCK


@dataclass
class Held:
    holder: psycopg.Connection[Any]
    worker: threading.Thread
    outcome: dict[str, Any] = field(default_factory=dict)

    def waiting(self) -> bool:
        """Whether a session of this database waits for an advisory lock."""
        row = self.holder.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        return bool(row and row[0])


@contextmanager
def detection_behind_the_lock(url: str, detection: Callable[[psycopg.Connection[Any]], Any],
                              join_seconds: float = 300) -> Iterator[Held]:
    """`detection` runs on its own connection in a thread while another session holds the
    detection lock; leaving the block frees the lock and joins the thread (its return value
    is then `outcome["result"]`)."""
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (DETECTION_LOCK,))
        held = Held(holder, threading.Thread(target=lambda: _run(url, detection, held)))
        held.worker.start()
        try:
            yield held
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (DETECTION_LOCK,))
            held.worker.join(timeout=join_seconds)


def _run(url: str, detection: Callable[[psycopg.Connection[Any]], Any], held: Held) -> None:
    with psycopg.connect(url) as conn:
        held.outcome["result"] = detection(conn)


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()
