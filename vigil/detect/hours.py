"""Detect whole hours from the lake: read H plus the rules' look-back, run the engine,
replace H's anomalies in Postgres. The lake is the source of truth: any hour can be
recomputed from it alone (backfills, scheduled reprocessing, the ingest run's own hours)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import psycopg

from vigil.detect.engine import (
    DETECTOR,
    detect,
    detect_windows,
    floor_to,
    lookback_seconds,
    to_frame,
)
from vigil.detect.rules import Rule
from vigil.lake import Lake, floor_hour, hours_between
from vigil.store import anomaly_rows, replace_hour, replace_windows


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


def _read_frames(lake: Lake, rules: list[Rule], spans: dict[str, tuple[datetime, datetime]]
                 ) -> dict[str, pd.DataFrame]:
    """Each topic's events over its span, only the columns its rules read."""
    frames: dict[str, pd.DataFrame] = {}
    for topic, (start, end) in sorted(spans.items()):
        columns = sorted(set().union(*(r.columns() for r in rules if r.topic == topic))
                         | {"_partition", "_offset"})
        frames[topic] = to_frame(lake.read_events(topic, start, end, columns=columns,
                                                  dictionary=True))
    return frames


def detect_hour(lake: Lake, rules: list[Rule], conn: psycopg.Connection[Any],
                hour: datetime) -> HourResult:
    hour = floor_hour(hour)
    end = hour + timedelta(hours=1)
    start = hour - timedelta(seconds=lookback_seconds(rules))
    frames = _read_frames(lake, rules, {r.topic: (start, end) for r in rules})
    stamp = pd.Timestamp(hour)
    events = sum(int((frame["timestamp"] >= stamp).sum()) for frame in frames.values())
    found = detect(rules, frames, hour, end)
    rows = anomaly_rows(found, {r.name: rule_details(r) for r in rules})
    written, removed = replace_hour(conn, DETECTOR, hour, rows)
    return HourResult(hour, events, len(rows), written, removed, _by_rule(found))


def _by_rule(found: pd.DataFrame) -> dict[str, int]:
    counts = found.groupby("rule").size().to_dict() if not found.empty else {}
    return {str(k): int(v) for k, v in counts.items()}


@dataclass(frozen=True)
class RecentResult:
    windows: dict[str, tuple[datetime, datetime]]  # rule -> the buckets recomputed
    anomalies: int
    written: int
    removed: int
    by_rule: dict[str, int]

    @property
    def hours(self) -> list[datetime]:
        """The hours whose anomalies this pass touched."""
        return sorted({h for start, end in self.windows.values()
                       for h in hours_between(start, end)})


def detect_recent(lake: Lake, rules: list[Rule], conn: psycopg.Connection[Any],
                  landed: dict[str, tuple[datetime, datetime]]) -> RecentResult:
    """Re-detect just the re-alert buckets that newly landed events fall in.

    `landed` maps a topic to the event-time span of what was just landed. Each rule's
    buckets covering that span are recomputed whole, from the lake (the bucket plus the
    rule's look-back), so the rows are exactly what detecting the full hour would give —
    however the events were batched. Buckets never straddle an hour (realert divides it).
    """
    windows: dict[str, tuple[datetime, datetime]] = {}
    reads: dict[str, tuple[datetime, datetime]] = {}
    for rule in rules:
        if rule.topic not in landed:
            continue
        first, last = landed[rule.topic]
        step = timedelta(seconds=rule.realert)
        start, end = floor_to(first, step), floor_to(last, step) + step
        windows[rule.name] = (start, end)
        read_from = start - timedelta(seconds=rule.lookback)
        before = reads.get(rule.topic, (read_from, end))
        reads[rule.topic] = (min(before[0], read_from), max(before[1], end))
    if not windows:
        return RecentResult({}, 0, 0, 0, {})
    found = detect_windows(rules, _read_frames(lake, rules, reads), windows)
    rows = anomaly_rows(found, {r.name: rule_details(r) for r in rules})
    written, removed = replace_windows(conn, DETECTOR, rows, windows)
    return RecentResult(windows, len(rows), written, removed, _by_rule(found))
