"""An anomaly's evidence from the lake: the raw events of its entity around it (DuckDB over
the Parquet files), and the series that fired — the measurement, or events per interval."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from vigil.detect.rules import Rule
from vigil.events import EVENT_TYPES
from vigil.lake import Lake, query_events

BEFORE = timedelta(minutes=10)
AFTER = timedelta(minutes=5)
MAX_ROWS = 5_000


@dataclass(frozen=True)
class Evidence:
    start: datetime
    end: datetime
    key: dict[str, Any]  # the entity: group columns and values
    events: pd.DataFrame  # the entity's raw events in [start, end), newest last
    series_name: str  # what the chart shows
    series: pd.DataFrame  # timestamp, value
    truncated: bool


def gather(lake: Lake, anomaly: dict[str, Any], rules: dict[str, Rule]) -> Evidence:
    """`anomaly` is an anomaly_events row (tags hold the topic and the group key)."""
    topic = anomaly["topic"]
    fields = set(EVENT_TYPES[topic].names)
    key = {k: v for k, v in (anomaly.get("tags") or {}).items() if k in fields}
    start = anomaly["window_start"] - BEFORE
    end = (anomaly["window_end"] or anomaly["window_start"]) + AFTER
    conditions = " AND ".join(f'"{column}" IS NOT DISTINCT FROM ${column}' for column in key)
    table = query_events(lake, topic, start, end,
                         "SELECT * EXCLUDE (_kafka_timestamp) FROM events"
                         + (f" WHERE {conditions}" if conditions else "")
                         + f" ORDER BY timestamp DESC LIMIT {MAX_ROWS + 1}", params=key)
    events = table.to_pandas().iloc[::-1].reset_index(drop=True)
    truncated = len(events) > MAX_ROWS
    events = events.tail(MAX_ROWS).reset_index(drop=True)
    name, series = fired_series(anomaly, events, rules.get(anomaly.get("rule") or ""))
    return Evidence(start, end, key, events, name, series, truncated)


def fired_series(anomaly: dict[str, Any], events: pd.DataFrame, rule: Rule | None
                 ) -> tuple[str, pd.DataFrame]:
    """The measurement that fired (the model's most unusual feature, or the rule's value
    column), else the entity's events per minute."""
    metrics = anomaly.get("metrics") or {}
    for column in (metrics.get("peak_feature"), rule.value_column if rule else None):
        if column and column in events.columns:
            values = pd.to_numeric(events[column], errors="coerce")
            return column, pd.DataFrame({"timestamp": events["timestamp"], "value": values})
    if events.empty:
        return "events per minute", pd.DataFrame({"timestamp": [], "value": []})
    counts = events.set_index("timestamp").resample("1min").size()
    return "events per minute", pd.DataFrame({"timestamp": counts.index,
                                              "value": counts.to_numpy()})
