"""The anomaly_likelihood detector: past-only scores, what it fires on, its alert policy,
its rule's validation, and the engine running it per host."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from vigil.detect import likelihood
from vigil.detect.engine import ANOMALY_COLUMNS, detect, firings
from vigil.detect.frames import TopicFrame
from vigil.detect.rules import RuleError, load_rules, parse_rule

SPEC = likelihood.LikelihoodSpec(column="cpu_percent", baseline_points=60, average_points=6,
                                 history_points=400, warmup_points=30, quiet_points=50)
RULE_ENTRY = {"name": "cpu_surprise", "topic": "metrics", "type": "anomaly_likelihood",
              "column": "cpu_percent", "group_by": ["host"], "baseline_points": 60,
              "average_points": 6, "history_points": 400, "warmup_points": 30,
              "quiet_points": 50, "threshold": 4, "lookback": "2h", "level": "info",
              "realert": "15m", "title": "unusual CPU on {host} ({value:.1f})"}
START = datetime(2026, 11, 24, 9, tzinfo=UTC)


def noisy(n: int, level: float = 40.0, seed: int = 3) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, 3, n)


def test_scores_depend_on_the_past_only() -> None:
    values = noisy(800)
    changed = values.copy()
    changed[500:] += 200  # rewrite the future
    before, after = likelihood.surprise(values, SPEC), likelihood.surprise(changed, SPEC)
    np.testing.assert_array_equal(before[:500], after[:500])
    assert after[500:520].max() > before[500:520].max() + 3


def test_a_level_shift_fires_once_then_stays_quiet() -> None:
    values = noisy(900)
    values[600:] += 40  # ~13 sigmas, for good
    fired = np.flatnonzero(likelihood.alerts(likelihood.surprise(values, SPEC), 4.0,
                                             SPEC.quiet_points))
    assert len(fired) >= 1 and 600 <= fired[0] <= 605  # within a few points of the shift
    assert np.all(np.diff(fired) > SPEC.quiet_points)  # never two within the quiet period
    assert not np.any((fired > fired[0]) & (fired <= fired[0] + SPEC.quiet_points))


def test_noise_and_small_wobbles_do_not_fire() -> None:
    steady = noisy(2000)
    assert not likelihood.alerts(likelihood.surprise(steady, SPEC), 4.0, 50).any()
    flat = np.full(2000, 50.0)
    flat[1000:1010] += 1.0  # 2 % of the level: below min_spread
    assert not likelihood.alerts(likelihood.surprise(flat, SPEC), 4.0, 50).any()


def test_warming_up_scores_zero() -> None:
    values = noisy(100)
    values[20] = 500  # before warmup_points: no baseline yet to call it unusual
    assert np.all(likelihood.surprise(values, SPEC)[:SPEC.warmup_points + 1] == 0)


def test_alert_policy_quiet_counts_from_the_last_firing() -> None:
    scores = np.zeros(20)
    scores[[2, 3, 6, 9, 10]] = 5.0
    assert np.flatnonzero(likelihood.alerts(scores, 4.0, 3)).tolist() == [2, 6, 10]


def frame(hosts: dict[str, np.ndarray]) -> pd.DataFrame:
    parts = []
    for number, (host, values) in enumerate(hosts.items()):
        parts.append(pd.DataFrame({
            "timestamp": [START + timedelta(seconds=10 * i + number)
                          for i in range(len(values))],
            "host": host, "cpu_percent": values, "_partition": number,
            "_offset": np.arange(len(values))}))
    return pd.concat(parts).sort_values("timestamp", ignore_index=True)


def test_the_engine_scores_each_host_on_its_own_series() -> None:
    rule = parse_rule(RULE_ENTRY)
    assert rule.likelihood is not None
    shifted = noisy(900, seed=4)
    shifted[600:] += 40
    events = frame({"api-1": noisy(900, seed=5), "api-2": shifted})
    fired = firings(rule, TopicFrame(events))
    assert set(fired["host"]) == {"api-2"}
    expected = likelihood.alerts(likelihood.surprise(shifted, rule.likelihood), 4.0, 50)
    first = START + timedelta(seconds=10 * int(np.flatnonzero(expected)[0]) + 1)
    assert pd.Timestamp(int(fired["t"].min()), unit="us", tz="UTC") == first
    found = detect([rule], {"metrics": events}, START, START + timedelta(hours=3))
    assert list(found.columns) == ANOMALY_COLUMNS
    assert set(found["detector"]) == {"anomaly_likelihood"}
    assert set(found["detector_version"]) == {likelihood.VERSION}
    assert found["title"].iloc[0].startswith("unusual CPU on api-2")


def test_shipped_likelihood_rule_is_off_but_validated() -> None:
    assert "cpu_likelihood" not in {r.name for r in load_rules()}
    rule = {r.name: r for r in load_rules(include_disabled=True)}["cpu_likelihood"]
    assert not rule.enabled and rule.likelihood is not None
    assert rule.lookback == 12 * 3600.0


@pytest.mark.parametrize(("change", "message"), [
    ({"column": "host"}, "column 'host' is not a numeric metrics field"),
    ({"quiet_points": 2.5}, "quiet_points=2.5 must be a whole number"),
    ({"warmup_points": 500}, "warmup_points=500 must not exceed"),
    ({"enabled": "yes"}, "enabled='yes' must be true or false"),
    ({"lookback": "soon"}, "lookback"),
])
def test_rule_mistakes_are_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rule({**RULE_ENTRY, **change})
