"""Scoring a batch with an isolation forest: sklearn's score_samples vs. vigil's numpy walk
of every tree at once, all rows together (as before) and a block of rows at a time (now).

A model like the rules' (trees and subsample of the transactions rule, 5 features) scores
--rows rows (a large ingest run's transactions); every way is timed --repeat times, side by
side in one run, and checked to give the same scores.
Then an ingest run's frame for the transactions_isolation_forest rule: a batch (--batch-s
seconds of transactions at --rate per second) after the 5 minutes of the users' past its
count:5m and gap:5m features read. Scoring the whole frame (before) vs. the batch alone
(now: `since_us`), firings checked equal from the batch on.
Run: .venv/bin/python bench/forest_score.py [--rows 50000 --repeat 5 --rate 6000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from vigil.detect import forest
from vigil.detect.engine import epoch_us, firings
from vigil.detect.forest import Trees
from vigil.detect.frames import TopicFrame
from vigil.detect.rules import load_rules


def all_rows_at_once(trees: Trees, x: np.ndarray) -> np.ndarray:
    """The walk before blocks: every row and tree in one (rows x trees) array per level."""
    x = x.astype(np.float32).astype(np.float64)
    rows = np.arange(len(x))[:, None]
    node = np.broadcast_to(trees.roots, (len(x), len(trees.roots))).copy()
    for _ in range(trees.depth):
        feature = trees.feature[node]
        inner = feature >= 0
        if not inner.any():
            break
        go_left = x[rows, np.maximum(feature, 0)] <= trees.threshold[node]
        node = np.where(inner, np.where(go_left, trees.left[node], trees.right[node]), node)
    lengths = trees.leaf_length[node].sum(axis=1)
    return np.asarray(2.0 ** (-lengths / trees.denominator))


def timed(score: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeat: int
          ) -> tuple[float, np.ndarray]:
    seconds, out = [], np.empty(0)
    for _ in range(repeat):
        began = time.perf_counter()
        out = score(x)
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rate", type=float, default=6_000.0,
                        help="transactions/s (20,000 events/s at the default mix: 6,000)")
    parser.add_argument("--batch-s", type=float, default=6.0,
                        help="seconds of events in a batch (120,000 offsets at 20,000/s)")
    args = parser.parse_args()
    spec = next(r.forest for r in load_rules() if r.forest is not None
                and r.topic == "transactions")
    rng = np.random.default_rng(7)
    features = 5
    fitted = IsolationForest(n_estimators=spec.trees, max_samples=256, random_state=0).fit(
        rng.normal(0, 1, (20_000, features)))
    trees = Trees.of(fitted)
    x = np.vstack([rng.normal(0, 1, (args.rows - args.rows // 50, features)),
                   rng.normal(0, 6, (args.rows // 50, features))])
    ways: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "sklearn score_samples": lambda v: -fitted.score_samples(v),
        "numpy walk, all rows at once (before)": lambda v: all_rows_at_once(trees, v),
        "numpy walk, blocks of rows (now)": trees.score,
    }
    results = {name: timed(way, x, args.repeat) for name, way in ways.items()}
    reference = results["sklearn score_samples"][1]
    now = results["numpy walk, blocks of rows (now)"][0]
    print(f"\nscoring {args.rows:,} rows, {spec.trees} trees, {features} features, "
          f"median of {args.repeat}")
    print(f"| {'way':<40} | seconds | rows/s     | vs. now | max |score - sklearn| |")
    print(f"|{'-' * 42}|---------|------------|---------|----------------------|")
    for name, (seconds, scores) in results.items():
        print(f"| {name:<40} | {seconds:7.3f} | {args.rows / seconds:10,.0f} | "
              f"{seconds / now:6.1f}x | {np.abs(scores - reference).max():20.1e} |")
    run_frame(args.rate, args.batch_s, args.repeat)


def transactions(start: datetime, seconds: float, rate: float, users: int, seed: int
                 ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    offsets = np.sort(rng.uniform(0, seconds, n))
    return pd.DataFrame({
        "timestamp": pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s"),
        "user_id": rng.integers(0, users, n).astype(str),
        "amount": np.exp(rng.normal(4, 1, n)), "_partition": 0, "_offset": np.arange(n)})


def _from(fired: pd.DataFrame, since_us: int) -> pd.DataFrame:
    return fired[fired["t"] >= since_us]


def run_frame(rate: float, batch_s: float, repeat: int) -> None:
    rule = next(r for r in load_rules() if r.name == "transactions_isolation_forest")
    hour = datetime(2026, 11, 24, 10, tzinfo=UTC)
    users = 20_000
    # History at a lower rate over as many fewer users: each user's rate (its counts and
    # gaps) as in the frame scored, at a sixtieth of the rows to train on.
    model = forest.train(rule, transactions(hour - timedelta(hours=2), 6_600, rate / 60,
                                            users // 60, 1), hour)
    assert isinstance(model, forest.ForestModel), model
    since = hour + timedelta(minutes=20)
    frame = TopicFrame(transactions(since - timedelta(minutes=5), 300 + batch_s, rate,
                                    users, 2))
    since_us = epoch_us(since)
    ways = {"whole frame, then firings from the batch on (before)":
            lambda: _from(firings(rule, frame, [model]), since_us),
            "the batch alone walks the trees (now)":
            lambda: firings(rule, frame, [model], since_us)}
    results = {}
    for name, way in ways.items():
        seconds = []
        for _ in range(repeat):
            began = time.perf_counter()
            fired = way()
            seconds.append(time.perf_counter() - began)
        results[name] = (statistics.median(seconds), fired.reset_index(drop=True))
    before, now = results.values()
    pd.testing.assert_frame_equal(before[1], now[1])
    print(f"\nan ingest run's transactions_isolation_forest frame: {len(frame.frame):,} rows "
          f"(5 min of past + a {batch_s:.0f} s batch at {rate:,.0f}/s, {users:,} users), "
          f"{len(now[1])} firings in the batch either way, median of {repeat}")
    print(f"| {'way':<54} | seconds | vs. now |")
    print(f"|{'-' * 56}|---------|---------|")
    for name, (median, _fired) in results.items():
        print(f"| {name:<54} | {median:7.3f} | {median / now[0]:6.1f}x |")


if __name__ == "__main__":
    main()
