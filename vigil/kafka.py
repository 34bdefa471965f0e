"""Kafka topics and clients: the only module that builds confluent-kafka configurations."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

# librdkafka logs every failed connect attempt to stderr; a health probe expects failures.
_QUIET = {"log_level": 0, "logger": lambda *_: None}


def admin(bootstrap: str, **extra: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **extra})


def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a broker answers a metadata request."""
    try:
        metadata = admin(bootstrap, **_QUIET).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def topic_partitions(bootstrap: str, timeout: float = 10.0) -> dict[str, int]:
    metadata = admin(bootstrap).list_topics(timeout=timeout)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()
            if not name.startswith("__")}


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int,
                  timeout: float = 30.0) -> list[str]:
    """Create missing topics and grow ones with fewer partitions; returns what changed.

    Partitions are never removed (Kafka cannot), so a smaller count leaves a topic as it is.
    """
    client = admin(bootstrap)
    existing = topic_partitions(bootstrap, timeout)
    missing = [NewTopic(t, num_partitions=partitions, replication_factor=1)
               for t in topics if t not in existing]
    grow = [NewPartitions(t, partitions) for t in topics
            if t in existing and existing[t] < partitions]
    changed: list[str] = []
    if missing:
        for name, future in client.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result()
                changed.append(name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a racing creator won
                    raise
    if grow:
        for name, future in client.create_partitions(grow).items():
            future.result()
            changed.append(name)
    if changed:
        _wait_for_leaders(client, changed, timeout)
    return changed


def _wait_for_leaders(client: AdminClient, topics: list[str], timeout: float) -> None:
    """New partitions answer 'not leader' until the controller has placed them."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metadata = client.list_topics(timeout=timeout)
        if all(t in metadata.topics and metadata.topics[t].partitions and
               all(p.leader >= 0 for p in metadata.topics[t].partitions.values())
               for t in topics):
            return
        time.sleep(0.1)


def producer(bootstrap: str, **extra: Any) -> Producer:
    """An idempotent producer: retries after a broker hiccup never duplicate a message."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # Client notices (e.g. a retried PID request while the broker warms up) go to
        # Python logging rather than straight to stderr.
        "logger": logging.getLogger("vigil.kafka.client"),
        "enable.idempotence": True,
        "linger.ms": 20,
        "compression.type": "zstd",
        **extra,
    }
    return Producer(config)


def topic_watermarks(bootstrap: str, topics: Iterable[str], timeout: float = 10.0
                     ) -> dict[str, dict[int, tuple[int, int]]]:
    """{topic: {partition: (low, high)}} through one client, without joining a group.

    A topic the broker does not have maps to no partitions.
    """
    import time

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "vigil-watermarks",
                         "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                metadata = consumer.list_topics(timeout=timeout)
                out: dict[str, dict[int, tuple[int, int]]] = {}
                for topic in topics:
                    found = metadata.topics.get(topic)
                    out[topic] = {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                                    timeout=timeout)
                                  for p in sorted(found.partitions if found else ())}
                return out
            except KafkaException as exc:
                # Leadership moves (a new topic, a restarted broker) are retriable.
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def watermarks(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} of one topic."""
    return topic_watermarks(bootstrap, [topic], timeout)[topic]


@dataclass
class RecordBatch:
    """Consecutive records of one partition, with their coordinates as arrays."""

    topic: str
    partition: int
    messages: list[Message]
    values: list[bytes | None]
    offsets: np.ndarray  # int64
    timestamps: np.ndarray  # int64 epoch milliseconds, -1 when the broker gave none


class RangeReader:
    """Reads exact [start, end) offset ranges, one partition at a time, in batches.

    Reading a partition alone means every record of a batch shares its topic and partition,
    and offsets can be rebuilt without a call per record when a batch has no gaps. A range
    ends when the position reaches `end` — offsets may have gaps (transaction markers,
    compaction), so records are never counted. Uncommitted and aborted transactional
    records are skipped (read_committed).
    """

    def __init__(self, bootstrap: str, batch: int = 10_000, idle_timeout: float = 10.0,
                 **extra: Any) -> None:
        from confluent_kafka import Consumer

        self.batch = batch
        self.idle_timeout = idle_timeout
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": "vigil-range-reader",
            "enable.auto.commit": False, "enable.partition.eof": False,
            "isolation.level": "read_committed",
            "fetch.queue.backoff.ms": 10,  # the default 1 s stalls a batch reader (DESIGN.md)
            "queued.max.messages.kbytes": 262_144,
            # A fetch long-poll would hold the next partition back after a re-assign.
            "fetch.wait.max.ms": 20,
            **extra})
        self._known_topics: set[str] = set()

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def read(self, topic: str, partition: int, start: int, end: int
             ) -> Iterator[RecordBatch]:
        import time

        from confluent_kafka import TopicPartition

        if end <= start:
            return
        consumer = self.consumer
        if topic not in self._known_topics:
            # Assigning a partition of a topic the client has no metadata for stalls the
            # first fetch ~1 s (measured); asking for the topic's metadata first does not.
            consumer.list_topics(topic, timeout=self.idle_timeout)
            self._known_topics.add(topic)
        consumer.assign([TopicPartition(topic, partition, start)])
        try:
            last_progress = time.monotonic()
            next_offset = start
            while True:
                # Ask for no more than the range still holds: consume() returns as soon as
                # that many arrived instead of waiting out its timeout for a full batch.
                want = max(1, min(self.batch, end - next_offset))
                messages = consumer.consume(want, timeout=0.5)
                if messages:
                    last_progress = time.monotonic()
                    for msg in messages:
                        if msg.error() is not None:
                            raise KafkaException(msg.error())
                    batch = _record_batch(topic, partition, messages, end)
                    if batch.messages:
                        yield batch
                    next_offset = (messages[-1].offset() or 0) + 1
                    if next_offset >= end:
                        return
                    continue
                (position,) = consumer.position([TopicPartition(topic, partition)])
                if position.offset >= end:  # only markers or aborted records were left
                    return
                if time.monotonic() - last_progress > self.idle_timeout:
                    raise TimeoutError(f"no progress reading {topic}[{partition}] at "
                                       f"{position.offset} (range ends at {end}) for "
                                       f"{self.idle_timeout:.0f} s")
        finally:
            consumer.unassign()


def _record_batch(topic: str, partition: int, messages: list[Message], end: int
                  ) -> RecordBatch:
    n = len(messages)
    first, last = messages[0].offset() or 0, messages[-1].offset() or 0
    if last - first + 1 == n:  # no gaps: offsets without a call per record
        offsets = np.arange(first, last + 1, dtype=np.int64)
    else:
        offsets = np.fromiter((m.offset() for m in messages), np.int64, n)
    if last >= end:  # the final batch may run past the range
        keep = int(np.searchsorted(offsets, end))
        messages, offsets = messages[:keep], offsets[:keep]
        n = keep
    values = [m.value() for m in messages]
    timestamps = np.fromiter((m.timestamp()[1] for m in messages), np.int64, n)
    return RecordBatch(topic, partition, messages, values, offsets, timestamps)


def read_ranges(bootstrap: str, ranges: dict[tuple[str, int], tuple[int, int]],
                batch: int = 10_000, idle_timeout: float = 10.0,
                **extra: Any) -> Iterator[list[Message]]:
    """Messages of exactly [start, end) per (topic, partition), in batches."""
    with RangeReader(bootstrap, batch, idle_timeout, **extra) as reader:
        for (topic, partition), (start, end) in sorted(ranges.items()):
            for record_batch in reader.read(topic, partition, start, end):
                yield record_batch.messages


def _group_consumer(bootstrap: str, group: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False})


def _committed(consumer: Any, partitions: Iterable[tuple[str, int]], timeout: float
               ) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    found = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout)
    return {(tp.topic, tp.partition): tp.offset for tp in found}


def committed_offsets(bootstrap: str, group: str, partitions: Iterable[tuple[str, int]],
                      timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """The group's committed next offsets (-1 where it has none)."""
    consumer = _group_consumer(bootstrap, group)
    try:
        return _committed(consumer, partitions, timeout)
    finally:
        consumer.close()


def commit_landed(bootstrap: str, group: str, ends: dict[tuple[str, int], int],
                  timeout: float = 10.0) -> None:
    """Record landed offsets under `group` so standard Kafka lag tools see vigil's progress.

    Only ever moves forward: re-executing an old run must not rewind the group.
    """
    from confluent_kafka import TopicPartition

    consumer = _group_consumer(bootstrap, group)
    try:
        current = _committed(consumer, ends, timeout)
        forward = [TopicPartition(t, p, end) for (t, p), end in ends.items()
                   if end > current.get((t, p), -1)]
        if forward:
            consumer.commit(offsets=forward, asynchronous=False)
    finally:
        consumer.close()


def high_watermarks(bootstrap: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """{(topic, partition): high watermark} for every partition of `topics`."""
    return {(topic, partition): high
            for topic, partitions in topic_watermarks(bootstrap, topics).items()
            for partition, (_low, high) in partitions.items()}
