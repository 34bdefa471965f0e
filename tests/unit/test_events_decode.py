from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pytest

from vigil.events import (
    EVENT_TYPES,
    LOGS,
    METRICS,
    TRANSACTIONS,
    decode_batch,
    encode_batch,
    encode_keys,
)

UTC = dt.UTC


def metric(**over: Any) -> dict[str, Any]:
    base = {"event_id": "e1", "timestamp": "2026-11-24T12:00:00Z", "service": "payments-api",
            "host": "payments-api-1", "cpu_percent": 42.5, "memory_percent": 61.0,
            "latency_ms": 118.2, "requests_per_sec": 250.0, "error_rate": 0.002}
    base.update(over)
    return base


def txn(**over: Any) -> dict[str, Any]:
    base = {"event_id": "t1", "timestamp": "2026-11-24T12:00:00Z", "transaction_id": "tx-1",
            "user_id": "u0000001", "amount": 42.1, "currency": "EUR", "merchant_id": "m-1",
            "country": "DE", "payment_method": "card", "status": "approved"}
    base.update(over)
    return base


def log(**over: Any) -> dict[str, Any]:
    base = {"event_id": "l1", "timestamp": "2026-11-24T12:00:00Z", "service": "auth",
            "host": "auth-1", "level": "INFO", "message": "ok", "user_id": None, "ip": None}
    base.update(over)
    return base


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_good_batch_decodes_to_the_schema_in_order() -> None:
    msgs = [raw(metric(event_id=f"e{i}", cpu_percent=float(i))) for i in range(50)]
    out = decode_batch("metrics", msgs)
    assert out.rejects == []
    assert out.table.schema == METRICS.schema
    assert out.table.column("event_id").to_pylist() == [f"e{i}" for i in range(50)]
    assert out.positions.tolist() == list(range(50))
    assert out.table.column("timestamp").type == pa.timestamp("us", tz="UTC")


def _one_reject(topic: str, bad: bytes, good: list[bytes] | None = None) -> str:
    good = good if good is not None else []
    msgs = [*good[:3], bad, *good[3:]]
    out = decode_batch(topic, msgs)
    assert [r.index for r in out.rejects] == [min(3, len(good))]
    assert out.rejects[0].raw == bad
    assert out.table.num_rows == len(good)
    assert len(out.positions) == len(good)
    assert 3 not in out.positions.tolist() or len(good) < 3
    return out.rejects[0].reason


GOOD_METRICS = [raw(metric(event_id=f"g{i}")) for i in range(40)]


@pytest.mark.parametrize(("bad", "reason"), [
    (b'{"event_id": "x", "cpu_percent": 4', "malformed JSON"),
    (b"not json at all", "malformed JSON"),
    (b"\xff\xfe{}", "not valid UTF-8 (byte 0)"),
    (b"[1, 2, 3]", "not a JSON object (got an array)"),
    (b"42", "not a JSON object (got a number)"),
    (raw(metric(cpu_percent="high")), "field 'cpu_percent': expected a number, got a string"),
    (raw(metric(latency_ms=True)), "field 'latency_ms': expected a number, got a boolean"),
    (raw(metric(host=7)), "field 'host': expected a string, got a number"),
    (raw(metric(timestamp=1764000000000)),
     "field 'timestamp': expected an ISO 8601 time string, got a number"),
    (raw(metric(timestamp="yesterday")),
     "field 'timestamp' must be an ISO 8601 time (got \"yesterday\")"),
    (raw(metric(timestamp="2026-13-45T12:00:00Z")),
     "field 'timestamp' must be an ISO 8601 time (got \"2026-13-45T12:00:00Z\")"),
    (raw(metric()) + b" " + raw(metric()), "more than one JSON value"),
])
def test_malformed_or_mistyped_messages_are_rejected_with_the_field(bad: bytes,
                                                                    reason: str) -> None:
    assert reason in _one_reject("metrics", bad, GOOD_METRICS)


@pytest.mark.parametrize(("bad", "reason"), [
    (raw({k: v for k, v in metric().items() if k != "host"}), "field 'host' is missing or null"),
    (raw(metric(service=None)), "field 'service' is missing or null"),
    (raw(metric(service="   ")), "field 'service' must be a non-empty string"),
    (b'{"event_id":"e","timestamp":"2026-11-24T12:00:00Z","service":"s","host":"h",'
     b'"cpu_percent":NaN,"memory_percent":1,"latency_ms":1,"requests_per_sec":1,"error_rate":0}',
     "field 'cpu_percent' is NaN or infinite"),
    (b'{"event_id":"e","timestamp":"2026-11-24T12:00:00Z","service":"s","host":"h",'
     b'"cpu_percent":1,"memory_percent":1,"latency_ms":Infinity,"requests_per_sec":1,'
     b'"error_rate":0}', "field 'latency_ms' is NaN or infinite"),
    (raw(metric(cpu_percent=140.0)), "field 'cpu_percent' must be a percentage 0-100"),
    (raw(metric(error_rate=-0.1)), "field 'error_rate' must be a fraction 0-1"),
    (raw(metric(timestamp="1970-01-01T00:00:00Z")),
     "field 'timestamp' must be a time between 2000 and 2100"),
])
def test_schema_invalid_values_are_rejected_with_the_field(bad: bytes, reason: str) -> None:
    assert reason in _one_reject("metrics", bad, GOOD_METRICS)


@pytest.mark.parametrize(("obj", "reason"), [
    (txn(currency="euro"), "field 'currency' must be a 3-letter ISO 4217 code"),
    (txn(country="Germany"), "field 'country' must be a 2-letter ISO 3166 code"),
    (txn(status="ok"), "field 'status' must be approved | declined | pending | refunded"),
    (txn(amount=-5), "field 'amount' must be an amount >= 0"),
    (txn(user_id=""), "field 'user_id' must be a non-empty string"),
])
def test_transaction_rules(obj: dict[str, Any], reason: str) -> None:
    good = [raw(txn(event_id=f"t{i}")) for i in range(10)]
    assert reason in _one_reject("transactions", raw(obj), good)


def test_log_level_enumeration_and_nullable_user() -> None:
    out = decode_batch("logs", [raw(log(level="ERROR")), raw(log(level="LOUD")),
                                raw(log(user_id="u1", ip="10.0.0.1"))])
    assert [(r.index, r.reason) for r in out.rejects] == [
        (1, "field 'level' must be DEBUG | INFO | WARNING | ERROR | CRITICAL")]
    assert out.table.column("user_id").to_pylist() == [None, "u1"]
    assert out.positions.tolist() == [0, 2]


@pytest.mark.parametrize("empty", [b"", b"   ", b"\n", None])
def test_empty_messages_are_rejected(empty: bytes | None) -> None:
    out = decode_batch("logs", [raw(log()), empty, raw(log())])
    assert [(r.index, r.reason) for r in out.rejects] == [(1, "empty message")]
    assert out.table.num_rows == 2


def test_timestamps_with_and_without_offsets_become_utc() -> None:
    stamps = ["2026-11-24T12:00:00Z", "2026-11-24T14:00:00+02:00", "2026-11-24T07:00:00-05:00",
              "2026-11-24T12:00:00", "2026-11-24 12:00:00+0000", "2026-11-24T12:00:00.250000Z",
              "2026-11-24T12:00:00.2500009Z"]  # .NET's seven fractional digits
    out = decode_batch("logs", [raw(log(timestamp=t)) for t in stamps])
    assert out.rejects == []
    got = out.table.column("timestamp").to_pylist()
    noon = dt.datetime(2026, 11, 24, 12, tzinfo=UTC)
    quarter = noon + dt.timedelta(milliseconds=250)
    assert got == [noon] * 5 + [quarter, quarter]


def test_unknown_fields_are_dropped_and_pretty_printed_json_is_fine() -> None:
    pretty = json.dumps(log(extra_field={"nested": [1, 2]}, another=1), indent=2).encode()
    assert b"\n" in pretty
    out = decode_batch("logs", [pretty])
    assert out.rejects == []
    assert out.table.column_names == LOGS.names


def test_many_bad_messages_are_isolated_exactly() -> None:
    msgs: list[bytes] = []
    bad_at = set(range(0, 1000, 37)) | {999}
    for i in range(1000):
        msgs.append(b"{broken" if i in bad_at else raw(metric(event_id=f"e{i}")))
    out = decode_batch("metrics", msgs)
    assert sorted(r.index for r in out.rejects) == sorted(bad_at)
    assert out.table.column("event_id").to_pylist() == [
        f"e{i}" for i in range(1000) if i not in bad_at]
    assert out.positions.tolist() == [i for i in range(1000) if i not in bad_at]


def test_all_rejected_batch_yields_an_empty_table_with_the_schema() -> None:
    out = decode_batch("transactions", [b"nope", b"{}"])
    assert out.table.num_rows == 0
    assert out.table.schema == TRANSACTIONS.schema
    assert len(out.rejects) == 2
    assert out.rejects[1].reason == "field 'event_id' is missing or null"


def test_unknown_topic_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown topic 'audit': expected one of logs"):
        decode_batch("audit", [b"{}"])


@pytest.mark.parametrize("topic", list(EVENT_TYPES))
def test_encode_then_decode_round_trips(topic: str) -> None:
    kind = EVENT_TYPES[topic]
    sample = {"logs": log(message='quote " and back\\slash', user_id="u1", trace_id="t"),
              "metrics": metric(region="eu-west-1"),
              "transactions": txn(merchant_category="grocery", ip="1.2.3.4")}[topic]
    decoded = decode_batch(topic, [raw(sample)] * 3).table
    encoded = encode_batch(decoded, kind)
    again = decode_batch(topic, encoded)
    assert again.rejects == []
    assert again.table.equals(decoded)
    assert json.loads(encoded[0])[kind.key] == sample[kind.key]
    assert encode_keys(decoded, kind)[0] == sample[kind.key].encode()


def test_control_characters_are_escaped_by_the_fallback() -> None:
    decoded = decode_batch("logs", [raw(log(message="tab\there\nnewline\x01"))]).table
    encoded = encode_batch(decoded, LOGS)
    assert decode_batch("logs", encoded).table.column("message").to_pylist() == [
        "tab\there\nnewline\x01"]


def test_metrics_need_at_least_one_measurement_but_not_all() -> None:
    only_cpu = {k: v for k, v in metric().items()
                if k not in ("memory_percent", "latency_ms", "requests_per_sec", "error_rate")}
    none = {k: v for k, v in only_cpu.items() if k != "cpu_percent"}
    out = decode_batch("metrics", [raw(only_cpu), raw(none)])
    assert out.table.column("cpu_percent").to_pylist() == [42.5]
    assert out.table.column("latency_ms").to_pylist() == [None]
    assert [r.reason for r in out.rejects] == [
        "no measurement: at least one of cpu_percent, memory_percent, latency_ms, "
        "requests_per_sec, error_rate is required"]
