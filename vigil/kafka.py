"""Kafka topics and clients: the only module that builds confluent-kafka configurations."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer
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
