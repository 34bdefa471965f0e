"""Send events to Kafka: synthetic streams (`vigil produce`) and the shared send loop.

Delivery is at-least-once from the client's side and counted: the idempotent producer
retries transient errors itself, a full local queue is waited out (never dropped), and a
message the client finally gives up on is reported through a delivery callback that fires
for failures only — successful sends cost no Python callback.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, Message, Producer

from vigil.events import encode_batch, encode_keys, event_type
from vigil.generate import Label, SyntheticStream
from vigil.kafka import producer

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    queued: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # error text -> count
    seconds: float = 0.0

    @property
    def delivered(self) -> Counter[str]:
        return Counter({t: self.queued[t] - self.failed[t] for t in self.queued})

    def total(self, counter: Counter[str]) -> int:
        return sum(counter.values())

    def summary(self) -> str:
        lines = [f"{'topic':<14} {'sent':>10} {'failed':>8}"]
        for topic in sorted(self.queued):
            lines.append(f"{topic:<14} {self.delivered[topic]:>10,} {self.failed[topic]:>8,}")
        rate = self.total(self.delivered) / self.seconds if self.seconds else 0.0
        lines.append(f"{'total':<14} {self.total(self.delivered):>10,} "
                     f"{self.total(self.failed):>8,}   in {self.seconds:.1f} s "
                     f"({rate:,.0f} events/s)")
        for error, count in self.errors.most_common(5):
            lines.append(f"  {count:,} x {error}")
        return "\n".join(lines)


class EventSender:
    """One producer, many batches; counts what was queued and what failed, per topic."""

    def __init__(self, bootstrap: str, **config: Any) -> None:
        self.report = DeliveryReport()
        settings: dict[str, Any] = {
            "delivery.report.only.error": True,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": 120_000,
            "on_delivery": self._on_failure,
            **config,
        }
        self.producer: Producer = producer(bootstrap, **settings)

    def _on_failure(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            topic = msg.topic() or "?"
            self.report.failed[topic] += 1
            self.report.errors[err.str()] += 1

    def send(self, topic: str, values: list[bytes], keys: Iterable[bytes | None]) -> None:
        produce, poll = self.producer.produce, self.producer.poll
        for value, key in zip(values, keys, strict=True):
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # local queue full: let the client drain, then retry
                    poll(0.05)
        self.report.queued[topic] += len(values)
        poll(0)

    def flush(self, timeout: float = 120.0) -> int:
        """Wait for every queued message; returns how many are still undelivered."""
        remaining: int = self.producer.flush(timeout)
        return remaining


class ProgressLine:
    """A one-line progress display on a terminal; periodic log lines otherwise."""

    def __init__(self, stream: IO[str], total: int | None, interactive: bool) -> None:
        self.stream, self.total, self.interactive = stream, total, interactive
        self.started = time.monotonic()
        self.last = 0.0

    def update(self, done: int, sent: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.interactive else 10.0):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        if self.total:
            width = 24
            filled = int(width * done / self.total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {100 * done / self.total:5.1f}% "
        else:
            bar = f"{done:,} s of event time "
        line = (f"{bar}sent {sent:,} ({sent / elapsed:,.0f}/s) failed {failed:,} "
                f"elapsed {elapsed:,.0f} s")
        if self.interactive:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def produce_stream(sender: EventSender, stream: SyntheticStream, topics: list[str],
                   seconds: int | None, speed: float | None,
                   on_labels: Callable[[list[Label]], None],
                   progress: ProgressLine | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> DeliveryReport:
    """Send slices 0..seconds-1 (forever when None), paced at `speed` x real time."""
    started = time.monotonic()
    kinds = {topic: event_type(topic) for topic in topics}
    cycles_seen: set[int] = set()
    k = 0
    while (seconds is None or k < seconds) and not should_stop():
        cycle = stream.cycle_of(k)
        if cycle not in cycles_seen:
            cycles_seen.add(cycle)
            on_labels([label for label in stream.labels(cycle) if label.topic in kinds])
        if speed is not None:
            delay = started + k / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for topic, kind in kinds.items():
            table = stream.slice(topic, k)
            if table.num_rows:
                sender.send(topic, encode_batch(table, kind), encode_keys(table, kind))
        k += 1
        if progress is not None:
            report = sender.report
            progress.update(k, report.total(report.queued), report.total(report.failed))
    undelivered = sender.flush()
    if undelivered:
        log.warning("%d messages were still undelivered at the end", undelivered)
    sender.report.seconds = time.monotonic() - started
    if progress is not None:
        report = sender.report
        progress.update(k, report.total(report.delivered), report.total(report.failed),
                        force=True)
        progress.close()
    return sender.report


class LabelWriter:
    """Ground-truth labels as JSON lines, appended as each scenario cycle begins."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def __call__(self, labels: list[Label]) -> None:
        self.count += len(labels)
        if self.path is None or not labels:
            return
        with self.path.open("a") as out:
            for label in labels:
                out.write(json.dumps(label.to_json()) + "\n")
