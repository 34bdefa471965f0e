"""Anomalies found vs the generator's injected scenarios: recall per scenario, precision of
the rules, and how long each scenario took from its triggering event to its row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vigil.generate import Label

# The rule written for each threshold scenario: these must always be caught.
CAUGHT_BY = {
    "error_burst": "error_spike", "failed_login_storm": "failed_message",
    "user_log_spike": "user_log_spike", "cpu_sustained": "cpu_sustained",
    "latency_spike": "latency_high", "cpu_latency": "cpu_and_latency",
    "large_amount": "large_amount", "rapid_fire": "rapid_transactions",
}
SLACK = timedelta(minutes=2)  # a window may start before, or fire just after, the label


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    rule: str | None  # None: no threshold rule is written for it
    injected: int
    detected: int
    latencies: list[float]  # seconds, triggering event -> row, per detected instance

    @property
    def recall(self) -> float:
        return self.detected / self.injected if self.injected else 1.0


@dataclass(frozen=True)
class ScenarioScore:
    scenarios: list[ScenarioResult]
    rule_anomalies: int
    explained: int  # rule anomalies on an injected entity during its scenario

    @property
    def precision(self) -> float:
        return self.explained / self.rule_anomalies if self.rule_anomalies else 1.0

    @property
    def latencies(self) -> list[float]:
        return sorted(x for s in self.scenarios for x in s.latencies)

    def missed(self) -> list[str]:
        return [s.scenario for s in self.scenarios if s.rule and s.detected < s.injected]


def covers(label: Label, anomaly: dict[str, Any]) -> bool:
    """Is the anomaly on the label's entity, during its scenario (with some slack)?"""
    return (label.entity in str(anomaly["entity"]).split(" / ")
            and label.start - SLACK <= anomaly["timestamp"] <= label.end + SLACK)


def first_hit(label: Label, anomalies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The earliest anomaly of the label's rule on its entity during it, if any."""
    rule = CAUGHT_BY.get(label.scenario)
    hits = [a for a in anomalies if a["rule"] == rule and covers(label, a)] if rule else []
    return min(hits, key=lambda a: a["timestamp"]) if hits else None


def score(labels: list[Label], anomalies: list[dict[str, Any]],
          sent_at: Callable[[datetime], datetime] = lambda moment: moment) -> ScenarioScore:
    """`anomalies`: anomaly_events rows with rule, detector, entity, timestamp, created_at.
    Latency runs from when the triggering event was sent (`sent_at` of its timestamp: the
    same moment for a real-time stream) to the row's creation."""
    results = []
    for scenario in sorted({label.scenario for label in labels}):
        rule = CAUGHT_BY.get(scenario)
        instances = [label for label in labels if label.scenario == scenario]
        latencies = []
        detected = 0
        for label in instances:
            first = first_hit(label, anomalies)
            if first is not None:
                detected += 1
                latencies.append(_seconds(first["created_at"] - sent_at(first["timestamp"])))
        results.append(ScenarioResult(scenario, rule, len(instances), detected, latencies))
    rule_rows = [a for a in anomalies if a["detector"] == "rules"]
    explained = sum(1 for a in rule_rows if any(covers(label, a) for label in labels))
    return ScenarioScore(results, len(rule_rows), explained)


def _seconds(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0-100) of a small sample; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]

