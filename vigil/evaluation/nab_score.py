"""The Numenta Anomaly Benchmark score, computed as NAB v1.1's sweeper computes it.

Per file: rows in the probationary period (the first min(15 %, 750)) are not scored. A
flagged row inside a labelled window is worth A_tp * sigma(y) / sigma(-1), with
y = -(window_end - i + 1) / window_width, and only the window's earliest flagged row counts
(the highest value); a window nothing flagged costs -A_fn. A flagged row outside every
window costs A_fp * sigma(y) with y the distance past the previous window's end over (its
width - 1), or -A_fp before any window has ended. sigma(y) = 2 / (1 + e^(5y)) - 1.
One threshold per profile is chosen for the whole corpus; the corpus total S is reported as
100 * (S - S_null) / (S_perfect - S_null), where the null detector flags nothing and the
perfect one flags each window's first row.

A detector hands each row an anomaly score; a row is flagged when its score >= threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


def load_profiles(path: Path) -> list[Profile]:
    """NAB's config/profiles.json."""
    raw = json.loads(path.read_text())
    return [Profile(name, float(p["CostMatrix"]["tpWeight"]), float(p["CostMatrix"]["fpWeight"]),
                    float(p["CostMatrix"]["fnWeight"])) for name, p in raw.items()]


def sigma(y: np.ndarray | float) -> np.ndarray:
    """NAB's scaled sigmoid; positions more than 3 widths past a window count as -1."""
    y = np.asarray(y, dtype=float)
    return np.where(y > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0)


_MAX_TP = float(sigma(-1.0))


def probation(rows: int) -> int:
    return min(math.floor(0.15 * rows), 750)


@dataclass(frozen=True)
class Labelled:
    """One file's shape for scoring: its row count and windows as inclusive row ranges."""

    name: str
    rows: int
    windows: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RowParts:
    """Each row's worth if flagged (unweighted sigma) and its window (-1: none)."""

    unweighted: np.ndarray
    window: np.ndarray
    counted: np.ndarray


def row_parts(file: Labelled) -> RowParts:
    n = file.rows
    unweighted = np.full(n, -1.0)  # before any window has ended
    window = np.full(n, -1, dtype=np.int64)
    previous_end: int | None = None
    previous_width = 0.0
    cursor = 0
    for w, (start, end) in enumerate(sorted(file.windows)):
        width = float(end - start + 1)
        if previous_end is not None and cursor < start:
            past = np.arange(cursor, start)
            unweighted[past] = sigma(np.abs(previous_end - past) / max(previous_width - 1, 1.0))
        inside = np.arange(start, end + 1)
        unweighted[inside] = sigma(-(end - inside + 1) / width)
        window[inside] = w
        previous_end, previous_width, cursor = end, width, end + 1
    if previous_end is not None and cursor < n:
        past = np.arange(cursor, n)
        unweighted[past] = sigma(np.abs(previous_end - past) / max(previous_width - 1, 1.0))
    counted = np.arange(n) >= probation(n)
    return RowParts(unweighted, window, counted)


@dataclass(frozen=True)
class Sweep:
    """A corpus's total score as a step function of the threshold: `totals[k]` is the score
    when every row with score >= `thresholds[k]` is flagged (thresholds descending; the
    first entry, +inf, flags nothing)."""

    thresholds: np.ndarray
    totals: np.ndarray
    null: float
    perfect: float

    def best(self) -> tuple[float, float]:
        """(threshold, normalised score) at the best threshold."""
        k = int(np.argmax(self.totals))
        return float(self.thresholds[k]), normalise(float(self.totals[k]), self.null,
                                                   self.perfect)

    def at(self, threshold: float) -> float:
        """Normalised score with a given threshold."""
        k = int(np.searchsorted(-self.thresholds, -threshold, side="right")) - 1
        return normalise(float(self.totals[max(k, 0)]), self.null, self.perfect)


def normalise(total: float, null: float, perfect: float) -> float:
    return 100.0 * (total - null) / (perfect - null)


def _file_steps(file: Labelled, scores: np.ndarray, profile: Profile
                ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(score of each change, change to the file's total) as the threshold falls, plus the
    file's null and perfect totals."""
    parts = row_parts(file)
    counted = np.flatnonzero(parts.counted & ~np.isnan(scores))
    windows = sorted({int(w) for w in parts.window[parts.counted] if w >= 0})
    null = -profile.fn * len(windows)
    perfect = profile.tp * len(windows)
    order = counted[np.argsort(-scores[counted], kind="stable")]
    values, deltas = [], []
    best = {w: -profile.fn for w in windows}
    for i in order:  # outside windows: each flagged row adds its (negative) worth
        w = int(parts.window[i])
        if w < 0:
            values.append(scores[i])
            deltas.append(profile.fp * parts.unweighted[i])
            continue
        worth = profile.tp * parts.unweighted[i] / _MAX_TP
        if worth > best[w]:  # an earlier row of this window: only the earliest counts
            values.append(scores[i])
            deltas.append(worth - best[w])
            best[w] = worth
    return np.asarray(values, dtype=float), np.asarray(deltas, dtype=float), null, perfect


def sweep(files: Sequence[Labelled], scores: Sequence[np.ndarray], profile: Profile) -> Sweep:
    """Score a corpus at every threshold at once."""
    all_values, all_deltas = [], []
    null = perfect = 0.0
    for file, file_scores in zip(files, scores, strict=True):
        values, deltas, file_null, file_perfect = _file_steps(
            file, np.asarray(file_scores, dtype=float), profile)
        all_values.append(values)
        all_deltas.append(deltas)
        null += file_null
        perfect += file_perfect
    values = np.concatenate(all_values) if all_values else np.empty(0)
    deltas = np.concatenate(all_deltas) if all_deltas else np.empty(0)
    order = np.argsort(-values, kind="stable")
    values, running = values[order], null + np.cumsum(deltas[order])
    # A threshold flags every row scoring >= it: evaluate after the last of each tie.
    last_of_tie = np.append(values[1:] != values[:-1], True) if len(values) else np.empty(0, bool)
    thresholds = np.concatenate([[np.inf], values[last_of_tie]])
    totals = np.concatenate([[null], running[last_of_tie]])
    return Sweep(thresholds, totals, null, perfect)


def flags_to_scores(flags: Iterable[bool]) -> np.ndarray:
    """A detector that only says yes or no: 1.0 for a flagged row, 0.0 otherwise."""
    return np.asarray(list(flags), dtype=float)
