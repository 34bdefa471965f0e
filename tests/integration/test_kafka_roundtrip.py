from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from vigil.kafka import broker_answers, ensure_topics, producer, topic_partitions
from vigil.settings import TOPICS, Settings


def test_topics_exist_with_the_configured_partitions(stack: Settings) -> None:
    assert broker_answers(stack.kafka_bootstrap)
    partitions = topic_partitions(stack.kafka_bootstrap)
    for topic in TOPICS:
        assert partitions[topic] == stack.kafka_partitions


@pytest.mark.parametrize("topic", TOPICS)
def test_a_produced_message_is_consumed_back(stack: Settings, topic: str) -> None:
    payload = f'{{"probe": "{uuid.uuid4()}"}}'.encode()
    delivered: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered.append(msg)

    p = producer(stack.kafka_bootstrap)
    p.produce(topic, value=payload, key=b"probe-key", on_delivery=on_delivery)
    assert p.flush(15) == 0
    (sent,) = delivered
    partition, offset = sent.partition(), sent.offset()
    assert partition is not None and offset is not None

    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": "test-probe",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        got = consumer.poll(15)
        assert got is not None and got.error() is None
        assert (got.value(), got.key(), got.offset()) == (payload, b"probe-key", offset)
    finally:
        consumer.close()


def test_ensure_topics_is_idempotent_and_grows_partitions(stack: Settings) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(stack.kafka_bootstrap, [name], 2) == [name]
    assert ensure_topics(stack.kafka_bootstrap, [name], 2) == []
    assert ensure_topics(stack.kafka_bootstrap, [name], 4) == [name]
    assert topic_partitions(stack.kafka_bootstrap)[name] == 4
    assert ensure_topics(stack.kafka_bootstrap, [name], 1) == []  # never shrinks
