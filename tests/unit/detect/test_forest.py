"""The isolation_forest detector on hand-built frames: its features, its per-entity
baselines, determinism of training, and what it fires on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from vigil.detect import forest
from vigil.detect.engine import detect, epoch_us, firings
from vigil.detect.frames import TopicFrame
from vigil.detect.rules import RuleError, load_rules, parse_rule

HOUR = datetime(2026, 11, 24, 10, tzinfo=UTC)
RULES = {r.name: r for r in load_rules()}
METRICS = RULES["metrics_isolation_forest"]
TRANSACTIONS = RULES["transactions_isolation_forest"]
assert METRICS.forest is not None and TRANSACTIONS.forest is not None
METRICS_SPEC, TRANSACTIONS_SPEC = METRICS.forest, TRANSACTIONS.forest


def metrics(hours: float, start: datetime, hosts: dict[str, float], seed: int = 1
            ) -> pd.DataFrame:
    """Every host reports every 10 s around its own CPU level; latency ~120 ms."""
    rng = np.random.default_rng(seed)
    n = int(hours * 360)
    frames = []
    for number, (host, cpu) in enumerate(hosts.items()):
        frames.append(pd.DataFrame({
            "timestamp": [start + timedelta(seconds=10 * i + number) for i in range(n)],
            "host": host, "cpu_percent": cpu + rng.normal(0, 2, n),
            "memory_percent": 50 + rng.normal(0, 1, n),
            "latency_ms": 120 * np.exp(rng.normal(0, 0.1, n)), "error_rate": 0.0,
            "_partition": number, "_offset": np.arange(n)}))
    return pd.concat(frames).sort_values("timestamp", ignore_index=True)


def test_count_and_gap_features_are_per_entity_and_past_only() -> None:
    times = [HOUR + timedelta(seconds=s) for s in (0, 10, 20, 400, 405)]
    frame = pd.DataFrame({"timestamp": times, "user_id": ["a", "a", "b", "a", "a"],
                          "amount": [1.0, 10.0, 100.0, 1000.0, 0.0]})
    got = forest.feature_matrix(TRANSACTIONS_SPEC, TopicFrame(frame), ("user_id",))
    np.testing.assert_allclose(got[:, 0], np.log1p(frame["amount"]))
    # count:5m — a's events at 0, 10, then 400 (the window (100 s, 400 s] holds only itself)
    np.testing.assert_array_equal(got[:, 1], [1, 2, 1, 1, 2])
    # gap:5m — seconds since the entity's previous event, capped at 300
    np.testing.assert_array_equal(got[:, 2], [300, 10, 300, 300, 5])


def test_a_host_that_always_runs_hot_is_usual_a_jump_is_not() -> None:
    hosts = {"steady": 40.0, "hot": 75.0}
    history = metrics(2, HOUR - timedelta(hours=2), hosts)
    model = forest.train(METRICS, history, HOUR)
    assert isinstance(model, forest.ForestModel)
    assert model.entity_centre["hot"][0] == pytest.approx(75, abs=1)
    hour = metrics(1, HOUR, hosts, seed=2)
    jump = (hour["host"] == "steady") & (hour["timestamp"] >= HOUR + timedelta(minutes=30)) \
        & (hour["timestamp"] < HOUR + timedelta(minutes=35))
    hour.loc[jump, "cpu_percent"] = 75.0  # usual for "hot", 17 sigmas off for "steady"
    found = detect([METRICS], {"metrics": hour}, HOUR, HOUR + timedelta(hours=1),
                   {METRICS.name: [model]})
    assert list(found["entity"]) == ["steady"]
    row = found.iloc[0]
    assert (row.detector, row.detector_version, row.level) == ("isolation_forest",
                                                              "iforest-3", "info")
    assert row.points == int(jump.sum())
    assert row.peak >= model.threshold
    assert row.context["peak_feature"] == "cpu_percent"
    assert row.context["peak_observed"] == pytest.approx(75)
    assert row.context["peak_usual"] == pytest.approx(40, abs=1)
    assert row.title.startswith("unusual metrics on steady: cpu_percent 75 vs usual 40")
    # The hour without the jump is quiet.
    assert detect([METRICS], {"metrics": metrics(1, HOUR, hosts, seed=2)}, HOUR,
                  HOUR + timedelta(hours=1), {METRICS.name: [model]}).empty


def test_training_is_a_function_of_the_history_not_of_its_row_order() -> None:
    history = metrics(2, HOUR - timedelta(hours=2), {"a": 40.0, "b": 60.0})
    one = forest.train(METRICS, history, HOUR)
    other = forest.train(METRICS, history.sample(frac=1.0, random_state=3), HOUR)
    assert isinstance(one, forest.ForestModel) and isinstance(other, forest.ForestModel)
    probe = np.random.default_rng(0).normal(0, 3, (200, len(METRICS_SPEC.features)))
    assert one.trees is not None and other.trees is not None
    np.testing.assert_array_equal(one.trees.score(probe), other.trees.score(probe))
    assert one.threshold == other.threshold
    restored = forest.ForestModel.loads(one.dumps())
    assert restored.trees is not None
    np.testing.assert_array_equal(restored.trees.score(probe), one.trees.score(probe))


def test_numpy_scoring_reproduces_scikit_learn_exactly() -> None:
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(5)
    train = rng.normal(0, 1, (3000, 4))
    fitted = IsolationForest(n_estimators=50, max_samples=256, random_state=0).fit(train)
    probe = np.vstack([rng.normal(0, 1, (500, 4)), rng.normal(0, 8, (50, 4)),
                       np.full((1, 4), 1e6), np.zeros((1, 4))])
    np.testing.assert_allclose(forest.Trees.of(fitted).score(probe),
                               -fitted.score_samples(probe), rtol=0, atol=1e-12)


def test_scoring_does_not_import_scikit_learn() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np; from vigil.detect import forest, hours, engine; "
            "assert 'sklearn' not in sys.modules, 'imported'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.stdout.strip() == "ok", done.stderr


def test_too_little_history_names_the_rule_hour_and_numbers() -> None:
    history = metrics(0.5, HOUR - timedelta(minutes=30), {"a": 40.0})[:120]
    reason = forest.train(METRICS, history, HOUR)
    assert reason == ("metrics_isolation_forest: 120 events in the 2 h before 2026-11-24 "
                      "09:50 (hour 10:00's history), needs 500: hour not scored")


def test_scoring_from_a_moment_on_fires_as_scoring_all_and_dropping_what_came_before() -> None:
    """An ingest run keeps the firings from its batch on: the window's past it also reads
    (the features' counts and gaps) is not walked through the trees."""
    hosts = {"steady": 40.0, "other": 45.0}
    model = forest.train(METRICS, metrics(2, HOUR - timedelta(hours=2), hosts), HOUR)
    assert isinstance(model, forest.ForestModel)
    hour = metrics(1, HOUR, hosts, seed=2)
    for minute in (10, 40):  # a jump in the past, one in the batch
        jump = (hour["host"] == "steady") \
            & (hour["timestamp"] >= HOUR + timedelta(minutes=minute)) \
            & (hour["timestamp"] < HOUR + timedelta(minutes=minute + 5))
        hour.loc[jump, "cpu_percent"] = 75.0
    since = epoch_us(HOUR + timedelta(minutes=30))
    every = firings(METRICS, TopicFrame(hour), [model])
    assert (every["t"] < since).any() and (every["t"] >= since).any()
    batch = firings(METRICS, TopicFrame(hour), [model], since)
    pd.testing.assert_frame_equal(batch.reset_index(drop=True),
                                  every[every["t"] >= since].reset_index(drop=True))


def test_events_outside_every_model_hour_are_not_scored() -> None:
    history = metrics(2, HOUR - timedelta(hours=2), {"a": 40.0})
    model = forest.train(METRICS, history, HOUR)
    assert isinstance(model, forest.ForestModel)
    later = metrics(1, HOUR + timedelta(hours=1), {"a": 40.0})
    later["cpu_percent"] = 99.0
    assert detect([METRICS], {"metrics": later}, HOUR, HOUR + timedelta(hours=2),
                  {METRICS.name: [model]}).empty


@pytest.mark.parametrize(("change", "message"), [
    ({"features": []}, "features must be a non-empty list"),
    ({"features": ["host"]}, "feature 'host' is not a numeric metrics field"),
    ({"features": ["count:often"]}, "is not a duration like 90s"),
    ({"baseline": "team"}, "baseline 'team' is not one of entity, global"),
    ({"quantile": 1.5}, "quantile=1.5 must be between 0 and 1"),
])
def test_bad_forest_rules_are_named(change: dict[str, object], message: str) -> None:
    entry = {"name": "m", "topic": "metrics", "type": "isolation_forest", "level": "info",
             "group_by": ["host"], "title": "t", "features": ["cpu_percent"], **change}
    with pytest.raises(RuleError, match=message):
        parse_rule(entry)
