"""Continue an anomaly already stored instead of recomputing its whole re-alert bucket.

A rule's firing at t depends only on events at or before t, and on its own entity's. So a
stored anomaly that ends before a batch's first event cannot change: the ingest run
computes firings only from the batch's first event on and folds each such anomaly in as
two stand-in firings — its first (carrying its peak, its point count as weight, the first
evidence and the context at the peak) and its last. The fold then gives exactly the row a
detection of the whole bucket gives: first and last seen, evidence, points, and the peak
(an earlier peak wins a tie, as it does in one pass). An anomaly that ends at or after the
batch's first event may still change (runs in flight overlap in event time): its entity
is recomputed from the bucket's start instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg

from vigil.detect.engine import among, anomalies, epoch_us
from vigil.detect.rules import Rule

_EARLIER = """
SELECT a.rule, a.id, a.timestamp, a.window_end, a.tags, a.metrics, a.evidence
FROM anomaly_events a
JOIN unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS w(rule, lo, hi)
  ON a.rule = w.rule AND a.window_start >= w.lo AND a.window_start < w.hi
"""


def stored_anomalies(conn: psycopg.Connection[Any],
                     windows: dict[str, tuple[datetime, datetime]]
                     ) -> dict[str, dict[str, dict[str, Any]]]:
    """Each rule's stored anomalies in its buckets [start, end), by id."""
    names = sorted(windows)
    found: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    rows = conn.execute(_EARLIER, (names, [windows[n][0] for n in names],
                                   [windows[n][1] for n in names])).fetchall()
    for rule, id_, first, last, tags, metrics, evidence in rows:
        found[rule][id_] = {"first": first, "last": last, "tags": tags, "metrics": metrics,
                            "evidence": evidence}
    return found


def foldable(stored: Iterable[dict[str, Any]], details: dict[str, Any]) -> bool:
    """True when these anomalies can be continued: each carries its evidence and was found
    with the rule as configured now (an edited rule recomputes the bucket)."""
    for anomaly in stored:
        evidence, metrics = anomaly["evidence"] or {}, anomaly["metrics"] or {}
        if ("first" not in evidence or "last" not in evidence
                or any(metrics.get(k) != v for k, v in details.items())):
            return False
    return True


def reopened(rule: Rule, stored: Iterable[dict[str, Any]], batch_start: datetime
             ) -> pd.DataFrame:
    """The entities (group columns) of anomalies that events from batch_start on may still
    change (they end at or after it: runs in flight overlap in event time). Those entities
    are recomputed from their bucket's start; every other one is continued."""
    keys = [{c: anomaly["tags"].get(c) for c in rule.group_by} for anomaly in stored
            if anomaly["last"] >= batch_start]
    return pd.DataFrame.from_records(keys, columns=list(rule.group_by)).drop_duplicates(
        ignore_index=True)


def split(rule: Rule, stored: dict[str, dict[str, Any]], entities: pd.DataFrame
          ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(the anomalies kept to continue, the ids of those of `entities`, recomputed).
    `entities` match as `among` matches them, as the firings recomputed for them are."""
    if entities.empty or not stored:
        return stored, []
    ids = list(stored)
    keys = pd.DataFrame.from_records([{c: stored[i]["tags"].get(c) for c in rule.group_by}
                                      for i in ids], columns=list(rule.group_by))
    hit = among(keys, entities).to_numpy()
    return ({i: stored[i] for i, h in zip(ids, hit, strict=True) if not h},
            [i for i, h in zip(ids, hit, strict=True) if h])


def stand_ins(rule: Rule, stored: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Two firings per stored anomaly that fold into it (see the module docstring)."""
    records = []
    for anomaly in stored:
        tags, metrics, evidence = anomaly["tags"], anomaly["metrics"], anomaly["evidence"]
        key = {c: tags.get(c) for c in rule.group_by}
        context = {k: v for k, v in metrics.items() if k.startswith("peak_")}
        records.append({**key, "_partition": evidence["first"]["partition"],
                        "_offset": evidence["first"]["offset"], "t": epoch_us(anomaly["first"]),
                        "value": float(metrics["peak"]), "weight": int(metrics["points"]),
                        **context})
        records.append({**key, "_partition": evidence["last"]["partition"],
                        "_offset": evidence["last"]["offset"], "t": epoch_us(anomaly["last"]),
                        "value": float("-inf"), "weight": 0,
                        **dict.fromkeys(context)})
    return pd.DataFrame.from_records(records)


def fold(rule: Rule, fired: pd.DataFrame, window: tuple[datetime, datetime],
         stored: dict[str, dict[str, Any]] | None) -> pd.DataFrame:
    """The rule's anomalies in `window` from `fired` — firings from the batch's first event
    on — each continuing the stored anomaly of its id, if any (None: nothing stored counts,
    the window was recomputed whole)."""
    if stored:
        fresh = anomalies(rule, fired, *window)
        earlier = [stored[i] for i in fresh["id"] if i in stored]
        if earlier:
            fired = pd.concat([stand_ins(rule, earlier), fired.assign(weight=1)],
                              ignore_index=True)
    return anomalies(rule, fired, *window)
