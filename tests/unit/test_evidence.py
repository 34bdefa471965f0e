"""Which series the event-detail chart shows for an anomaly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from vigil.detect.rules import load_rules
from vigil.evidence import fired_series

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
RULES = {r.name: r for r in load_rules()}
EVENTS = pd.DataFrame({
    "timestamp": [T0 + timedelta(seconds=s) for s in (0, 20, 70, 80, 130)],
    "latency_ms": [100.0, 1500.0, 120.0, 110.0, 90.0],
    "memory_percent": [50.0, 51.0, 90.0, 52.0, 50.0]})


def test_a_model_anomaly_charts_its_most_unusual_feature() -> None:
    name, series = fired_series({"metrics": {"peak_feature": "memory_percent"}}, EVENTS,
                                RULES["metrics_isolation_forest"])
    assert name == "memory_percent" and series["value"].tolist() == EVENTS[
        "memory_percent"].tolist()


def test_a_threshold_rule_charts_its_value_column() -> None:
    name, series = fired_series({"metrics": {}}, EVENTS, RULES["latency_high"])
    assert name == "latency_ms" and series["value"].max() == 1500.0


def test_a_count_rule_charts_events_per_minute() -> None:
    name, series = fired_series({"metrics": {}}, EVENTS, RULES["error_spike"])
    assert name == "events per minute"
    assert series["value"].tolist() == [2, 2, 1]
