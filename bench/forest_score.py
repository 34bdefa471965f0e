"""Scoring a batch with an isolation forest: sklearn's score_samples vs. vigil's numpy walk
of every tree at once, all rows together (as before) and a block of rows at a time (now).

A model like the rules' (trees and subsample of the transactions rule, 5 features) scores
--rows rows (a large ingest run's transactions); every way is timed --repeat times, side by
side in one run, and checked to give the same scores.
Run: .venv/bin/python bench/forest_score.py [--rows 50000 --repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from sklearn.ensemble import IsolationForest

from vigil.detect.forest import Trees
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


if __name__ == "__main__":
    main()
