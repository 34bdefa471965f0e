"""A streaming metric detector: how surprising is a series' recent deviation from usual?

For each point, from the past only:
1. deviation: |x - median of the previous `baseline_points`| in robust sigmas (MAD, with a
   floor from the 10-90 % spread and `min_spread` of the level: a flat series is not
   infinitely sensitive, and a wobble of a few percent is not an incident), capped at
   `cap` so one spike does not blind the history that follows;
2. surprise: the mean deviation of the last `average_points`, measured against the mean and
   spread of the deviations over the `history_points` before them, as -log10 of the Gaussian
   tail probability (NAB's "anomaly likelihood" idea: a score is judged against the series'
   own record of scores, so noisy series are not always alarming);
3. alert policy: fire when the surprise reaches the threshold and nothing fired in the
   previous `quiet_points` (every false alert costs; one per incident is enough).

Every statistic is a trailing window of fixed length (pandas' rolling median and moments,
amortised O(log n) per point), so a point's score is a function of a bounded past and the
state to keep per series is those windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import log_ndtr  # type: ignore[import-untyped]

VERSION = "likelihood-1"


@dataclass(frozen=True)
class LikelihoodSpec:
    column: str
    baseline_points: int = 144
    average_points: int = 12
    history_points: int = 4000
    warmup_points: int = 100  # no score before this many points of baseline and history
    cap: float = 20.0
    min_spread: float = 0.05  # a robust sigma is at least this fraction of the level
    quiet_points: int = 150
    lookback: float = 12 * 3600.0  # seconds the engine reads before a window (>= the points)


def deviation(values: np.ndarray, spec: LikelihoodSpec) -> np.ndarray:
    """Robust sigmas from the trailing median (NaN until `warmup_points`)."""
    series = pd.Series(values, dtype=float)
    past = series.shift(1).rolling(spec.baseline_points, min_periods=spec.warmup_points)
    median = past.median()
    mad = (series.shift(1) - median).abs().rolling(
        spec.baseline_points, min_periods=spec.warmup_points).median()
    spread = (past.quantile(0.9) - past.quantile(0.1)) / (2 * 2.563)
    # NaN (no score) until the MAD itself has `warmup_points` deviations behind it.
    scale = np.maximum(np.maximum(1.4826 * mad.to_numpy(), spread.to_numpy()),
                       spec.min_spread * np.abs(median.to_numpy()) + 1e-6)
    return np.minimum(np.abs(values - median.to_numpy()) / scale, spec.cap)


def surprise(values: np.ndarray, spec: LikelihoodSpec) -> np.ndarray:
    """-log10 P(recent mean deviation this high | the series' own history); 0 while warming up."""
    dev = pd.Series(np.nan_to_num(deviation(values, spec), nan=0.0))
    recent = dev.rolling(spec.average_points, min_periods=1).mean()
    history = dev.shift(spec.average_points).rolling(spec.history_points,
                                                     min_periods=spec.warmup_points)
    # A history whose deviations vary by under half a sigma counts as half a sigma: a very
    # steady series must not turn every small wobble into a certainty.
    z: np.ndarray = ((recent - history.mean()) / np.maximum(history.std(), 0.5)).to_numpy()
    warming_up = np.isnan(z)
    return np.where(warming_up, 0.0, -log_ndtr(-np.nan_to_num(z)) / np.log(10.0))


def alerts(scores: np.ndarray, threshold: float, quiet_points: int) -> np.ndarray:
    """Fire at a score >= threshold when nothing fired in the previous `quiet_points`."""
    fired = np.zeros(len(scores), dtype=bool)
    last = -quiet_points - 1
    for i in np.flatnonzero(scores >= threshold):  # few points: the loop is over alerts
        if i - last > quiet_points:
            fired[i] = True
            last = int(i)
    return fired
