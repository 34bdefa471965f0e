"""`vigil evaluate nab`: score vigil's metric detectors on the NAB corpus as NAB does.

Each series becomes one entity of a metrics frame (its file name as the host, its values in
the rule's column) and goes through the engine's own scoring (`surprise_by_entity`) and
alert policy (`likelihood.alerts`) — the two steps `engine.firings` composes in the
pipeline. NAB then picks one threshold per profile for the whole corpus; the rule's own
threshold is reported too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from vigil.detect import likelihood
from vigil.detect.engine import surprise_by_entity
from vigil.detect.frames import TopicFrame
from vigil.detect.rules import Rule
from vigil.evaluation.nab_corpus import Series
from vigil.evaluation.nab_score import Profile, row_parts, sweep
from vigil.evaluation.table import markdown

# From the dataset's README: published results on these 24 files (standard/low-FP/low-FN).
PUBLISHED = {
    "ARTime": (67.3, 56.3, 73.4), "Numenta HTM": (66.5, 59.4, 70.8),
    "HTM Java": (60.7, 50.9, 66.3), "CAD OSE": (60.0, 56.2, 65.6),
    "KNN CAD": (54.7, 43.3, 61.0), "Random Cut Forest": (51.9, 33.7, 58.2),
    "Twitter ADVec": (33.9, 23.9, 39.6), "Windowed Gaussian": (24.3, 6.8, 31.8),
    "Random": (18.4, 5.0, 26.5), "Null": (0.0, 0.0, 0.0)}
THRESHOLDS = np.concatenate([np.arange(0.5, 4.0, 0.125), np.arange(4.0, 12.5, 0.5)])


def series_frame(rule: Rule, corpus: Sequence[Series]) -> pd.DataFrame:
    """The corpus as the rule's topic would land it: one entity per file."""
    spec = rule.likelihood
    assert spec is not None
    entity, *others = rule.group_by
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(np.concatenate([s.timestamps for s in corpus]), utc=True),
        entity: np.repeat([s.name for s in corpus], [len(s.values) for s in corpus]),
        spec.column: np.concatenate([s.values for s in corpus])})
    for column in others:
        frame[column] = "nab"
    return frame


def corpus_scores(rule: Rule, corpus: Sequence[Series]) -> list[np.ndarray]:
    """Each file's surprise per row, in the file's own row order."""
    frame = series_frame(rule, corpus)
    rows, _runs, scores = surprise_by_entity(rule, TopicFrame(frame))
    by_row = np.empty(len(frame))
    by_row[rows] = scores
    bounds = np.cumsum([0, *(len(s.values) for s in corpus)])
    return [by_row[a:b] for a, b in pairwise(bounds)]


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    threshold: float  # chosen over the corpus
    score: float
    at_rule_threshold: float


@dataclass(frozen=True)
class FileResult:
    name: str
    windows: int
    hits: int
    false_alerts: int
    score: float | None  # standard profile at its corpus threshold; None: no window


def _flags(scores: list[np.ndarray], threshold: float, quiet: int) -> list[np.ndarray]:
    return [likelihood.alerts(s, threshold, quiet).astype(float) for s in scores]


def evaluate(rule: Rule, corpus: Sequence[Series], profiles: Sequence[Profile]
             ) -> tuple[list[ProfileResult], list[FileResult]]:
    spec = rule.likelihood
    if spec is None:
        raise ValueError(f"rule {rule.name!r} is not an anomaly_likelihood rule")
    scores = corpus_scores(rule, corpus)
    labelled = [s.labelled for s in corpus]
    candidates = sorted({*THRESHOLDS.tolist(), rule.threshold})
    flags_at = {t: _flags(scores, t, spec.quiet_points) for t in candidates}
    results = []
    for profile in profiles:
        totals = {t: sweep(labelled, flags_at[t], profile).at(1.0) for t in candidates}
        best = max(candidates, key=lambda t: (totals[t], -t))
        results.append(ProfileResult(profile.name, best, totals[best], totals[rule.threshold]))
    standard = next((r for r in results if r.profile == "standard"), results[0])
    profile = next(p for p in profiles if p.name == standard.profile)
    files = []
    for series, flags in zip(corpus, flags_at[standard.threshold], strict=True):
        parts = row_parts(series.labelled)
        flagged = np.flatnonzero((flags > 0) & parts.counted)
        hit = {int(parts.window[i]) for i in flagged if parts.window[i] >= 0}
        false = int(np.sum(parts.window[flagged] < 0))
        windows = len(series.labelled.windows)
        score = sweep([series.labelled], [flags], profile).at(1.0) if windows else None
        files.append(FileResult(series.name, windows, len(hit), false, score))
    return results, files


def report(rule: Rule, data: Path, results: list[ProfileResult], files: list[FileResult]
           ) -> str:
    lines = [f"NAB v1.1 score of rule {rule.name!r} ({rule.detector} {likelihood.VERSION}) "
             f"on {len(files)} files from {data}", ""]
    lines += markdown(
        ["file", "windows", "caught", "false alerts", "standard score"],
        [*([f.name, f.windows, f.hits, f.false_alerts,
            "-" if f.score is None else f"{f.score:.1f}"] for f in files),
         ["total", sum(f.windows for f in files), sum(f.hits for f in files),
          sum(f.false_alerts for f in files), ""]])
    lines.append("")
    lines += markdown(
        ["detector", *(r.profile for r in results)],
        [[f"vigil {rule.name} (corpus threshold)",
          *(f"{r.score:.1f} (>= {r.threshold:g})" for r in results)],
         [f"vigil {rule.name} (its threshold {rule.threshold:g})",
          *(f"{r.at_rule_threshold:.1f}" for r in results)],
         *([f"{name} (published)", *(f"{v:.1f}" for v in published[:len(results)])]
           for name, published in PUBLISHED.items())])
    return "\n".join(lines)
