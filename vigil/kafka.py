"""Kafka topics and clients: the only module that builds confluent-kafka configurations."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

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
    return changed


def producer(bootstrap: str, **extra: Any) -> Producer:
    """An idempotent producer: retries after a broker hiccup never duplicate a message."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 20,
        "compression.type": "zstd",
        **extra,
    }
    return Producer(config)


def watermarks(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} read from the broker, without joining a consumer group."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "vigil-watermarks",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = sorted(metadata.topics[topic].partitions)
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                for p in partitions}
    finally:
        consumer.close()


def read_ranges(bootstrap: str, ranges: dict[tuple[str, int], tuple[int, int]],
                batch: int = 10_000, idle_timeout: float = 10.0,
                **extra: Any) -> Iterator[list[Message]]:
    """Messages of exactly [start, end) per (topic, partition), in batches.

    Stops per partition when its position reaches `end` — offsets may have gaps
    (transaction markers, compaction), so messages are never counted. Raises TimeoutError if
    no progress is made for `idle_timeout` seconds while ranges remain unfinished.
    """
    import time

    from confluent_kafka import Consumer, TopicPartition

    pending = {key: rng for key, rng in ranges.items() if rng[1] > rng[0]}
    if not pending:
        return
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "vigil-range-reader",
        "enable.auto.commit": False, "enable.partition.eof": False,
        "isolation.level": "read_committed",
        "fetch.queue.backoff.ms": 10,  # the default 1 s stalls a batch reader (DESIGN.md)
        **extra})
    try:
        consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _end) in
                         pending.items()])
        last_progress = time.monotonic()
        while pending:
            messages = consumer.consume(batch, timeout=0.5)
            keep: list[Message] = []
            for msg in messages:
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                key = (msg.topic() or "", msg.partition() or 0)
                window = pending.get(key)
                offset = msg.offset()
                if window is None or offset is None or offset >= window[1]:
                    continue
                keep.append(msg)
                if offset + 1 >= window[1]:
                    del pending[key]
            if keep:
                last_progress = time.monotonic()
                yield keep
            if pending and not messages:
                positions = consumer.position([TopicPartition(t, p) for t, p in pending])
                for tp in positions:
                    if tp.offset >= pending[(tp.topic, tp.partition)][1]:
                        del pending[(tp.topic, tp.partition)]
                if time.monotonic() - last_progress > idle_timeout and pending:
                    raise TimeoutError(f"no progress reading {sorted(pending)} for "
                                       f"{idle_timeout:.0f} s")
    finally:
        consumer.close()
