"""Continue an anomaly already stored instead of recomputing its whole re-alert bucket.

A rule's firing at t depends only on events at or before t, and on its own entity's. So a
stored anomaly that ends before a batch's first event cannot change: the ingest run
computes firings only from the batch's first event on and folds each such anomaly in as
two stand-in firings — its first (carrying its peak, its point count as weight, the first
evidence and the context at the peak) and its last. The fold then gives exactly the row a
detection of the whole bucket gives: first and last seen, evidence, points, and the peak
(an earlier peak wins a tie, as it does in one pass). An anomaly that ends at or after the
batch's first event may still change (runs in flight overlap in event time): its entity
is recomputed instead.

Recomputing from the bucket's start would redo every firing of an anomaly still open, run
after run, while it lasts. So each row written also keeps its carry: the fold of its
firings before the writing run's batch start (`until`). Firings before a run's batch start
are not its to change (an event landed later, earlier in time, comes with a batch starting
before it, whose run finds the carry too late to use and recomputes from the bucket's
start). A reopened entity whose open anomalies all carry an `until` at or before the batch
start is resumed: the carries stand in for the firings before `until`, and only the
firings from there on are recomputed.

Runs in flight take the detection lock in any order, so a run often finds the carry of a
run whose batch starts after its own. Each row therefore keeps its last few carries
(checkpoints, oldest first): a run resumes from the latest one at or before its batch
start, and writes its own after those, dropping any later one (it may lack this batch's
events). A later checkpoint whose firings all precede the batch start serves too, as the
same fold up to that start: so does a row a later batch's run wrote first (no firings).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from vigil.detect.engine import among, anomalies, epoch_us
from vigil.detect.rules import Rule
from vigil.lake import utc_from_us

_EARLIER = """
SELECT a.rule, a.id, a.timestamp, a.window_end, a.tags, a.metrics, a.evidence, a.carry
FROM anomaly_events a
JOIN unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS w(rule, lo, hi)
  ON a.rule = w.rule AND a.window_start >= w.lo AND a.window_start < w.hi
"""
_STORED = ("timestamp", "window_end", "tags", "metrics", "evidence", "carry")


def stored_anomalies(conn: psycopg.Connection[Any],
                     windows: dict[str, tuple[datetime, datetime]]
                     ) -> dict[str, dict[str, dict[str, Any]]]:
    """Each rule's stored anomalies in its buckets [start, end), by id."""
    names = sorted(windows)
    found: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    rows = conn.execute(_EARLIER, (names, [windows[n][0] for n in names],
                                   [windows[n][1] for n in names])).fetchall()
    for rule, id_, *columns in rows:
        found[rule][id_] = as_stored(dict(zip(_STORED, columns, strict=True)))
    return found


def as_stored(row: dict[str, Any]) -> dict[str, Any]:
    """An anomaly_events row (JSON columns decoded, as Postgres returns them, or as text, as
    `anomaly_rows` writes them) as the detection continuing it reads it."""
    def decoded(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value
    return {"first": row["timestamp"], "last": row["window_end"], "tags": decoded(row["tags"]),
            "metrics": decoded(row["metrics"]), "evidence": decoded(row["evidence"]),
            "carry": decoded(row["carry"])}


def foldable(stored: Iterable[dict[str, Any]], details: dict[str, Any]) -> bool:
    """True when these anomalies can be continued: each carries its evidence and was found
    with the rule as configured now (an edited rule recomputes the bucket)."""
    for anomaly in stored:
        evidence, metrics = anomaly["evidence"] or {}, anomaly["metrics"] or {}
        if ("first" not in evidence or "last" not in evidence
                or any(metrics.get(k) != v for k, v in details.items())):
            return False
    return True


KEPT = 4  # checkpoints per row: runs in flight at once, with room to spare

# Why an entity is recomputed from its bucket's start instead of resumed.
NO_CARRY = "no carry"  # written by a whole-hour run (or by a run before carries)
CARRIED_LATER = "carries after the batch start"  # an earlier batch detected after later ones
GROUPED = "grouped with those"  # a rule keyed by several columns: one path for all


@dataclass(frozen=True)
class Reopened:
    """The entities of anomalies that events from a batch's start on may still change (they
    end at or after it: runs in flight overlap in event time)."""
    whole: pd.DataFrame  # entities (group columns) recomputed from their bucket's start
    resumed: pd.DataFrame  # entities recomputed from their open anomalies' carries
    # The resumed open anomalies by id, each with the one checkpoint it resumes from.
    carries: dict[str, dict[str, Any]]
    why_whole: dict[str, int] = field(default_factory=dict)  # reason -> `whole` entities

    def __len__(self) -> int:
        return len(self.whole) + len(self.resumed)


def reopened(rule: Rule, stored: dict[str, dict[str, Any]], batch_start: datetime
             ) -> Reopened:
    """Which entities are recomputed, and from where (see the module docstring). Every
    other entity is continued."""
    columns = list(rule.group_by)
    start_us = epoch_us(batch_start)
    bucket_us = max(int(rule.realert * 1_000_000), 1)
    open_ = {i: a for i, a in stored.items() if a["last"] >= batch_start}
    by_entity: dict[tuple[Any, ...], list[str]] = {}
    for id_, anomaly in open_.items():
        by_entity.setdefault(_key(rule, anomaly), []).append(id_)
    whole: list[tuple[Any, ...]] = []
    resumed: list[tuple[Any, ...]] = []
    chosen: dict[str, dict[str, Any]] = {}
    why: Counter[str] = Counter()
    for key, ids in by_entity.items():
        found = {i: usable(open_[i].get("carry"), start_us,
                           epoch_us(open_[i]["first"]) // bucket_us * bucket_us)
                 for i in ids}
        if all(c is not None for c in found.values()):
            resumed.append(key)
            chosen.update({i: {**open_[i], "carry": c} for i, c in found.items()})
        else:
            whole.append(key)
            why[NO_CARRY if any(not checkpoints(open_[i].get("carry")) for i in ids)
                else CARRIED_LATER] += 1
    if len(columns) > 1 and whole and resumed:
        # Recomputing `whole` from the bucket's start rereads a superset of its entities
        # (each column's values listed): keep every entity on that one path.
        why[GROUPED] += len(resumed)
        whole, resumed, chosen = whole + resumed, [], {}
    return Reopened(pd.DataFrame.from_records(whole, columns=columns),
                    pd.DataFrame.from_records(resumed, columns=columns), chosen, dict(why))


def _key(rule: Rule, anomaly: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(anomaly["tags"].get(c) for c in rule.group_by)


def checkpoints(carried: Any) -> list[dict[str, Any]]:
    """A row's stored carries, oldest first (a single one as rows kept it before)."""
    if isinstance(carried, dict):
        return [carried]
    return [c for c in carried if isinstance(c, dict)] if isinstance(carried, list) else []


def usable(carried: Any, batch_start_us: int, bucket_start_us: int
           ) -> dict[str, Any] | None:
    """The latest checkpoint a batch starting at `batch_start_us` resumes from, in a bucket
    starting at `bucket_start_us`. Each folds the firings before its `until`, so it serves once
    the batch starts no earlier; or, when all it folds ended before the batch (none, often:
    the row was first written by a later batch's run), as the same fold up to the batch
    start, since firings before it depend only on events before it."""
    for checkpoint in reversed(checkpoints(carried)):
        if "first" in checkpoint and not _has_evidence(checkpoint):
            continue
        if int(checkpoint.get("until", batch_start_us + 1)) <= batch_start_us:
            return checkpoint
        if int(checkpoint.get("last", -1)) < batch_start_us:
            return {**checkpoint, "until": max(batch_start_us, bucket_start_us)}
    return None


def _has_evidence(carried: dict[str, Any]) -> bool:
    evidence = carried.get("evidence") or {}
    return "first" in evidence and "last" in evidence


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


def resume_from(reopened: Reopened, batch_start: datetime) -> datetime:
    """Where the resumed entities' firings are recomputed from: their earliest carry's
    `until`, or the batch start if earlier (a carry serving from a bucket's start, a later
    bucket's than the batch start's; the entity's firings in the earlier one are cut at
    the batch start)."""
    return min(batch_start, utc_from_us(min(int(a["carry"]["until"])
                                            for a in reopened.carries.values())))


def resumed(rule: Rule, fired: pd.DataFrame, again: pd.DataFrame, reopened: Reopened,
            batch_start: datetime) -> pd.DataFrame:
    """`fired` (firings from the batch start on) with the resumed entities' firings
    replaced: their carries' stand-ins, and what `again` recomputed from each carry's
    `until` on (from the batch start in a bucket where the entity had no open anomaly:
    what is stored there was continued as usual)."""
    columns = list(rule.group_by)
    bucket_us = max(int(rule.realert * 1_000_000), 1)
    cuts = pd.DataFrame.from_records(
        [{**dict(zip(columns, _key(rule, a), strict=True)),
          "_bucket": epoch_us(a["first"]) // bucket_us * bucket_us,
          "_cut": int(a["carry"]["until"])} for a in reopened.carries.values()],
        columns=[*columns, "_bucket", "_cut"])
    again = again[exact(again, reopened.resumed)]
    bucket = again["t"].to_numpy(np.int64) // bucket_us * bucket_us
    cut = _nulls_named(again[columns]).assign(_bucket=bucket).merge(
        _nulls_named(cuts), on=[*columns, "_bucket"], how="left")["_cut"]
    again = again[again["t"].to_numpy(np.int64) >= cut.fillna(epoch_us(batch_start))
                  .to_numpy(np.int64)]
    carried = [{"first": utc_from_us(c["first"]), "last": utc_from_us(c["last"]),
                "tags": a["tags"], "evidence": c["evidence"],
                "metrics": {"peak": c["peak"], "points": c["points"], **c["context"]}}
               for a in reopened.carries.values() if "first" in (c := a["carry"])]
    parts = [fired[~exact(fired, reopened.resumed)].assign(weight=1), again.assign(weight=1)]
    if carried:
        parts.append(stand_ins(rule, carried))
    return pd.concat(parts, ignore_index=True)


def exact(frame: pd.DataFrame, entities: pd.DataFrame) -> np.ndarray:
    """Rows of exactly these entities (`among` matches a superset of several columns)."""
    if frame.empty or entities.empty:
        return np.zeros(len(frame), bool)
    columns = list(entities.columns)
    listed = _nulls_named(entities).drop_duplicates().assign(_hit=True)
    return _nulls_named(frame[columns]).merge(listed, on=columns, how="left")[
        "_hit"].notna().to_numpy()


def _nulls_named(frame: pd.DataFrame) -> pd.DataFrame:
    """Group columns as objects with nulls spelled alike (None, NaN), to join on."""
    return frame.astype(object).where(frame.notna(), "\0null").reset_index(drop=True)


def fold(rule: Rule, fired: pd.DataFrame, window: tuple[datetime, datetime],
         stored: dict[str, dict[str, Any]] | None, until: datetime | None = None,
         history: dict[str, Any] | None = None) -> pd.DataFrame:
    """The rule's anomalies in `window` from `fired` — firings from the batch's first event
    on — each continuing the stored anomaly of its id, if any (None: nothing stored counts,
    the window was recomputed whole). Given `until` (the batch start), each carries its
    fold before it after the checkpoints before it of `history` (id -> stored carry; see
    the module docstring)."""
    fired = fired.assign(weight=fired["weight"].fillna(1).astype(np.int64)
                         if "weight" in fired.columns else 1)
    if stored:
        fresh = anomalies(rule, fired, *window)
        earlier = [stored[i] for i in fresh["id"] if i in stored]
        if earlier:
            fired = pd.concat([stand_ins(rule, earlier), fired], ignore_index=True)
    found = anomalies(rule, fired, *window)
    if until is None or found.empty:
        return found
    return found.assign(carry=pd.Series(carries(rule, fired, window, until, found, history),
                                        index=found.index, dtype=object))


def carries(rule: Rule, fired: pd.DataFrame, window: tuple[datetime, datetime],
            until: datetime, found: pd.DataFrame, history: dict[str, Any] | None = None
            ) -> list[list[dict[str, Any]] | None]:
    """Each anomaly found's checkpoints: those of `history` (id -> stored carry) before
    this one, then its fold of its firings before `until` (not before its bucket)."""
    until_us = epoch_us(until)
    before = anomalies(rule, fired[fired["t"] < until_us], *window)
    prior = {row["id"]: row for row in before.to_dict("records")}
    kept: list[list[dict[str, Any]] | None] = []
    for id_, start in zip(found["id"], found["window_start"], strict=True):
        cut = max(until_us, epoch_us(start))
        older = [c for c in checkpoints((history or {}).get(id_))
                 if int(c.get("until", cut)) < cut][-(KEPT - 1):]
        p = prior.get(id_)
        if p is None:
            older.append({"until": cut})  # no firing before it
        elif math.isfinite(p["peak"]) and p["evidence"]:
            older.append({"until": cut, "first": epoch_us(p["first_seen"]),
                          "last": epoch_us(p["last_seen"]), "peak": p["peak"],
                          "points": p["points"], "context": p["context"] or {},
                          "evidence": p["evidence"]})
        # else nothing a later run could stand in for from here: the older ones serve
        kept.append(older or None)
    return kept
