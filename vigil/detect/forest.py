"""The isolation_forest detector: events unusual in several measurements at once.

Each hour H of a rule gets one model, trained on the rule's `training` history before H
(read from the lake, sorted by time and Kafka coordinates, sampled evenly), with a fixed
seed: the model is a pure function of the lake, so micro-batches, a backfill and the
hourly run score H alike. Features are per event and past-only (a column, its log, the
entity's event count or gap over a trailing window); with `baseline: entity` each is
measured against the entity's own median and MAD in the history, so a host that always runs
hot is not unusual for it. An event fires when its score (0-1, higher = easier to isolate)
reaches the model's threshold: a quantile of the training scores, never below `min_score`.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from vigil.detect.frames import TopicFrame, by_entity, keyed
from vigil.detect.rules import ForestSpec, Rule
from vigil.lake import epoch_us

DETECTOR = "isolation_forest"
VERSION = "iforest-3"  # stored models are keyed by it: bump when features, training, scoring change
# A model for hour H learns from the `training` history ending TRAINING_LEAD before H, so it
# can be trained before H begins (the train_next_hour_models schedule) rather than by H's
# first ingest run while the runs behind it wait (minutes of history at 20,000 events/s).
TRAINING_LEAD = timedelta(minutes=10)
_US = 1_000_000
_MAD_TO_SIGMA = 1.4826
_MIN_ENTITY_ROWS = 30  # fewer rows of history: the entity is measured against everyone
_Z_LIMIT = 50.0
_SCORE_BLOCK = 2048  # rows scored at once: x trees, the walk's arrays fit the CPU's cache


@dataclass(frozen=True)
class Trees:
    """A fitted isolation forest as plain arrays, every tree's nodes concatenated: scoring
    needs numpy only, so a run that scores never imports scikit-learn (~1.4 s here)."""

    feature: np.ndarray  # per node; -1 at a leaf
    threshold: np.ndarray
    left: np.ndarray  # absolute index of the children
    right: np.ndarray
    leaf_length: np.ndarray  # at a leaf: its depth + the expected path length below it
    roots: np.ndarray  # each tree's root node
    depth: int  # the deepest leaf
    denominator: float  # trees x expected path length of the subsample size

    @classmethod
    def of(cls, forest: Any) -> Trees:
        """From a fitted sklearn IsolationForest, reproducing its score_samples exactly."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                              ("feature", "threshold", "left", "right", "leaf")}
        roots, offset, depth = [], 0, 0
        for tree, lengths, below in zip(forest.estimators_, forest._decision_path_lengths,
                                        forest._average_path_length_per_tree, strict=True):
            t = tree.tree_
            leaf = t.children_left < 0
            parts["feature"].append(np.where(leaf, -1, t.feature))
            parts["threshold"].append(t.threshold)
            parts["left"].append(np.where(leaf, -1, t.children_left + offset))
            parts["right"].append(np.where(leaf, -1, t.children_right + offset))
            parts["leaf"].append(np.where(leaf, lengths + below - 1.0, 0.0))
            roots.append(offset)
            offset += t.node_count
            depth = max(depth, int(t.max_depth))
        n = forest._max_samples
        expected = 0.0 if n <= 1 else 1.0 if n == 2 else \
            2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n
        joined = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(feature=joined["feature"], threshold=joined["threshold"],
                   left=joined["left"], right=joined["right"], leaf_length=joined["leaf"],
                   roots=np.array(roots), depth=depth,
                   denominator=float(len(roots) * expected))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Anomaly score per row, 0-1 (sklearn's -score_samples): walks every tree at once,
        one level per step, a block of rows at a time (its arrays stay in the CPU's cache:
        a batch's rows x trees at once were memory-bound, 2-3x slower; bench/forest_score.py)."""
        x = x.astype(np.float32).astype(np.float64)  # sklearn compares in float32 inputs
        if self.denominator == 0:
            return np.ones(len(x))
        # A leaf loops to itself whatever it compares, so every row walks `depth` levels
        # without a test for having stopped: children[2 * node + goes_right].
        leaf = self.feature < 0
        nodes = np.arange(len(self.feature), dtype=np.int32)
        children = np.empty(2 * len(nodes), dtype=np.int32)
        children[0::2] = np.where(leaf, nodes, self.left)
        children[1::2] = np.where(leaf, nodes, self.right)
        feature = np.where(leaf, 0, self.feature).astype(np.intp)
        threshold = np.where(leaf, np.inf, self.threshold)
        roots = self.roots.astype(np.int32)
        lengths = np.empty(len(x))
        for begin in range(0, len(x), _SCORE_BLOCK):
            block = x[begin:begin + _SCORE_BLOCK]
            flat = block.ravel()
            row_start = (np.arange(len(block)) * block.shape[1])[:, None]
            node = np.broadcast_to(roots, (len(block), len(roots))).copy()
            for _ in range(self.depth):
                # NaN compares false: right, as in sklearn (and at a leaf, itself).
                right = ~(flat[row_start + feature[node]] <= threshold[node])
                node = children[2 * node + right]
            lengths[begin:begin + len(block)] = self.leaf_length[node].sum(axis=1)
        return np.asarray(2.0 ** (-lengths / self.denominator))


@dataclass
class ForestModel:
    rule: str
    hour: datetime
    features: tuple[str, ...]
    centre: np.ndarray  # (k,) over all the history
    scale: np.ndarray
    entity_centre: dict[str, np.ndarray]  # entity label -> (k,)
    entity_scale: dict[str, np.ndarray]
    trees: Trees | None
    threshold: float
    training_rows: int

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> ForestModel:
        # Only models vigil itself stored in its own database are ever loaded.
        model = pickle.loads(blob)
        assert isinstance(model, ForestModel)
        return model

    def baselines(self, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(entities, k) centre and scale for the given entity labels."""
        centre = np.array([self.entity_centre.get(x, self.centre) for x in labels]
                          ).reshape(len(labels), len(self.features))
        scale = np.array([self.entity_scale.get(x, self.scale) for x in labels]
                         ).reshape(len(labels), len(self.features))
        return centre, scale


def feature_matrix(spec: ForestSpec, prepared: TopicFrame, group_by: tuple[str, ...]
                   ) -> np.ndarray:
    """(rows, features) in frame order; NaN where a measurement is missing."""
    frame, times = prepared.frame, prepared.times
    columns = []
    for feature in spec.features:
        kind, _, arg = feature.partition(":")
        if kind in ("count", "gap"):
            columns.append(_trailing(kind, spec.feature_window(feature), prepared, group_by))
            continue
        values = pd.to_numeric(frame[arg if kind == "log" else feature], errors="coerce"
                               ).to_numpy(dtype=float, na_value=np.nan)
        columns.append(np.log1p(np.clip(values, 0, None)) if kind == "log" else values)
    return np.column_stack(columns) if columns else np.empty((len(times), 0))


def _trailing(kind: str, window: float, prepared: TopicFrame, group_by: tuple[str, ...]
              ) -> np.ndarray:
    """Per event, over its entity's events in the trailing window (itself included): their
    count, or the seconds since the previous one (the window when there is none)."""
    rows = prepared.by_time
    codes = prepared.codes(group_by)[rows]
    order = by_entity(codes)
    rows, codes = rows[order], codes[order]
    times = prepared.times[rows]
    reach = int(window * _US)
    out = np.empty(len(rows))
    if kind == "count":
        key = keyed(codes, times, reach)
        out[rows] = np.arange(len(key)) - np.searchsorted(key, key - reach, side="right") + 1
    else:
        gap = np.full(len(rows), float(window))
        same = codes[1:] == codes[:-1]
        gap[1:] = np.where(same, np.minimum((times[1:] - times[:-1]) / _US, window), window)
        out[rows] = gap
    return out


def baseline_labels(spec: ForestSpec, prepared: TopicFrame, group_by: tuple[str, ...]
                    ) -> tuple[np.ndarray, list[str]]:
    """`entity_labels` when each entity has its own baseline; with one global baseline,
    every row under one label: naming millions of users (a Python string each) was most of
    a transactions model's training."""
    if spec.baseline == "entity":
        return entity_labels(prepared, group_by)
    return np.zeros(len(prepared.times), np.int64), [""]


def entity_labels(prepared: TopicFrame, group_by: tuple[str, ...]
                  ) -> tuple[np.ndarray, list[str]]:
    """Entity code per row and the label of each code (as the engine names entities)."""
    codes = prepared.codes(group_by)
    if len(codes) == 0:
        return codes, []
    # Codes may be a dictionary's indices: not dense, so labels are placed by code.
    present, first = np.unique(codes, return_index=True)
    keys = prepared.frame[list(group_by)].iloc[first].to_numpy(dtype=object)
    labels = [""] * (int(present[-1]) + 1)
    for code, key in zip(present, keys, strict=True):
        labels[code] = " / ".join("-" if v is None or v is pd.NA or v != v else str(v)
                                  for v in key)
    return codes, labels


def train(rule: Rule, history: pd.DataFrame, hour: datetime) -> ForestModel | str:
    """A model for `hour` from the history before it, or why there is none."""
    spec = rule.forest
    assert spec is not None
    if len(history) < spec.min_training:
        return (f"{rule.name}: {len(history):,} events in the {spec.training / 3600:g} h "
                f"before {hour - TRAINING_LEAD:%Y-%m-%d %H:%M} (hour {hour:%H}:00's history), "
                f"needs {spec.min_training:,}: hour not scored")
    # Kafka coordinates break timestamp ties: the same history gives the same rows in the
    # same order however its files were cut.
    history = history.sort_values(["timestamp", "_partition", "_offset"], ignore_index=True)
    prepared = TopicFrame(history)
    raw = feature_matrix(spec, prepared, rule.group_by)
    centre = _nan_median(raw)
    scale = _spread(raw, centre)
    floor = np.maximum(1e-3 * (1 + np.abs(centre)), 0.05 * scale)
    # Counts move in whole events: one more than usual is never many sigmas away.
    floor[[f.startswith("count:") for f in spec.features]] = 1.0
    scale = np.maximum(scale, floor)
    entity_centre: dict[str, np.ndarray] = {}
    entity_scale: dict[str, np.ndarray] = {}
    codes, labels = baseline_labels(spec, prepared, rule.group_by)
    if spec.baseline == "entity":
        entity_centre, entity_scale = _entity_baselines(raw, codes, labels, floor)
    from sklearn.ensemble import IsolationForest  # training only: scoring needs numpy

    sample = np.linspace(0, len(raw) - 1, min(len(raw), spec.max_training)).astype(np.int64)
    model = ForestModel(rule.name, hour, spec.features, centre, scale, entity_centre,
                        entity_scale, None, 0.0, len(history))
    z = standardise(raw[sample], codes[sample], *model.baselines(labels))
    fitted = IsolationForest(n_estimators=spec.trees, max_samples=min(256, len(sample)),
                             random_state=0, n_jobs=1).fit(z)
    model.trees = Trees.of(fitted)
    model.threshold = max(spec.min_score, float(np.quantile(model.trees.score(z),
                                                            spec.quantile)))
    return model


def _spread(raw: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Robust sigma (MAD); where most values are equal (a count that is nearly always 1),
    the MAD is 0 and the standard deviation stands in, so rare values are not infinitely far."""
    mad = _nan_median(np.abs(raw - centre)) * _MAD_TO_SIGMA
    std = np.nan_to_num(np.nanstd(raw, axis=0)) if len(raw) else np.zeros_like(mad)
    return np.where(mad > 0, mad, std)


def _nan_median(values: np.ndarray) -> np.ndarray:
    centre = np.nanmedian(values, axis=0) if len(values) else np.zeros(values.shape[1])
    return np.nan_to_num(centre)


def _entity_baselines(raw: np.ndarray, codes: np.ndarray, labels: list[str],
                      floor: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    frame = pd.DataFrame(raw)
    grouped = frame.groupby(codes)
    sizes = grouped.size()
    medians = grouped.median()
    mad = (frame - medians.to_numpy()[np.searchsorted(medians.index, codes)]).abs() \
        .groupby(codes).median() * _MAD_TO_SIGMA
    spread = mad.where(mad > 0, grouped.std(ddof=0))
    centres: dict[str, np.ndarray] = {}
    scales: dict[str, np.ndarray] = {}
    for code in sizes.index[sizes.to_numpy() >= _MIN_ENTITY_ROWS]:  # per entity, not event
        centres[labels[code]] = np.nan_to_num(medians.loc[code].to_numpy(dtype=float))
        scales[labels[code]] = np.maximum(np.nan_to_num(spread.loc[code].to_numpy(float)),
                                          floor)
    return centres, scales


def standardise(raw: np.ndarray, codes: np.ndarray, centre: np.ndarray, scale: np.ndarray
                ) -> np.ndarray:
    """Robust sigmas from each row's entity baseline (`centre`/`scale` rows by code)."""
    z = (raw - centre[codes]) / scale[codes]
    return np.clip(np.nan_to_num(z, nan=0.0), -_Z_LIMIT, _Z_LIMIT)


@dataclass(frozen=True)
class Scored:
    rows: np.ndarray  # frame rows that fired
    scores: np.ndarray
    feature: np.ndarray  # per fired row: the feature furthest from usual ...
    observed: np.ndarray  # ... its value there ...
    usual: np.ndarray  # ... and the entity's usual value


def score(rule: Rule, prepared: TopicFrame, models: list[ForestModel],
          since_us: int | None = None) -> Scored:
    """Score each hour's events with that hour's model; keep those at its threshold. Only
    events at `since_us` on are scored: earlier ones (the features' past, read to count
    and time the entity's recent events) would only be thrown away after the trees' walk,
    the costly part, which grew with the past an ingest run reads, not with its batch."""
    spec = rule.forest
    assert spec is not None
    parts: list[Scored] = []
    if models and len(prepared.times):
        raw = feature_matrix(spec, prepared, rule.group_by)
        codes, labels = baseline_labels(spec, prepared, rule.group_by)
        for model in models:
            lo = epoch_us(model.hour)
            first = lo if since_us is None else max(lo, since_us)
            rows = np.flatnonzero((prepared.times >= first) & (prepared.times < lo + 3600 * _US))
            if len(rows) == 0:
                continue
            centre, scale = model.baselines(labels)
            z = standardise(raw[rows], codes[rows], centre, scale)
            assert model.trees is not None
            scores = model.trees.score(z)
            # Unusual as a whole *and* far from usual in at least one feature: the score
            # alone also ranks mild wobbles in several features high.
            fire = (scores >= model.threshold) & (np.abs(z).max(axis=1) >= spec.min_deviation)
            rows, z, scores = rows[fire], z[fire], scores[fire]
            which = np.argmax(np.abs(z), axis=1) if len(rows) else np.empty(0, np.int64)
            usual = centre[codes[rows], which]
            observed = raw[rows, which]
            logged = np.array([f.startswith("log:") for f in spec.features])[which]
            usual = np.where(logged, np.expm1(usual), usual)
            observed = np.where(logged, np.expm1(observed), observed)
            names = np.array([_feature_name(f) for f in spec.features], dtype=object)[which]
            parts.append(Scored(rows, scores, names, observed, usual))
    if not parts:
        empty = np.empty(0)
        return Scored(np.empty(0, np.int64), empty, np.empty(0, object), empty, empty)
    return Scored(*(np.concatenate([getattr(p, f) for p in parts])
                    for f in ("rows", "scores", "feature", "observed", "usual")))


def _feature_name(feature: str) -> str:
    kind, _, arg = feature.partition(":")
    if kind == "count":
        return f"events in {arg}"
    if kind == "gap":
        return "seconds since previous"
    return arg if kind == "log" else feature


def training_span(rule: Rule, hour: datetime) -> tuple[datetime, datetime]:
    assert rule.forest is not None
    end = hour - TRAINING_LEAD
    return end - timedelta(seconds=rule.forest.training), end
