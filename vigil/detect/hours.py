"""Detect whole hours from the lake: read H plus the rules' look-back, run the engine,
replace H's anomalies in Postgres. The lake is the source of truth: any hour can be
recomputed from it alone (backfills, scheduled reprocessing, the ingest run's own hours)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from vigil.detect.engine import DETECTOR, detect, lookback_seconds
from vigil.detect.rules import Rule
from vigil.events import TIMESTAMP
from vigil.lake import Lake, floor_hour
from vigil.store import anomaly_rows, replace_hour


@dataclass(frozen=True)
class HourResult:
    hour: datetime
    events: int
    anomalies: int
    written: int
    removed: int
    by_rule: dict[str, int]


def rule_details(rule: Rule) -> dict[str, Any]:
    """The limits a rule fired against, stored with each anomaly's metrics."""
    details: dict[str, Any] = {}
    for name in ("threshold", "window", "duration", "ratio", "min_count"):
        value = getattr(rule, name)
        if value:
            details[name] = value
    return details


def detect_hour(lake: Lake, rules: list[Rule], conn: psycopg.Connection[Any],
                hour: datetime) -> HourResult:
    hour = floor_hour(hour)
    end = hour + timedelta(hours=1)
    start = hour - timedelta(seconds=lookback_seconds(rules))
    frames: dict[str, pd.DataFrame] = {}
    events = 0
    for topic in sorted({r.topic for r in rules}):
        columns = sorted(set().union(*(r.columns() for r in rules if r.topic == topic))
                         | {"_partition", "_offset"})
        table = lake.read_events(topic, start, end, columns=columns)
        frames[topic] = table.to_pandas()
        in_hour = pc.greater_equal(table.column("timestamp"), pa.scalar(hour, TIMESTAMP))
        events += int(pc.sum(in_hour).as_py() or 0)
    found = detect(rules, frames, hour, end)
    rows = anomaly_rows(found, hour, {r.name: rule_details(r) for r in rules})
    written, removed = replace_hour(conn, DETECTOR, hour, rows)
    by_rule = found.groupby("rule").size().to_dict() if not found.empty else {}
    return HourResult(hour, events, len(rows), written, removed,
                      {str(k): int(v) for k, v in by_rule.items()})
