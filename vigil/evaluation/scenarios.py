"""`vigil evaluate scenarios`: every injected scenario, several seeds, through the detection
engine; precision, recall, F1 and median delay per scenario and rule.

Per seed: two clean hours (the isolation forests' training history and every rule's
look-back), then an hour with every scenario; the hour is detected as `detect_hour` does
(the same engine, models trained the same way), minus the lake and Postgres I/O.
A rule's precision counts its anomalies that fall on an injected entity during its scenario;
delay runs from the scenario's start to the first anomaly of that rule on it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from vigil.detect import forest
from vigil.detect.engine import detect, to_frame
from vigil.detect.rules import Rule
from vigil.evaluation.table import markdown
from vigil.generate import SCENARIOS, Label, StreamSpec, SyntheticStream
from vigil.scenario_score import CAUGHT_BY, covers

HOUR = datetime(2026, 11, 24, 12, tzinfo=UTC)
HISTORY = timedelta(hours=2)


def _events(spec: StreamSpec, seconds: int) -> dict[str, pa.Table]:
    stream = SyntheticStream(spec)
    return {topic: stream.span(topic, seconds) for topic in spec.rates}


def _as_landed(table: pa.Table) -> pd.DataFrame:
    """Events in time order with the Kafka coordinates landing adds (one partition)."""
    frame = to_frame(table).sort_values("timestamp", kind="stable", ignore_index=True)
    frame["_partition"] = 0
    frame["_offset"] = range(len(frame))
    return frame


@dataclass(frozen=True)
class SeedRun:
    seed: int
    labels: list[Label]
    anomalies: list[dict[str, Any]]  # rule, entity, timestamp (first seen)


def run_seed(rules: list[Rule], seed: int, rates: dict[str, float]) -> SeedRun:
    """One seed: clean history, then the scenario hour, detected by the engine."""
    start = HOUR - HISTORY
    clean = _events(StreamSpec(seed=seed, start=start, rates=rates),
                    int(HISTORY.total_seconds()))
    spec = StreamSpec(seed=seed, start=HOUR, rates=rates, scenarios=tuple(SCENARIOS))
    hour = _events(spec, 3600)
    frames = {topic: _as_landed(pa.concat_tables([clean[topic], hour[topic]]))
              for topic in rates}
    models: dict[str, list[forest.ForestModel]] = {}
    for rule in rules:
        if rule.forest is not None:
            history = frames[rule.topic]
            history = history[history["timestamp"] < pd.Timestamp(HOUR)]
            trained = forest.train(rule, history, HOUR)
            if not isinstance(trained, str):
                models[rule.name] = [trained]
    found = detect(rules, frames, HOUR, HOUR + timedelta(hours=1), models)
    first_seen = pd.to_datetime(found["first_seen"], utc=True)
    anomalies = [{"rule": rule, "entity": entity, "timestamp": seen.to_pydatetime()}
                 for rule, entity, seen in zip(found["rule"], found["entity"], first_seen,
                                               strict=True)]
    return SeedRun(seed, SyntheticStream(spec).labels(0), anomalies)


@dataclass(frozen=True)
class Line:
    scenario: str
    rule: str
    expected: bool  # the threshold rule written for this scenario
    injected: int
    detected: int
    precision: float  # of the rule, over all scenarios
    delays: list[float]

    @property
    def recall(self) -> float:
        return self.detected / self.injected if self.injected else 0.0

    @property
    def f1(self) -> float:
        total = self.recall + self.precision
        return 2 * self.recall * self.precision / total if total else 0.0

    @property
    def median_delay(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None


def summarise(runs: Sequence[SeedRun], rules: Sequence[Rule]) -> list[Line]:
    """One line per (scenario, rule) where the rule is the scenario's own or caught it."""
    precision = {}
    for rule in rules:
        rows = [(run, a) for run in runs for a in run.anomalies if a["rule"] == rule.name]
        explained = sum(1 for run, a in rows if any(covers(lb, a) for lb in run.labels))
        precision[rule.name] = explained / len(rows) if rows else 1.0
    lines = []
    for scenario in sorted({lb.scenario for run in runs for lb in run.labels}):
        instances = [(run, lb) for run in runs for lb in run.labels if lb.scenario == scenario]
        for rule in rules:
            delays = []
            for run, label in instances:
                hits = [a["timestamp"] for a in run.anomalies
                        if a["rule"] == rule.name and covers(label, a)]
                if hits:
                    delays.append(max((min(hits) - label.start).total_seconds(), 0.0))
            expected = CAUGHT_BY.get(scenario) == rule.name
            if delays or expected:
                lines.append(Line(scenario, rule.name, expected, len(instances), len(delays),
                                  precision[rule.name], delays))
        if not any(line.scenario == scenario for line in lines):
            lines.append(Line(scenario, "-", False, len(instances), 0, 0.0, []))
    return lines


def report(lines: list[Line], seeds: Sequence[int], rate: float) -> str:
    out = [f"scenario evaluation: seeds {', '.join(map(str, seeds))}; per seed 2 clean hours "
           f"then 1 h with every scenario at {rate:g} events/s",
           ""]
    out += markdown(
        ["scenario", "rule", "caught", "recall", "rule precision", "F1", "median delay"],
        ([line.scenario, f"{line.rule}{' (its rule)' if line.expected else ''}",
          f"{line.detected}/{line.injected}", f"{line.recall:.2f}", f"{line.precision:.2f}",
          f"{line.f1:.2f}", "-" if line.median_delay is None else f"{line.median_delay:.0f} s"]
         for line in lines))
    missed = sorted({line.scenario for line in lines if line.expected and line.recall < 1})
    subtle = sorted({line.scenario for line in lines}
                    - {line.scenario for line in lines if line.expected})
    out.append("")
    out.append("threshold scenarios missed: " + (", ".join(missed) or "none"))
    def by_whom(scenario: str) -> str:
        rules = [line.rule for line in lines if line.scenario == scenario and line.rule != "-"]
        return f"caught by {', '.join(rules)}" if rules else "NOT caught"

    out.append("subtle scenarios (no threshold rule written for them): "
               + "; ".join(f"{s} {by_whom(s)}" for s in subtle))
    return "\n".join(out)
