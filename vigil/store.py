"""Postgres writes of anomaly_events: batched upserts that keep the Discord outbox intact."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg

# Values that define an anomaly's content: when one changes, updated_at moves.
_CONTENT = ("timestamp", "alert_level", "alert_title", "alert_message", "user_id", "tags",
            "metrics", "rule", "detector_version", "entity", "service", "window_start",
            "window_end", "evidence")

_UPSERT = f"""
INSERT INTO anomaly_events (id, timestamp, is_alert, alert_type, alert_level, alert_title,
    alert_message, user_id, tags, metrics, rule, detector, detector_version, topic, entity,
    service, window_start, window_end, detected_hour, evidence, carry)
VALUES (%(id)s, %(timestamp)s, true, %(alert_type)s, %(alert_level)s, %(alert_title)s,
    %(alert_message)s, %(user_id)s, %(tags)s, %(metrics)s, %(rule)s, %(detector)s,
    %(detector_version)s, %(topic)s, %(entity)s, %(service)s, %(window_start)s,
    %(window_end)s, %(detected_hour)s, %(evidence)s, %(carry)s)
ON CONFLICT (id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _CONTENT)},
    detected_hour = EXCLUDED.detected_hour,
    carry = EXCLUDED.carry,
    updated_at = now()
WHERE ({", ".join(f"anomaly_events.{c}" for c in _CONTENT)})
      IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _CONTENT)})
"""

# A row whose content is unchanged still takes the writing run's carry (detection state,
# not content: updated_at stays, nothing is sent again).
_CARRY = """
UPDATE anomaly_events a SET carry = c.carry
FROM unnest(%s::text[], %s::jsonb[]) AS c(id, carry)
WHERE a.id = c.id AND a.carry IS DISTINCT FROM c.carry
"""


def anomaly_rows(found: pd.DataFrame, rule_details: dict[str, dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Engine output -> anomaly_events rows (one dict per anomaly, a handful per hour)."""
    rows = []
    for anomaly in found.to_dict("records"):
        key: dict[str, Any] = anomaly["group_key"]
        details = rule_details.get(anomaly["rule"], {})
        rows.append({
            "id": anomaly["id"], "timestamp": anomaly["first_seen"],
            "alert_type": anomaly["rule"], "alert_level": anomaly["level"],
            "alert_title": anomaly["title"],
            "alert_message": _message(anomaly, details),
            "user_id": key.get("user_id"),
            "tags": json.dumps({"topic": anomaly["topic"], **key}, sort_keys=True),
            "metrics": json.dumps({"peak": anomaly["peak"], "points": anomaly["points"],
                                   **_score(anomaly), **details,
                                   **(anomaly.get("context") or {})}, sort_keys=True),
            "rule": anomaly["rule"], "detector": anomaly["detector"],
            "detector_version": anomaly["detector_version"], "topic": anomaly["topic"],
            "entity": anomaly["entity"], "service": key.get("service"),
            "window_start": anomaly["window_start"], "window_end": anomaly["last_seen"],
            # The hour whose detection owns the row (a bucket never straddles hours).
            "detected_hour": anomaly["window_start"].replace(minute=0, second=0,
                                                             microsecond=0),
            "evidence": json.dumps(anomaly.get("evidence") or {}, sort_keys=True),
            "carry": _carry(anomaly.get("carry")),
        })
    return rows


def _carry(carried: Any) -> str | None:
    """The checkpoints before the writing run's batch (carry.py); None from a whole-hour
    run."""
    return json.dumps(carried, sort_keys=True) if isinstance(carried, (dict, list)) else None


def _upsert(cur: psycopg.Cursor[Any], rows: list[dict[str, Any]]) -> int:
    """Write rows whose content changed (how many), and every row's carry."""
    if not rows:
        return 0
    cur.executemany(_UPSERT, rows)
    written = max(cur.rowcount, 0)
    cur.execute(_CARRY, ([r["id"] for r in rows], [r["carry"] for r in rows]))
    return written


def _score(anomaly: dict[Any, Any]) -> dict[str, float]:
    """A model's anomalies carry their score (the peak) under its own name."""
    return {} if anomaly["detector"] == "rules" else {"score": round(anomaly["peak"], 4)}


def _message(anomaly: dict[Any, Any], details: dict[str, Any]) -> str:
    first, last = anomaly["first_seen"], anomaly["last_seen"]
    span = "at " + f"{first:%H:%M:%S}" if first == last else f"{first:%H:%M:%S}-{last:%H:%M:%S}"
    limits = ", ".join(f"{k} {v}" for k, v in sorted(details.items()))
    return (f"{anomaly['title']}. Fired {anomaly['points']} time(s) {span} UTC, peak "
            f"{anomaly['peak']:g}" + (f" ({limits})" if limits else "") + ".")


def replace_hour(conn: psycopg.Connection[Any], detectors: Iterable[str], hour: datetime,
                 rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """Upsert an hour's anomalies of some detectors and drop rows they no longer find.

    One transaction: readers never see the hour half-replaced. Returns (written, removed);
    rows whose content did not change are not rewritten (updated_at stays).
    """
    rows = list(rows)
    with conn.transaction(), conn.cursor() as cur:
        written = _upsert(cur, rows)
        cur.execute("DELETE FROM anomaly_events WHERE detector = ANY(%s) "
                    "AND detected_hour = %s AND NOT (id = ANY(%s))",
                    (sorted(set(detectors)), hour, [r["id"] for r in rows]))
        removed = cur.rowcount
    return written, removed


def replace_windows(conn: psycopg.Connection[Any], rows: Iterable[dict[str, Any]],
                    windows: dict[str, tuple[datetime, datetime]],
                    stale: Iterable[str] = ()) -> tuple[int, int]:
    """Upsert anomalies recomputed over some re-alert buckets of each rule, and drop that
    rule's rows in those buckets it no longer finds, and the `stale` ids (anomalies
    recomputed for some entities only) it did not find again. One transaction."""
    rows = list(rows)
    with conn.transaction(), conn.cursor() as cur:
        written = _upsert(cur, rows)
        removed = 0
        ids = [r["id"] for r in rows]
        for rule, (start, end) in sorted(windows.items()):
            cur.execute("DELETE FROM anomaly_events WHERE rule = %s AND window_start >= %s "
                        "AND window_start < %s AND NOT (id = ANY(%s))",
                        (rule, start, end, ids))
            removed += cur.rowcount
        gone = sorted(set(stale) - set(ids))
        if gone:
            cur.execute("DELETE FROM anomaly_events WHERE id = ANY(%s)", (gone,))
            removed += cur.rowcount
    return written, removed


def load_model(conn: psycopg.Connection[Any], rule: str, hour: datetime, version: str
               ) -> bytes | None:
    row = conn.execute("SELECT model FROM detector_models WHERE rule = %s AND hour = %s "
                       "AND version = %s", (rule, hour, version)).fetchone()
    return bytes(row[0]) if row else None


def save_model(conn: psycopg.Connection[Any], rule: str, hour: datetime, version: str,
               model: bytes, training_rows: int, threshold: float, *, replace: bool) -> bytes:
    """Store an hour's model; unless `replace`, a model already stored (by a concurrent run)
    wins. Returns the model now stored, which every scorer of the hour then uses."""
    conflict = ("DO UPDATE SET model = EXCLUDED.model, training_rows = EXCLUDED.training_rows, "
                "threshold = EXCLUDED.threshold, trained_at = now()" if replace
                else "DO NOTHING")
    with conn.transaction():
        conn.execute("INSERT INTO detector_models (rule, hour, version, training_rows, "
                     "threshold, model) VALUES (%s, %s, %s, %s, %s, %s) "
                     f"ON CONFLICT (rule, hour, version) {conflict}",
                     (rule, hour, version, training_rows, threshold, model))
    stored = load_model(conn, rule, hour, version)
    assert stored is not None
    return stored


def last_hour_detection(conn: psycopg.Connection[Any], hour: datetime
                        ) -> tuple[str, datetime, int, int] | None:
    """(inputs digest, detected_at, events, anomalies) of the hour's last whole detection."""
    row = conn.execute("SELECT inputs, detected_at, events, anomalies FROM hour_detections "
                       "WHERE hour = %s", (hour,)).fetchone()
    return (str(row[0]), row[1], int(row[2]), int(row[3])) if row else None


def record_hour_detection(conn: psycopg.Connection[Any], hour: datetime, inputs: str,
                          events: int, anomalies: int) -> None:
    conn.execute("INSERT INTO hour_detections (hour, inputs, events, anomalies) "
                 "VALUES (%s, %s, %s, %s) ON CONFLICT (hour) DO UPDATE SET "
                 "inputs = EXCLUDED.inputs, events = EXCLUDED.events, "
                 "anomalies = EXCLUDED.anomalies, detected_at = now()",
                 (hour, inputs, events, anomalies))
