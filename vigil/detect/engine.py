"""The rule engine: vectorised over a topic's events, no Python loop per event.

A rule first yields *firings* — the events at which its condition holds, each with a value
(the count, the measurement, how long the condition has lasted) — computed from the past
only, so a firing never changes once the data before it is complete. Firings are then
folded into anomalies: one per (rule, entity, re-alert bucket), where buckets are aligned
to the epoch. The id hashes (rule, entity, bucket start), so detecting the same data in one
run or in many micro-batches yields the same ids, and a persisting condition becomes one
anomaly per re-alert interval whose last_seen and peak grow, not one row per event.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vigil.detect import forest, likelihood
from vigil.detect.frames import TopicFrame, entity_codes, keyed
from vigil.detect.rules import Rule
from vigil.lake import epoch_us, utc_from_us

DETECTOR = "rules"
DETECTOR_VERSION = "rules-1"
_US = 1_000_000
EVIDENCE = ("_partition", "_offset")  # landed rows carry their Kafka coordinates

ANOMALY_COLUMNS = ["id", "rule", "detector", "detector_version", "topic", "level", "entity",
                   "group_key", "window_start", "first_seen", "last_seen", "peak", "points",
                   "title", "evidence", "context"]


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table read from the lake -> the frame the engine works on. Dictionary
    columns stay Arrow dictionaries: no string is materialised or hashed again."""
    return table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t)
                           if pa.types.is_dictionary(t) else None)


def firings(rule: Rule, events: pd.DataFrame | TopicFrame,
            models: Sequence[forest.ForestModel] = (), since_us: int | None = None
            ) -> pd.DataFrame:
    """Events at which `rule` holds: its group columns, `t` (µs) and `value`; a model's
    firings also say which feature was furthest from usual (`peak_*` columns). With
    `since_us`, firings before it may be left out (the costly ones are not computed)."""
    prepared = events if isinstance(events, TopicFrame) else TopicFrame(events)
    frame = prepared.frame
    carried = [*rule.group_by, *(c for c in EVIDENCE if c in frame.columns)]
    if frame.empty:
        return pd.DataFrame(columns=[*rule.group_by, "t", "value"])
    if rule.forest is not None:
        scored = forest.score(rule, prepared, list(models), since_us)
        out = _fired(rule, frame, carried, scored.rows, prepared.times[scored.rows],
                     scored.scores)
        out["peak_feature"], out["peak_observed"], out["peak_usual"] = (
            scored.feature, scored.observed, scored.usual)
        return out
    if rule.type == "threshold":  # each event decides alone: no entity order needed
        assert rule.condition is not None
        keep = rule.condition.mask(frame)
        if rule.where is not None:
            keep &= rule.where.mask(frame)
        rows = np.flatnonzero(keep)
        return _fired(rule, frame, carried, rows, prepared.times[rows],
                      _values(rule, frame.iloc[rows]))
    if rule.likelihood is not None:
        return _likelihood_firings(rule, prepared, carried)
    rows, codes = prepared.entity_rows(
        rule.group_by, None if rule.where is None else rule.where.mask(frame))
    times = prepared.times[rows]
    if rule.type == "window_count":
        key = keyed(codes, times, int(rule.window * _US))
        left = np.searchsorted(key, key - int(rule.window * _US), side="right")
        value = (np.arange(len(key)) - left + 1).astype(float)
        fire = value >= rule.threshold
    elif rule.type == "baseline_ratio":
        window, baseline = int(rule.window * _US), int(rule.baseline * _US)
        key = keyed(codes, times, window + baseline)
        recent_start = np.searchsorted(key, key - window, side="right")
        history_start = np.searchsorted(key, key - window - baseline, side="right")
        value = (np.arange(len(key)) - recent_start + 1).astype(float)
        expected = (recent_start - history_start) * (rule.window / rule.baseline)
        fire = (value >= rule.min_count) & (value >= rule.ratio * np.maximum(expected, 1.0))
    else:  # sustained
        assert rule.condition is not None
        holds = rule.condition.mask(frame)[rows]
        fire, value = _sustained(holds, codes, times, rule)
    return _fired(rule, frame, carried, rows[fire], times[fire], value[fire])


def _entity_runs(codes: np.ndarray) -> list[slice]:
    """The runs of equal codes in rows ordered by entity: one slice per entity."""
    bounds = [0, *(np.flatnonzero(np.diff(codes)) + 1).tolist(), len(codes)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def surprise_by_entity(rule: Rule, prepared: TopicFrame
                       ) -> tuple[np.ndarray, list[slice], np.ndarray]:
    """An anomaly_likelihood rule's surprise at every event: (rows by entity then time, each
    entity's run of them, surprise). Each entity's series is scored on its own, from its past."""
    spec = rule.likelihood
    assert spec is not None
    rows, codes = prepared.entity_rows(rule.group_by)
    values = pd.to_numeric(prepared.frame[spec.column], errors="coerce").to_numpy(
        dtype=float)[rows]
    scores = np.zeros(len(rows))
    runs = _entity_runs(codes)
    for run in runs:
        scores[run] = likelihood.surprise(values[run], spec)
    return rows, runs, scores


def _likelihood_firings(rule: Rule, prepared: TopicFrame, carried: list[str]) -> pd.DataFrame:
    spec = rule.likelihood
    assert spec is not None
    rows, runs, scores = surprise_by_entity(rule, prepared)
    fire = np.zeros(len(rows), dtype=bool)
    for run in runs:
        fire[run] = likelihood.alerts(scores[run], rule.threshold, spec.quiet_points)
    return _fired(rule, prepared.frame, carried, rows[fire], prepared.times[rows[fire]],
                  scores[fire])


def _fired(rule: Rule, frame: pd.DataFrame, carried: list[str], rows: np.ndarray,
           times: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    out = frame.iloc[rows].loc[:, carried].reset_index(drop=True)
    out["t"], out["value"] = times, values
    return out


def _values(rule: Rule, rows: pd.DataFrame) -> np.ndarray:
    if rule.value_column is None:
        return np.ones(len(rows))
    return pd.to_numeric(rows[rule.value_column], errors="coerce").to_numpy(dtype=float)


def _run_starts(holds: np.ndarray, codes: np.ndarray, times: np.ndarray,
                rule: Rule) -> np.ndarray:
    """Each sample's run start (a row index), in rows ordered by (entity, time).

    A run starts at a true sample whose predecessor is another entity, false, or more than
    `max_gap` earlier."""
    n = len(holds)
    previous_ok = np.zeros(n, dtype=bool)
    if n > 1:
        previous_ok[1:] = ((codes[1:] == codes[:-1]) & holds[:-1]
                           & (times[1:] - times[:-1] <= rule.max_gap * _US))
    starts = holds & ~previous_ok
    return np.maximum.accumulate(np.where(starts, np.arange(n), 0))


def _sustained(holds: np.ndarray, codes: np.ndarray, times: np.ndarray,
               rule: Rule) -> tuple[np.ndarray, np.ndarray]:
    """For each sample: has the condition held since the start of its run for `duration`?

    The value is how long the run has lasted, in seconds, up to `longest` — a cap that
    makes the value independent of how far back the data was read.
    """
    start_index = _run_starts(holds, codes, times, rule)
    lasted = np.minimum((times - times[start_index]) / _US, rule.longest)
    value = np.where(holds, lasted, 0.0)
    return holds & (lasted >= rule.duration), value


def recent_reach(rule: Rule) -> float:
    """How far back a first read for `rule` reaches, in seconds: its whole look-back, but
    for rules whose long look-back decides only a few entities (those near firing): a
    per-user baseline needs an hour of history only for users already over `min_count`,
    a sustained run its start only for entities whose run reaches back past `duration`."""
    if rule.type == "baseline_ratio":
        return rule.window
    if rule.type == "sustained":
        return max(rule.duration, rule.max_gap)
    return rule.lookback


def may_fire(rule: Rule, frame: pd.DataFrame) -> np.ndarray:
    """Rows the rule could fire at, judged by each row alone: a firing's own event meets
    the rule's `where` and, for a sustained run, its condition. Only the entities of such
    rows need their past read."""
    keep = np.ones(len(frame), dtype=bool)
    if rule.forest is not None or rule.likelihood is not None:  # any event may score
        return keep
    if rule.where is not None:
        keep &= rule.where.mask(frame)
    if rule.type in ("sustained", "threshold"):
        assert rule.condition is not None
        keep &= rule.condition.mask(frame)
    return keep


def undecided(rule: Rule, prepared: TopicFrame, since_us: int) -> pd.DataFrame:
    """The entities (group_by columns) whose firings at t >= since_us a frame reaching only
    `recent_reach(rule)` back cannot decide; their firings need the whole look-back."""
    frame = prepared.frame
    columns = list(rule.group_by)
    if frame.empty or recent_reach(rule) >= rule.lookback:
        return pd.DataFrame(columns=columns)
    if rule.type == "baseline_ratio":  # over min_count: the baseline decides
        probe = replace(rule, type="window_count", threshold=rule.min_count, baseline=0.0)
        near = firings(probe, prepared)
        return near.loc[near["t"] >= since_us, columns].drop_duplicates()
    assert rule.condition is not None  # sustained: runs open at the frame's first sample
    rows, codes = prepared.entity_rows(rule.group_by)
    times = prepared.times[rows]
    holds = rule.condition.mask(frame)[rows]
    start_index = _run_starts(holds, codes, times, rule)
    first = np.ones(len(rows), dtype=bool)
    first[1:] = codes[1:] != codes[:-1]
    first_index = np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))
    # Past `longest` the value is capped: an earlier start would change nothing.
    open_run = (holds & (start_index == first_index) & (times >= since_us)
                & (times - times[first_index] < rule.longest * _US))
    return frame.iloc[rows[open_run]].loc[:, columns].drop_duplicates()


# Reads the events of some entities (a frame of group_by columns) from a moment to the end
# of what is being detected.
Reader = Callable[[datetime, pd.DataFrame], pd.DataFrame]


def decided_firings(rule: Rule, recent: TopicFrame, read: Reader, since: datetime,
                    models: Sequence[forest.ForestModel] = ()) -> pd.DataFrame:
    """The rule's firings at t >= since. `recent` holds the topic's events from at least
    `recent_reach(rule)` before `since`; the whole look-back is read only for the
    entities that need it (`undecided`)."""
    since_us = epoch_us(since)
    fired = firings(rule, recent, models, since_us)
    fired = fired[fired["t"] >= since_us]
    near = undecided(rule, recent, since_us)
    if near.empty:
        return fired
    again = firings(rule, TopicFrame(read(since - timedelta(seconds=rule.lookback), near)),
                    models, since_us)
    return pd.concat([fired[~among(fired, near)],
                      again[(again["t"] >= since_us) & among(again, near)]],
                     ignore_index=True)


def among(frame: pd.DataFrame, entities: pd.DataFrame) -> pd.Series:
    """Rows whose every group column holds one of the values listed for it in `entities`
    (a superset of those entities when they have several columns: the readers filter
    the lake the same way)."""
    keep = pd.Series(True, index=frame.index)
    for column in entities.columns:
        listed = entities[column].astype(object)
        values = frame[column].astype(object)
        hit = values.isin(set(listed.dropna()))
        if listed.isna().any():
            hit |= values.isna()
        keep &= hit
    return keep


def anomalies(rule: Rule, fired: pd.DataFrame, start: datetime, end: datetime
              ) -> pd.DataFrame:
    """Fold firings with start <= t < end into one anomaly per (entity, re-alert bucket)."""
    lo, hi = epoch_us(start), epoch_us(end)
    fired = fired[(fired["t"] >= lo) & (fired["t"] < hi)]
    if fired.empty:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    # Sort firings by (entity, bucket, time) and cut at each change: one anomaly per run.
    bucket_us = max(int(rule.realert * _US), 1)
    t = fired["t"].to_numpy(np.int64)
    values = fired["value"].to_numpy(float)
    bucket = t // bucket_us * bucket_us
    entity = entity_codes(fired, rule.group_by)
    order = np.lexsort((t, bucket, entity))
    t, values, bucket, entity = t[order], values[order], bucket[order], entity[order]
    cut = np.flatnonzero((entity[1:] != entity[:-1]) | (bucket[1:] != bucket[:-1])) + 1
    firsts = np.concatenate(([0], cut))
    lasts = np.concatenate((cut, [len(t)])) - 1
    peaks = np.maximum.reduceat(values, firsts)
    # A firing stands for `weight` firings when earlier ones come folded (see carry.py).
    weights = (fired["weight"].to_numpy(np.int64)[order] if "weight" in fired.columns
               else np.ones(len(t), np.int64))
    points = np.add.reduceat(weights, firsts)
    context = [c for c in fired.columns if c.startswith("peak_")]
    context_values = fired[context].to_numpy(dtype=object)[order] if context else None
    keys = fired[list(rule.group_by)].iloc[order[firsts]].to_dict("records")
    evidence = all(c in fired.columns for c in EVIDENCE)
    if evidence:
        partitions = fired["_partition"].to_numpy()[order]
        offsets = fired["_offset"].to_numpy()[order]
    records = []
    for k, (first, last) in enumerate(zip(firsts, lasts, strict=True)):  # per anomaly
        group_key = {str(c): _plain(v) for c, v in keys[k].items()}
        window_start = utc_from_us(int(bucket[first]))
        peak = float(peaks[k])
        at_peak: dict[str, Any] = {}
        if context_values is not None:  # what the row with the peak value said
            row = first + int(np.argmax(values[first:last + 1]))
            at_peak = {c: _plain(v) for c, v in zip(context, context_values[row], strict=True)}
        records.append({
            "id": anomaly_id(rule.name, group_key, window_start),
            "rule": rule.name, "detector": rule.detector,
            "detector_version": detector_version(rule),
            "topic": rule.topic, "level": rule.level,
            "entity": " / ".join("-" if v is None else str(v) for v in group_key.values()),
            "group_key": group_key, "window_start": window_start,
            "first_seen": utc_from_us(int(t[first])), "last_seen": utc_from_us(int(t[last])),
            "peak": peak, "points": int(points[k]),
            "title": render_title(rule, group_key, peak, at_peak),
            "context": at_peak,
            "evidence": ({"first": {"partition": int(partitions[first]),
                                    "offset": int(offsets[first])},
                          "last": {"partition": int(partitions[last]),
                                   "offset": int(offsets[last])}}
                         if evidence else {}),
        })
    return pd.DataFrame.from_records(records, columns=ANOMALY_COLUMNS)


def detect(rules: list[Rule], frames: dict[str, pd.DataFrame], start: datetime,
           end: datetime, models: Mapping[str, Sequence[forest.ForestModel]] | None = None
           ) -> pd.DataFrame:
    """Anomalies of every rule whose firings fall in [start, end).

    `frames` must hold each topic's events from `start - lookback(rules)` to `end`;
    `models` holds each isolation_forest rule's models of the hours it may score.
    """
    return detect_windows(rules, frames, {r.name: (start, end) for r in rules}, models)


def detect_windows(rules: list[Rule], frames: dict[str, pd.DataFrame],
                   windows: dict[str, tuple[datetime, datetime]],
                   models: Mapping[str, Sequence[forest.ForestModel]] | None = None
                   ) -> pd.DataFrame:
    """Anomalies of each rule named in `windows` whose firings fall in its own [start, end);
    `frames` must reach each rule's look-back before its start."""
    found = []
    prepared = {topic: TopicFrame(frame) for topic, frame in frames.items()}
    for rule in rules:
        if rule.topic not in prepared or rule.name not in windows:
            continue
        fired = firings(rule, prepared[rule.topic], (models or {}).get(rule.name, ()),
                        epoch_us(windows[rule.name][0]))
        found.append(anomalies(rule, fired, *windows[rule.name]))
    found = [f for f in found if not f.empty]
    if not found:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    return pd.concat(found, ignore_index=True).sort_values(["window_start", "rule", "entity"],
                                                            ignore_index=True)


def detector_version(rule: Rule) -> str:
    if rule.likelihood is not None:
        return likelihood.VERSION
    return forest.VERSION if rule.forest is not None else DETECTOR_VERSION


def detector_versions(rules: list[Rule]) -> dict[str, str]:
    """Each rule's detector and version, e.g. {"cpu_likelihood": "anomaly_likelihood
    likelihood-1"}: shown with every detection in Dagster, stored on every row."""
    return {r.name: f"{r.detector} {detector_version(r)}" for r in rules}


def floor_to(moment: datetime, step: timedelta) -> datetime:
    """The start of the epoch-aligned `step` (a re-alert bucket) holding `moment`."""
    return moment - (moment - _EPOCH) % step


def lookback_seconds(rules: list[Rule]) -> float:
    return max((r.lookback for r in rules), default=0.0)


def lookback_by_topic(rules: list[Rule]) -> dict[str, float]:
    """How far back each topic must be read: a long look-back on metrics (a detector's
    history) does not make every logs read longer."""
    return {topic: lookback_seconds([r for r in rules if r.topic == topic])
            for topic in sorted({r.topic for r in rules})}


def anomaly_id(rule: str, group_key: dict[str, Any], window_start: datetime) -> str:
    text = f"{rule}|{json.dumps(group_key, sort_keys=True)}|{window_start.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_title(rule: Rule, group_key: dict[str, Any], value: float,
                 context: dict[str, Any] | None = None) -> str:
    fields = _Fields({k: "-" if v is None else v for k, v in group_key.items()})
    fields.update(context or {})
    fields.update(value=value, threshold=_number(rule.threshold), ratio=_number(rule.ratio),
                  window=_span(rule.window), duration=_span(rule.duration),
                  value_span=_lasted(value, rule.longest))
    try:
        return rule.title.format_map(fields)
    except (ValueError, TypeError):
        return f"{rule.name} on {' / '.join(str(v) for v in group_key.values())}"


def _number(value: float) -> str:
    return f"{value:g}"


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _lasted(seconds: float, longest: float) -> str:
    """A sustained run's length for people: '6 min 26 s', '30 min or more'."""
    whole = int(seconds)
    text = f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"
    text = text.replace(" 0 s", "")
    return f"{text} or more" if longest and seconds >= longest else text


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
