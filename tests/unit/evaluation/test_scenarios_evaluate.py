"""`vigil evaluate scenarios`: the per-(scenario, rule) arithmetic on hand-made runs, and the
command on a real generated seed through the engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vigil.cli import main
from vigil.detect.rules import load_rules
from vigil.evaluation.scenarios import SeedRun, summarise
from vigil.generate import Label

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)
RULES = [r for r in load_rules() if r.name in ("error_spike", "latency_high")]


def label(scenario: str, entity: str, start_min: int) -> Label:
    start = T0 + timedelta(minutes=start_min)
    return Label(scenario, "logs", "service", entity, start, start + timedelta(minutes=5))


def anomaly(rule: str, entity: str, minute: float) -> dict[str, object]:
    return {"rule": rule, "entity": entity, "timestamp": T0 + timedelta(minutes=minute)}


def test_recall_precision_f1_and_delay_per_scenario_and_rule() -> None:
    runs = [
        SeedRun(1, [label("error_burst", "api", 10)],
                [anomaly("error_spike", "api", 11), anomaly("error_spike", "db", 40)]),
        SeedRun(2, [label("error_burst", "web", 20)],
                [anomaly("error_spike", "web", 23), anomaly("latency_high", "web", 21)]),
        SeedRun(3, [label("error_burst", "api", 30), label("unusual_country", "u1", 5)], []),
    ]
    lines = {(line.scenario, line.rule): line for line in summarise(runs, RULES)}
    own = lines[("error_burst", "error_spike")]
    assert own.expected and (own.detected, own.injected) == (2, 3)
    assert own.precision == pytest.approx(2 / 3)  # the db anomaly is on no scenario
    assert own.f1 == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert own.median_delay == pytest.approx(120.0)  # 60 s and 180 s
    other = lines[("error_burst", "latency_high")]
    assert not other.expected and other.detected == 1 and other.precision == 1.0
    # An injected scenario nothing fired on is listed as not caught; others are not listed.
    missed = lines[("unusual_country", "-")]
    assert (missed.detected, missed.injected, missed.recall) == (0, 1, 0.0)
    assert not any(scenario == "large_amount" for scenario, _rule in lines)


def test_every_threshold_scenario_is_caught_on_a_generated_seed(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "scenarios", "--seeds", "7"]) == 0
    out = capsys.readouterr().out
    own_lines = [line for line in out.splitlines() if "(its rule)" in line]
    assert len(own_lines) == 8  # one per threshold scenario
    assert all("| 1.00 |" in line.split("(its rule)")[1] for line in own_lines)
    assert "threshold scenarios missed: none" in out
    assert "subtle scenarios" in out and "latency_shift" in out
