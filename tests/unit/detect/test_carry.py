"""Detecting from a batch's first event on gives what a whole-bucket detection gives: stored
anomalies continued by stand-in firings, long look-backs read only for undecided entities."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from vigil.detect import carry
from vigil.detect.engine import (
    Reader,
    among,
    anomalies,
    decided_firings,
    epoch_us,
    firings,
    floor_to,
    recent_reach,
)
from vigil.detect.frames import TopicFrame
from vigil.detect.hours import rule_details
from vigil.detect.rules import Rule, load_rules
from vigil.store import anomaly_rows

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
RULES = {r.name: r for r in load_rules()}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reader(frame: pd.DataFrame) -> tuple[Reader, list[tuple[datetime, list[str]]]]:
    """The lake as one frame; records where each narrowed read started, and for whom."""
    reads: list[tuple[datetime, list[str]]] = []

    def read(start: datetime, only: pd.DataFrame) -> pd.DataFrame:
        reads.append((start, sorted(only.iloc[:, 0])))
        rows = frame[frame["timestamp"] >= start]
        return rows[among(rows, only)].reset_index(drop=True)

    return read, reads


def recent(rule: Rule, frame: pd.DataFrame, since: datetime) -> TopicFrame:
    """What the shared read of the topic holds: events from recent_reach before since."""
    start = since - timedelta(seconds=recent_reach(rule))
    return TopicFrame(frame[frame["timestamp"] >= start].reset_index(drop=True))


def lake_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows).sort_values("timestamp", kind="stable", ignore_index=True)
    frame["_partition"], frame["_offset"] = 0, np.arange(len(frame))
    return frame


def decide(rule: Rule, frame: pd.DataFrame, since: datetime
           ) -> tuple[pd.DataFrame, list[tuple[datetime, list[str]]]]:
    """decided_firings over `frame`, checked against detecting it whole; and its reads."""
    read, reads = reader(frame)
    decided = decided_firings(rule, recent(rule, frame, since), read, since)
    assert same(decided, whole(rule, frame, since))
    return decided, reads


def whole(rule: Rule, frame: pd.DataFrame, since: datetime) -> pd.DataFrame:
    fired = firings(rule, TopicFrame(frame))
    return fired[fired["t"] >= epoch_us(since)]


def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    def norm(f: pd.DataFrame) -> pd.DataFrame:
        f = f.astype(object).sort_values(["t", "_offset"]).reset_index(drop=True)
        return f[sorted(f.columns)]
    return norm(a).equals(norm(b))


def test_a_user_baseline_is_read_for_the_users_over_min_count_only() -> None:
    rule = RULES["user_log_spike"]
    rows = []
    for i in range(3600):  # u-busy: one log a second all hour, usual for them
        rows.append({"timestamp": at(i), "user_id": "u-busy"})
    for i in range(0, 3000, 600):  # u-quiet: one log per 10 min, then 60 in 2 minutes
        rows.append({"timestamp": at(i), "user_id": "u-quiet"})
    for i in range(60):
        rows.append({"timestamp": at(3300 + 2 * i), "user_id": "u-quiet"})
    for i in range(0, 3600, 7):  # many users with a log now and then
        rows.append({"timestamp": at(i), "user_id": f"u{i % 97}"})
    frame, since = lake_frame(rows), at(3330)
    decided, reads = decide(rule, frame, since)
    assert set(decided["user_id"]) == {"u-quiet"}
    # The hour was read only for the users over min_count; the rest, 5 minutes back.
    assert recent_reach(rule) == rule.window and reads == [
        (since - timedelta(seconds=rule.lookback), ["u-busy", "u-quiet"])]
    short = firings(rule, recent(rule, frame, since))
    assert "u-busy" in set(short["user_id"])  # without its baseline, the busy user fires


def test_a_sustained_run_reads_back_to_its_start_only_for_hosts_still_in_it() -> None:
    rule = RULES["cpu_sustained"]
    rows = [{"timestamp": at(s), "host": "h-hot", "cpu_percent": 95.0}
            for s in range(0, 1500, 10)]
    rows += [{"timestamp": at(s), "host": "h-ok", "cpu_percent": 90.0 if s % 120 else 20.0}
             for s in range(0, 1500, 10)]
    frame, since = lake_frame(rows), at(1200)
    decided, reads = decide(rule, frame, since)
    assert set(decided["host"]) == {"h-hot"} and decided["value"].max() > 1200
    assert reads == [(since - timedelta(seconds=rule.lookback), ["h-hot"])]


def _stored(rule: Rule, found: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Anomalies as Postgres gives them back (JSON round trip included)."""
    return {row["id"]: {"first": row["timestamp"], "last": row["window_end"],
                        "tags": json.loads(row["tags"]), "metrics": json.loads(row["metrics"]),
                        "evidence": json.loads(row["evidence"])}
            for row in anomaly_rows(found, {rule.name: rule_details(rule)})}


def _rows(rule: Rule, found: pd.DataFrame) -> list[dict[str, Any]]:
    return sorted(anomaly_rows(found, {rule.name: rule_details(rule)}), key=lambda r: r["id"])


def test_stored_anomalies_continued_equal_the_bucket_detected_whole() -> None:
    rule = RULES["metrics_isolation_forest"]  # firings carry the context at their peak
    rng = np.random.default_rng(3)
    n = 400
    t = np.sort(rng.integers(epoch_us(at(0)), epoch_us(at(899)), n))
    fired = pd.DataFrame({
        "host": rng.choice(["h1", "h2", "h3"], n), "_partition": rng.integers(0, 3, n),
        "_offset": np.arange(n), "t": t, "value": rng.choice([0.5, 0.6, 0.7, 0.8], n),
        "peak_feature": rng.choice(["cpu_percent", "latency_ms"], n),
        "peak_observed": rng.random(n) * 100, "peak_usual": rng.random(n)})
    window = (floor_to(at(0), timedelta(seconds=rule.realert)), at(900))
    whole_bucket = anomalies(rule, fired, *window)
    assert (whole_bucket["peak"] == 0.8).all()  # ties at the peak: the earliest one counts

    for cut in (1, n // 3, n // 2, n - 1):
        batch_start = t[cut]
        earlier = fired[fired["t"] < batch_start]
        stored = _stored(rule, anomalies(rule, earlier, *window))
        assert carry.foldable(stored.values(), rule_details(rule))
        assert carry.reopened(rule, stored.values(), pd.Timestamp(
            batch_start, unit="us", tz=UTC).to_pydatetime()).empty
        continued = carry.fold(rule, fired[fired["t"] >= batch_start], window, stored)
        # Only anomalies the batch touched are rewritten; their rows are the whole bucket's.
        touched = set(fired.loc[fired["t"] >= batch_start, "host"])
        expected = [r for r in _rows(rule, whole_bucket)
                    if json.loads(r["tags"])["host"] in touched]
        assert _rows(rule, continued) == expected


def test_an_anomaly_that_may_change_is_reopened_and_an_edited_rule_recomputes() -> None:
    rule = RULES["error_spike"]
    fired = pd.DataFrame({"service": ["api"] * 3 + ["web"], "_partition": [0] * 4,
                          "_offset": [1, 2, 3, 4],
                          "t": [epoch_us(at(s)) for s in (10, 20, 30, 25)],
                          "value": [20.0] * 4})
    window = (at(0), at(600))
    stored = _stored(rule, anomalies(rule, fired, *window))
    details = rule_details(rule)
    assert carry.foldable(stored.values(), details)
    assert carry.reopened(rule, stored.values(), at(31)).empty
    # api's anomaly ends at the batch's first event: only api is recomputed.
    reopened = carry.reopened(rule, stored.values(), at(30))
    assert reopened.to_dict("records") == [{"service": "api"}]
    kept, again = carry.split(rule, stored, reopened)
    assert [a["tags"]["service"] for a in kept.values()] == ["web"]
    assert [stored[i]["tags"]["service"] for i in again] == ["api"]
    edited = {**details, "threshold": 25.0}
    assert not carry.foldable(stored.values(), edited)  # the rule was edited
    bare = [{**a, "evidence": {}} for a in stored.values()]
    assert not carry.foldable(bare, details)  # nothing to show as evidence
