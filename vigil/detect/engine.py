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
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vigil.detect.rules import Rule

DETECTOR = "rules"
DETECTOR_VERSION = "rules-1"
_US = 1_000_000
_EVIDENCE = ("_partition", "_offset")  # landed rows carry their Kafka coordinates

ANOMALY_COLUMNS = ["id", "rule", "detector", "detector_version", "topic", "level", "entity",
                   "group_key", "window_start", "first_seen", "last_seen", "peak", "points",
                   "title", "evidence"]


def _micros(frame: pd.DataFrame) -> np.ndarray:
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    return stamps.to_numpy(dtype="datetime64[us]").astype(np.int64)


class TopicFrame:
    """A topic's events with what every rule needs computed once: times in µs and entity
    codes per group_by (shared by the rules that group alike)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.times = _micros(frame) if not frame.empty else np.empty(0, np.int64)
        self._codes: dict[tuple[str, ...], np.ndarray] = {}

    def codes(self, group_by: tuple[str, ...]) -> np.ndarray:
        if group_by not in self._codes:
            self._codes[group_by] = _entity_codes(self.frame, group_by)
        return self._codes[group_by]


def _column_codes(column: pd.Series) -> np.ndarray:
    """Dense codes of one column (nulls are a value of their own), via Arrow's hashing."""
    values = pa.array(column) if not hasattr(column.array, "_pa_array") \
        else column.array._pa_array
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    # Over a chunked array the kernel keeps one memo table, so every chunk's indices refer
    # to the same (growing) dictionary and can simply be concatenated.
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    if not chunks:
        return np.empty(0, np.int64)
    return np.concatenate([np.asarray(c.indices.to_numpy(zero_copy_only=False), np.int64)
                           for c in chunks])


def _entity_codes(frame: pd.DataFrame, group_by: tuple[str, ...]) -> np.ndarray:
    if frame.empty:
        return np.empty(0, np.int64)
    codes = _column_codes(frame[group_by[0]])
    for column in group_by[1:]:
        more = _column_codes(frame[column])
        codes = codes * (int(more.max()) + 1) + more
        codes = np.unique(codes, return_inverse=True)[1]  # keep codes small: no overflow
    return codes


def _order(codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The permutation sorting rows by (entity, time); only these arrays get reordered."""
    return np.lexsort((times, codes))


def _keyed(codes: np.ndarray, times: np.ndarray, reach: int) -> np.ndarray:
    """One sorted axis for all entities: entity blocks far enough apart that no window
    reaches from one into the next, so a single searchsorted serves every entity."""
    if len(times) == 0:
        return times
    base = times.min()
    span = int(times.max() - base) + reach + 1
    return codes.astype(np.int64) * span + (times - base)


def firings(rule: Rule, events: pd.DataFrame | TopicFrame) -> pd.DataFrame:
    """Events at which `rule` holds: its group columns, `t` (µs) and `value`."""
    prepared = events if isinstance(events, TopicFrame) else TopicFrame(events)
    frame = prepared.frame
    carried = [*rule.group_by, *(c for c in _EVIDENCE if c in frame.columns)]
    frame = frame[sorted(rule.columns() | set(carried))]  # only what the rule reads
    codes, times = prepared.codes(rule.group_by), prepared.times
    if rule.where is not None and not frame.empty:
        keep = rule.where.mask(frame)
        frame, codes, times = frame[keep], codes[keep], times[keep]
    if frame.empty:
        return pd.DataFrame(columns=[*rule.group_by, "t", "value"])
    order = _order(codes, times)
    codes, times = codes[order], times[order]
    if rule.type == "threshold":
        assert rule.condition is not None
        fire = rule.condition.mask(frame)[order]
        value = _values(rule, frame)[order]
    elif rule.type == "window_count":
        key = _keyed(codes, times, int(rule.window * _US))
        left = np.searchsorted(key, key - int(rule.window * _US), side="right")
        value = (np.arange(len(key)) - left + 1).astype(float)
        fire = value >= rule.threshold
    elif rule.type == "baseline_ratio":
        window, baseline = int(rule.window * _US), int(rule.baseline * _US)
        key = _keyed(codes, times, window + baseline)
        recent_start = np.searchsorted(key, key - window, side="right")
        history_start = np.searchsorted(key, key - window - baseline, side="right")
        value = (np.arange(len(key)) - recent_start + 1).astype(float)
        expected = (recent_start - history_start) * (rule.window / rule.baseline)
        fire = (value >= rule.min_count) & (value >= rule.ratio * np.maximum(expected, 1.0))
    else:  # sustained
        assert rule.condition is not None
        holds = rule.condition.mask(frame)[order]
        fire, value = _sustained(holds, codes, times, rule)
    out = frame.iloc[order[fire]].loc[:, carried].copy()
    out["t"], out["value"] = times[fire], value[fire]
    return out


def _values(rule: Rule, rows: pd.DataFrame) -> np.ndarray:
    if rule.value_column is None:
        return np.ones(len(rows))
    return pd.to_numeric(rows[rule.value_column], errors="coerce").to_numpy(dtype=float)


def _sustained(holds: np.ndarray, codes: np.ndarray, times: np.ndarray,
               rule: Rule) -> tuple[np.ndarray, np.ndarray]:
    """For each sample: has the condition held since the start of its run for `duration`?

    A run starts at a true sample whose predecessor is another entity, false, or more than
    `max_gap` earlier; the value is how long the run has lasted, in seconds.
    """
    n = len(holds)
    previous_ok = np.zeros(n, dtype=bool)
    if n > 1:
        previous_ok[1:] = ((codes[1:] == codes[:-1]) & holds[:-1]
                           & (times[1:] - times[:-1] <= rule.max_gap * _US))
    starts = holds & ~previous_ok
    start_index = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    lasted = (times - times[start_index]) / _US
    value = np.where(holds, lasted, 0.0)
    return holds & (lasted >= rule.duration), value


def anomalies(rule: Rule, fired: pd.DataFrame, start: datetime, end: datetime
              ) -> pd.DataFrame:
    """Fold firings with start <= t < end into one anomaly per (entity, re-alert bucket)."""
    lo, hi = _epoch_us(start), _epoch_us(end)
    fired = fired[(fired["t"] >= lo) & (fired["t"] < hi)]
    if fired.empty:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    bucket_us = max(int(rule.realert * _US), 1)
    fired = fired.assign(bucket=(fired["t"] // bucket_us) * bucket_us).sort_values(
        "t", kind="stable")
    keys = [*rule.group_by, "bucket"]
    aggregations: dict[str, tuple[str, str]] = {
        "first_seen": ("t", "min"), "last_seen": ("t", "max"), "peak": ("value", "max"),
        "points": ("t", "size")}
    evidence = [c for c in _EVIDENCE if c in fired.columns]
    for column in evidence:
        aggregations[f"first{column}"] = (column, "first")
        aggregations[f"last{column}"] = (column, "last")
    grouped = fired.groupby(keys, dropna=False, sort=True).agg(**aggregations).reset_index()
    records = []
    for row in grouped.to_dict("records"):  # one per anomaly, not per event
        group_key = {c: _plain(row[c]) for c in rule.group_by}
        window_start = _utc(int(row["bucket"]))
        peak = float(row["peak"])
        records.append({
            "id": anomaly_id(rule.name, group_key, window_start),
            "rule": rule.name, "detector": DETECTOR, "detector_version": DETECTOR_VERSION,
            "topic": rule.topic, "level": rule.level,
            "entity": " / ".join("-" if v is None else str(v) for v in group_key.values()),
            "group_key": group_key, "window_start": window_start,
            "first_seen": _utc(int(row["first_seen"])), "last_seen": _utc(int(row["last_seen"])),
            "peak": peak, "points": int(row["points"]),
            "title": render_title(rule, group_key, peak),
            "evidence": ({"first": {"partition": int(row["first_partition"]),
                                    "offset": int(row["first_offset"])},
                          "last": {"partition": int(row["last_partition"]),
                                   "offset": int(row["last_offset"])}}
                         if evidence else {}),
        })
    return pd.DataFrame.from_records(records, columns=ANOMALY_COLUMNS)


def detect(rules: list[Rule], frames: dict[str, pd.DataFrame], start: datetime,
           end: datetime) -> pd.DataFrame:
    """Anomalies of every rule whose firings fall in [start, end).

    `frames` must hold each topic's events from `start - lookback(rules)` to `end`.
    """
    found = []
    prepared = {topic: TopicFrame(frame) for topic, frame in frames.items()}
    for rule in rules:
        if rule.topic not in prepared:
            continue
        found.append(anomalies(rule, firings(rule, prepared[rule.topic]), start, end))
    found = [f for f in found if not f.empty]
    if not found:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    return pd.concat(found, ignore_index=True).sort_values(["window_start", "rule", "entity"],
                                                            ignore_index=True)


def lookback_seconds(rules: list[Rule]) -> float:
    return max((r.lookback for r in rules), default=0.0)


def anomaly_id(rule: str, group_key: dict[str, Any], window_start: datetime) -> str:
    text = f"{rule}|{json.dumps(group_key, sort_keys=True)}|{window_start.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_title(rule: Rule, group_key: dict[str, Any], value: float) -> str:
    fields = _Fields({k: "-" if v is None else v for k, v in group_key.items()})
    fields.update(value=value, threshold=_number(rule.threshold), ratio=_number(rule.ratio),
                  window=_span(rule.window), duration=_span(rule.duration))
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


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_us(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def _utc(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)
