"""A batch's past is read only for the entities that may fire in it (and only the rows its
rules' `where` keeps), from Parquet files on disk; firings equal a whole read's."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from tests.unit.detect.test_carry import RULES, at, same
from vigil.detect import reads
from vigil.detect.engine import Reader, decided_firings, epoch_us, firings, to_frame
from vigil.detect.frames import TopicFrame
from vigil.detect.hours import listed
from vigil.detect.reads import TopicReads, read_columns, share_key
from vigil.detect.rules import Condition, Rule
from vigil.lake import Lake, file_name, hour_dir, raw_schema

DEFAULTS: dict[str, dict[str, Any]] = {
    "logs": {"service": "api", "host": "h1", "level": "INFO", "message": "ok",
             "user_id": None},
    "metrics": {"service": "api", "host": "h1", "cpu_percent": 20.0},
    "transactions": {"user_id": "u0", "amount": 10.0, "currency": "EUR", "merchant_id": "m1",
                     "country": "DE", "payment_method": "card", "status": "approved"},
}


def land(lake: Lake, topic: str, rows: list[dict[str, Any]]) -> None:
    """The rows as landed files of partition 0: one file per minute of event time."""
    frame = pd.DataFrame([{**DEFAULTS[topic], **row} for row in rows])
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    if topic == "transactions":
        frame["transaction_id"] = frame["event_id"]
    frame["_partition"], frame["_offset"] = 0, np.arange(len(frame))
    frame["_ingested_at"] = frame["_kafka_timestamp"] = frame["timestamp"]
    schema = raw_schema(topic)
    frame = frame.reindex(columns=schema.names)  # the optional fields left empty
    minute = frame["timestamp"].dt.floor("1min")
    for _, part in frame.groupby(minute, sort=True):
        table = pa.Table.from_pandas(part, schema=schema, preserve_index=False)
        first = int(part["_offset"].iloc[0])
        hour = part["timestamp"].iloc[0].floor("1h").to_pydatetime()
        lake.write(f"{hour_dir('raw', topic, hour)}/{file_name(topic, 0, first)}", table)


def detected(lake: Lake, rules: list[Rule], since: datetime, end: datetime
             ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(what with_past gives the rules, each rule's decided firings), with the firings
    checked against detecting the whole look-back."""
    topic = rules[0].topic
    lookback = max(r.lookback for r in rules)
    read = TopicReads(lake, {topic: (since - timedelta(seconds=lookback), end)})
    frame = read.with_past(rules, read.table(rules, since, end), since, since)

    def reader(rule: Rule) -> Reader:
        def narrowed(start: datetime, only: pd.DataFrame) -> pd.DataFrame:
            return to_frame(read.narrowed([rule], start, end, listed(only)))
        return narrowed

    whole = to_frame(lake.read_events(topic, since - timedelta(seconds=lookback), end,
                                      read_columns(rules), dictionary=True))
    fired = {}
    for rule in rules:
        fired[rule.name] = decided_firings(rule, TopicFrame(frame), reader(rule), since)
        expected = firings(rule, TopicFrame(whole))
        assert same(fired[rule.name], expected[expected["t"] >= epoch_us(since)]), rule.name
    return frame, fired


def past(frame: pd.DataFrame, since: datetime) -> pd.DataFrame:
    return frame[frame["timestamp"] < pd.Timestamp(since)]


@pytest.mark.parametrize("limit", [reads.NARROW_LIMIT, 0], ids=["narrowed", "whole-past"])
def test_the_past_is_read_for_users_in_the_batch_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    monkeypatch.setattr(reads, "NARROW_LIMIT", limit)  # 0: too many entities, read it whole
    rule = RULES["rapid_transactions"]  # 11 in 5 minutes
    rows = [{"timestamp": at(60 + 20 * i), "user_id": "u-burst"} for i in range(8)]
    rows += [{"timestamp": at(300 + 5 * i), "user_id": "u-burst"} for i in range(4)]
    rows += [{"timestamp": at(30 + 10 * i), "user_id": "u-gone"} for i in range(20)]
    rows += [{"timestamp": at(305), "user_id": "u-new"}]
    rows += [{"timestamp": at(i), "user_id": f"u{i % 50}"} for i in range(0, 290, 3)]
    lake = Lake(tmp_path.as_uri())
    land(lake, "transactions", rows)
    since = at(300)
    frame, fired = detected(lake, [rule], since, at(330))
    assert set(fired[rule.name]["user_id"]) == {"u-burst"}
    users = set(past(frame, since)["user_id"])
    if limit:
        assert users == {"u-burst"}  # u-new has no past; u-gone and the rest are not read
    else:
        assert {"u-burst", "u-gone", "u0"} <= users


def test_only_hosts_hot_in_the_batch_have_their_past_read(tmp_path: Path) -> None:
    sharing = [r for r in RULES.values() if r.topic == "metrics" and r.enabled
               and share_key(r) == share_key(RULES["cpu_sustained"])]
    assert {"cpu_sustained", "latency_high"} <= {r.name for r in sharing}
    rows = [{"timestamp": at(s), "host": "h-hot", "cpu_percent": 95.0} for s in range(0, 620, 10)]
    rows += [{"timestamp": at(s), "host": "h-cooled", "cpu_percent": 95.0 if s < 590 else 20.0}
             for s in range(0, 620, 10)]
    rows += [{"timestamp": at(s), "host": "h-slow", "cpu_percent": 20.0, "latency_ms": 3000.0}
             for s in range(0, 620, 10)]
    lake = Lake(tmp_path.as_uri())
    land(lake, "metrics", rows)
    since = at(600)
    frame, fired = detected(lake, [r for r in sharing if not r.forest], since, at(620))
    assert set(fired["cpu_sustained"]["host"]) == {"h-hot"}
    assert set(fired["latency_high"]["host"]) == {"h-slow"}  # a threshold needs no past
    assert set(past(frame, since)["host"]) == {"h-hot"}


def test_a_where_pushed_down_reads_only_the_rows_it_keeps(tmp_path: Path) -> None:
    rule = RULES["error_spike"]  # ERROR or CRITICAL, 20 in 3 minutes per service
    rows = [{"timestamp": at(100 + 3 * i), "service": "api", "level": "ERROR"}
            for i in range(19)]
    rows += [{"timestamp": at(50 + i), "service": s, "level": "INFO"}
             for i in range(120) for s in ("api", "web")]
    rows += [{"timestamp": at(150), "service": "web", "level": "ERROR"}]
    rows += [{"timestamp": at(181), "service": "api", "level": "CRITICAL"},
             {"timestamp": at(182), "service": "web", "level": "INFO"}]
    lake = Lake(tmp_path.as_uri())
    land(lake, "logs", rows)
    since = at(180)
    frame, fired = detected(lake, [rule], since, at(190))
    assert set(fired[rule.name]["service"]) == {"api"}
    before = past(frame, since)
    assert set(before["service"]) == {"api"} and set(before["level"]) == {"ERROR"}
    assert len(before) == 19


def test_a_condition_pushed_down_keeps_the_rows_its_mask_keeps() -> None:
    table = pa.table({"level": ["ERROR", "INFO", None, "CRITICAL"],
                      "user_id": ["u1", None, "u2", None]})
    frame = table.to_pandas()
    specs: list[dict[str, Any]] = [{"column": "level", "in": ["ERROR", "CRITICAL"]},
             {"column": "user_id", "not_null": True},
             {"column": "user_id", "not_null": False},
             {"all_of": [{"column": "level", "in": ["INFO"]},
                         {"column": "user_id", "not_null": False}]},
             {"any_of": [{"column": "level", "in": ["INFO"]},
                         {"column": "user_id", "not_null": True}]}]
    for spec in specs:
        condition = Condition(spec)
        expression = condition.expression()
        assert expression is not None, spec
        kept = pads.dataset(table).to_table(filter=expression)
        assert kept.num_rows == int(condition.mask(frame).sum()) and kept.equals(
            table.filter(pa.array(condition.mask(frame)))), spec
    # Not expressible alike (case folding, a regex): never pushed down.
    assert Condition({"column": "message", "contains": "failed"}).expression() is None
    assert Condition({"all_of": [{"column": "level", "in": ["ERROR"]},
                                 {"column": "message", "matches": "x+"}]}).expression() is None
