"""Scoring anomalies against injected scenario labels: recall, precision, latency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vigil.generate import Label
from vigil.scenario_score import percentile, score

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def label(scenario: str, entity: str, start: int, end: int) -> Label:
    return Label(scenario, "logs", "service", entity, T0 + timedelta(seconds=start),
                 T0 + timedelta(seconds=end))


def anomaly(rule: str, entity: str, at: int, created: int, detector: str = "rules"
            ) -> dict[str, object]:
    return {"rule": rule, "entity": entity, "detector": detector,
            "timestamp": T0 + timedelta(seconds=at), "created_at": T0 + timedelta(seconds=created)}


def test_recall_precision_and_latency() -> None:
    labels = [label("error_burst", "payments", 0, 180), label("failed_login_storm", "u1", 300, 600),
              label("cpu_creep", "host-1", 0, 3600)]
    found = [anomaly("error_spike", "payments", 100, 106),
             anomaly("error_spike", "payments", 170, 190),  # same instance, later: not first
             anomaly("failed_message", "checkout / u2", 400, 405),  # wrong user: unexplained
             anomaly("metrics_isolation_forest", "host-1", 50, 60, "isolation_forest")]
    result = score(labels, found)
    by_name = {s.scenario: s for s in result.scenarios}
    assert (by_name["error_burst"].detected, by_name["error_burst"].latencies) == (1, [6.0])
    assert by_name["failed_login_storm"].detected == 0
    assert by_name["cpu_creep"].rule is None  # no threshold rule: not counted as missed
    assert result.missed() == ["failed_login_storm"]
    assert (result.explained, result.rule_anomalies) == (2, 3)  # model rows are not judged


def test_latency_from_when_the_event_was_sent() -> None:
    labels = [label("error_burst", "payments", 0, 180)]
    found = [anomaly("error_spike", "payments", 120, 20)]  # a 6x compressed stream
    result = score(labels, found, sent_at=lambda m: T0 + (m - T0) / 6)
    assert result.latencies == [0.0]  # sent at T0+20 s, row at T0+20 s


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(x) for x in range(1, 101)], 95) == 95.0
