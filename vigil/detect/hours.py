"""Detect whole hours from the lake: read H plus the rules' look-back, run the engine,
replace H's anomalies in Postgres. The lake is the source of truth: any hour can be
recomputed from it alone (backfills, scheduled reprocessing, the ingest run's own hours)."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa

from vigil.detect import carry, forest
from vigil.detect.engine import (
    ANOMALY_COLUMNS,
    Reader,
    among,
    decided_firings,
    detect,
    detector_versions,
    floor_to,
    lookback_by_topic,
    recent_reach,
    to_frame,
)
from vigil.detect.frames import TopicFrame
from vigil.detect.past_cache import PastCache
from vigil.detect.reads import NARROW_LIMIT, TopicReads, distinct, read_columns, share_key
from vigil.detect.recent_rows import RecentRows
from vigil.detect.rules import Rule
from vigil.lake import Lake, RawFiles, file_span, floor_hour, hours_between, may_hold, utc_from_us
from vigil.store import (
    anomaly_rows,
    last_hour_detection,
    load_model,
    record_hour_detection,
    replace_hour,
    replace_windows,
    save_model,
)

# "vigil" + 2 (the migrations hold + 1): one detection reads the lake and writes at a time.
DETECTION_LOCK = 0x76_69_67_69_6C_00_00_02


@contextmanager
def detection_lock(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Detections take turns, from reading the lake to writing Postgres.

    Ingest runs overlap (`VIGIL_INGEST_MAX_IN_FLIGHT`) and hourly runs may run beside them. A
    detection that read the lake before another run's events landed could otherwise write its
    older view of a bucket after the newer one, deleting a row already alerted on, which the
    next run would then create and post again. In turns, each writes from a lake holding
    every event landed before it started; a session lock, so each write commits as before.
    """
    unlock = "SELECT pg_advisory_unlock(%s)"
    conn.execute("SELECT pg_advisory_lock(%s)", (DETECTION_LOCK,))
    conn.commit()
    try:
        yield
    except BaseException:
        with suppress(psycopg.Error):  # a lost session has released its lock already
            conn.rollback()  # nothing half-written is kept
            conn.execute(unlock, (DETECTION_LOCK,))
            conn.commit()
        raise
    conn.execute(unlock, (DETECTION_LOCK,))
    conn.commit()


@dataclass(frozen=True)
class HourResult:
    hour: datetime
    events: int
    anomalies: int
    written: int
    removed: int
    by_rule: dict[str, int]
    notes: tuple[str, ...] = ()  # e.g. why a model-based rule did not score the hour
    unchanged_since: datetime | None = None  # skipped: its inputs are those of that detection
    # Events landed in what it read, topic -> the first of them: that topic's buckets from
    # there on were left to the ingest runs that landed them (`detect_hour`).
    left_to_ingest: dict[str, datetime] = field(default_factory=dict)


def rule_details(rule: Rule) -> dict[str, Any]:
    """The limits a rule fired against, stored with each anomaly's metrics."""
    details: dict[str, Any] = {}
    if rule.forest is not None:
        return {"features": list(rule.forest.features)}
    for name in ("threshold", "window", "duration", "ratio", "min_count"):
        value = getattr(rule, name)
        if value:
            details[name] = value
    return details


def _read_frames(lake: Lake, rules: list[Rule], spans: dict[str, tuple[datetime, datetime]]
                 ) -> dict[str, pd.DataFrame]:
    """Each topic's events over its span, only the columns its rules read."""
    return {topic: _read(lake, [r for r in rules if r.topic == topic], start, end)
            for topic, (start, end) in sorted(spans.items())}


def _read(lake: Lake, rules: list[Rule], start: datetime, end: datetime) -> pd.DataFrame:
    return to_frame(lake.read_events(rules[0].topic, start, end, columns=read_columns(rules),
                                     dictionary=True))


Models = dict[str, list[forest.ForestModel]]


def forest_models(lake: Lake, rules: list[Rule], conn: psycopg.Connection[Any],
                  hours: dict[str, list[datetime]], *, retrain: bool
                  ) -> tuple[Models, list[str]]:
    """Each isolation_forest rule's model for each hour it scores: the stored one, else
    trained from the lake and stored. `retrain` (whole-hour detection: the schedule, a
    backfill) trains afresh from what the lake holds now and replaces the stored model."""
    models: Models = {}
    notes: list[str] = []
    for rule in rules:
        if rule.forest is None or rule.name not in hours:
            continue
        for hour in hours[rule.name]:
            blob = None if retrain else load_model(conn, rule.name, hour, forest.VERSION)
            if blob is None:
                trained = forest.train(rule, _read(lake, [rule],
                                                   *forest.training_span(rule, hour)), hour)
                if isinstance(trained, str):
                    notes.append(trained)
                    continue
                blob = save_model(conn, rule.name, hour, forest.VERSION, trained.dumps(),
                                  trained.training_rows, trained.threshold, replace=retrain)
                conn.commit()  # at once: other runs in flight score with it, not train again
            models.setdefault(rule.name, []).append(forest.ForestModel.loads(blob))
    return models, notes


def detect_hour(lake: Lake, rules: list[Rule], conn: psycopg.Connection[Any],
                hour: datetime, *, unless_unchanged: bool = False) -> HourResult:
    """Recompute an hour's anomalies from the lake and replace its rows.

    The hour (tens of millions of events at 20,000 events/s) is read and detected without
    the detection lock, so ingest runs keep detecting meanwhile; the lock is held only to
    write. Events that landed in what was read meanwhile (always so in the hour in
    progress) were landed by ingest runs, each of which detects the buckets it landed in
    under the lock: a topic's buckets from the first such event on are left to them, and
    the earlier ones, which those events cannot change, are written. Never recomputed under
    the lock: a whole hour's work there (a minute, niced) would stall every ingest run.
    `unless_unchanged` (the reprocessing schedule) skips an hour whose inputs, the rules and
    the lake files read, are those of its last whole detection: the same rows.
    """
    hour = floor_hour(hour)
    inputs = hour_inputs(lake, rules, hour)
    if unless_unchanged:
        last = last_hour_detection(conn, hour)
        conn.commit()  # no transaction left open while the hour is read
        if last is not None and last[0] == inputs.digest:
            return HourResult(hour, last[2], last[3], 0, 0, {}, unchanged_since=last[1])
    events, found, notes = _compute_hour(lake, rules, conn, hour)
    details = {r.name: rule_details(r) for r in rules}
    with detection_lock(conn):
        landed = inputs.landed_since(hour_inputs(lake, rules, hour))
        with conn.transaction():
            if not landed:
                rows = anomaly_rows(found, details)
                written, removed = replace_hour(conn, {r.detector for r in rules}, hour, rows)
                record_hour_detection(conn, hour, inputs.digest, events, len(rows))
            else:  # not a whole detection: the next scheduled one reads the hour again
                until = {r.name: _written_until(r, hour, landed) for r in rules}
                if not found.empty:  # window_start holds datetimes: compared one by one
                    found = found[found["window_start"] < found["rule"].map(until)]
                rows = anomaly_rows(found, details)
                written, removed = replace_windows(
                    conn, rows, {name: (hour, cut) for name, cut in until.items() if cut > hour})
    return HourResult(hour, events, len(rows), written, removed, _by_rule(found),
                      tuple(notes), left_to_ingest=landed)


def _written_until(rule: Rule, hour: datetime, landed: dict[str, datetime]) -> datetime:
    """The start of the rule's first bucket that events landed since the read can change:
    firings look back, never forward, so every bucket before it is exact."""
    if rule.topic not in landed:
        return hour + timedelta(hours=1)
    return max(hour, floor_to(landed[rule.topic], timedelta(seconds=rule.realert)))


def _compute_hour(lake: Lake, rules: list[Rule], conn: psycopg.Connection[Any],
                  hour: datetime) -> tuple[int, pd.DataFrame, list[str]]:
    """(events in the hour, its anomalies, notes): the hour plus the rules' look-back read,
    each forest model retrained from what the lake holds now."""
    end = hour + timedelta(hours=1)
    frames = _read_frames(lake, rules, _hour_spans(rules, hour))
    stamp = pd.Timestamp(hour)
    events = sum(int((frame["timestamp"] >= stamp).sum()) for frame in frames.values())
    models, notes = forest_models(lake, rules, conn, {r.name: [hour] for r in rules},
                                  retrain=True)
    return events, detect(rules, frames, hour, end, models), notes


def _hour_spans(rules: list[Rule], hour: datetime) -> dict[str, tuple[datetime, datetime]]:
    end = hour + timedelta(hours=1)
    return {topic: (hour - timedelta(seconds=back), end)
            for topic, back in lookback_by_topic(rules).items()}


@dataclass(frozen=True)
class HourInputs:
    """What detecting an hour reads: `digest` of the rules as written, the detectors'
    versions and the lake files' names; `files`, topic -> those files' names."""
    digest: str
    files: dict[str, frozenset[str]]

    def landed_since(self, now: HourInputs) -> dict[str, datetime]:
        """Topic -> the first event time of the files `now` holds beyond these (or no
        longer holds); a file whose name carries no times counts from the epoch."""
        landed = {}
        for topic in sorted(self.files.keys() | now.files.keys()):
            changed = self.files.get(topic, frozenset()) ^ now.files.get(topic, frozenset())
            spans = [file_span(name) for name in changed]
            if spans:
                landed[topic] = utc_from_us(min(0 if s is None else s[0] for s in spans))
        return landed


def hour_inputs(lake: Lake, rules: list[Rule], hour: datetime) -> HourInputs:
    """The spans detecting `hour` reads (the hour with its look-back, each forest rule's
    training history) and the names of the lake files that may hold them. A raw file's
    name is a pure function of its rows, so equal names mean equal events."""
    spans = [(topic, *span) for topic, span in _hour_spans(rules, hour).items()]
    spans += [(r.topic, *forest.training_span(r, hour)) for r in rules if r.forest is not None]
    digest = hashlib.sha256(repr(sorted(repr(r) for r in rules)).encode())
    digest.update(repr(sorted(detector_versions(rules).items())).encode())
    files: dict[str, set[str]] = {}
    for topic, start, end in sorted(spans):
        digest.update(f"|{topic} {start.isoformat()} {end.isoformat()}".encode())
        for path in lake.files("raw", topic, start, end):
            if may_hold(path, start, end):
                name = path.rsplit("/", 1)[-1]
                digest.update(name.encode())
                files.setdefault(topic, set()).add(name)
    return HourInputs(digest.hexdigest(), {t: frozenset(n) for t, n in files.items()})


def _by_rule(found: pd.DataFrame) -> dict[str, int]:
    counts = found.groupby("rule").size().to_dict() if not found.empty else {}
    return {str(k): int(v) for k, v in counts.items()}


@dataclass(frozen=True)
class RecentResult:
    windows: dict[str, tuple[datetime, datetime]]  # rule -> the buckets recomputed
    anomalies: int
    written: int
    removed: int
    by_rule: dict[str, int]
    notes: tuple[str, ...] = ()
    continued: dict[str, bool] = field(default_factory=dict)  # rule -> folded, not recomputed
    reopened: dict[str, int] = field(default_factory=dict)  # continued rule -> entities redone
    # Where the pass's time went: loading (or training) models, waiting for the detection
    # lock (other runs detecting), detecting and writing under it.
    seconds: dict[str, float] = field(default_factory=dict)
    resumed: dict[str, int] = field(default_factory=dict)  # of those, resumed from carries
    why_whole: dict[str, int] = field(default_factory=dict)  # the others: reason -> entities

    @property
    def hours(self) -> list[datetime]:
        """The hours whose anomalies this pass touched."""
        return sorted({h for start, end in self.windows.values()
                       for h in hours_between(start, end)})


def detect_recent(lake: Lake, rules: list[Rule], conn: psycopg.Connection[Any],
                  landed: dict[str, tuple[datetime, datetime]],
                  cache: PastCache | None = None,
                  recent: RecentRows | None = None) -> RecentResult:
    """Re-detect just the re-alert buckets that newly landed events fall in.

    `landed` maps a topic to the event-time span of what was just landed. Each rule's rows
    in the buckets covering that span end up exactly as detecting the full hour would leave
    them, however the events were batched. When none of a rule's stored anomalies there can
    change (all ended before the batch: carry.py), only firings from the batch's first event
    on are computed and folded into them; otherwise the buckets are recomputed whole from
    the lake. Either way a topic's rules share one read reaching each rule's window back;
    the long look-backs (a baseline hour, a sustained run's start) are read only for the
    entities near firing (kept in `cache` between runs, if given), the window's past for
    every entity of the batch (the last minutes kept in `recent`, if given). Buckets never
    straddle an hour (realert divides it).
    """
    windows: dict[str, tuple[datetime, datetime]] = {}
    for rule in rules:
        if rule.topic not in landed:
            continue
        first, last = landed[rule.topic]
        step = timedelta(seconds=rule.realert)
        windows[rule.name] = (floor_to(first, step), floor_to(last, step) + step)
    if not windows:
        return RecentResult({}, 0, 0, 0, {})
    active = [r for r in rules if r.name in windows]
    details = {r.name: rule_details(r) for r in rules}
    # Models learn from history that ended before their hour: trained (once, by whichever
    # run or schedule comes first) without holding up every other run's detection.
    began = time.monotonic()
    models, notes = forest_models(
        lake, rules, conn, {name: list(hours_between(*span)) for name, span in windows.items()},
        retrain=False)
    if cache is not None:  # before the lock: the reads under it then skip files
        _index_presence(lake, active, windows, cache)
    asked = time.monotonic()
    with detection_lock(conn):
        locked = time.monotonic()
        stored = carry.stored_anomalies(conn, windows)
        continued = {r.name: carry.foldable(stored[r.name].values(), details[r.name])
                     for r in active}
        reopened = {r.name: carry.reopened(r, stored[r.name], landed[r.topic][0])
                    for r in active if continued[r.name]}
        for name, entities in reopened.items():
            if len(entities) > NARROW_LIMIT:  # cheaper to recompute the buckets whole
                continued[name] = False
        since = {r.name: landed[r.topic][0] if continued[r.name] else windows[r.name][0]
                 for r in active}
        carried = {name: Carried(stored[name], reopened[name])
                   for name, flag in continued.items() if flag}
        found, stale = _continued(lake, active, since, windows, carried, models, cache,
                                  recent, {r.name: landed[r.topic][0] for r in active})
        found = [f for f in found if not f.empty]
        anomalies = (pd.concat(found, ignore_index=True) if found
                     else pd.DataFrame(columns=ANOMALY_COLUMNS))
        rows = anomaly_rows(anomalies, details)
        # A continued rule keeps every stored row but its reopened entities' (`stale`, kept
        # only if found again); a recomputed rule's buckets are replaced.
        recomputed = {name: windows[name] for name, flag in continued.items() if not flag}
        written, removed = replace_windows(conn, rows, recomputed, stale)
    seconds = {"models": asked - began, "lock_wait": locked - asked,
               "detect": time.monotonic() - locked}
    return RecentResult(windows, len(rows), written, removed, _by_rule(anomalies),
                        tuple(notes), continued,
                        {name: len(c.reopened) for name, c in carried.items()}, seconds,
                        {name: len(c.reopened.resumed) for name, c in carried.items()},
                        dict(sum((Counter(c.reopened.why_whole) for c in carried.values()),
                                 Counter())))


def _index_presence(lake: Lake, rules: list[Rule],
                    windows: dict[str, tuple[datetime, datetime]], cache: PastCache) -> None:
    """Presence filters for the files the rules' long look-backs may read (by their one
    entity column), those landed since the last run."""
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for rule in rules:
        if recent_reach(rule) >= rule.lookback or len(rule.group_by) != 1:
            continue
        key, (start, end) = (rule.topic, rule.group_by[0]), windows[rule.name]
        start -= timedelta(seconds=rule.lookback)
        low, high = spans.get(key, (start, end))
        spans[key] = (min(low, start), max(high, end))
    for (topic, column), (start, end) in spans.items():
        cache.index(topic, column, RawFiles(lake, topic, start, end), start, end)


@dataclass(frozen=True)
class Carried:
    """A continued rule's stored anomalies in its window, and the entities whose anomalies
    may still change (recomputed)."""
    stored: dict[str, dict[str, Any]]
    reopened: carry.Reopened


def _continued(lake: Lake, rules: list[Rule], since: dict[str, datetime],
               windows: dict[str, tuple[datetime, datetime]], carried: dict[str, Carried],
               models: Models, cache: PastCache | None = None,
               recent: RecentRows | None = None, until: dict[str, datetime] | None = None
               ) -> tuple[list[pd.DataFrame], list[str]]:
    """Each rule's anomalies in its window from its firings at `since` on, folded into its
    stored anomalies when it continues them (a rule absent from `carried` recomputes), each
    with its carry before `until` (the batch start), and the ids of stored anomalies
    recomputed (reopened). A topic's rules share one read of
    what is being detected; before it, the past `recent_reach` needs is read only for the
    entities detected, once per group of rules keyed alike."""
    spans = {}
    for topic in sorted({r.topic for r in rules}):
        mine = [r for r in rules if r.topic == topic]
        spans[topic] = (min(min(since[r.name], windows[r.name][0]) - timedelta(seconds=r.lookback)
                            for r in mine),
                        max(windows[r.name][1] for r in mine))
    reads = TopicReads(lake, spans, cache, recent)
    found: list[pd.DataFrame] = []
    stale: list[str] = []
    for topic, (_, end) in spans.items():
        mine = [r for r in rules if r.topic == topic]
        head = min(since[r.name] for r in mine)
        batch = reads.table(mine, head, end)
        for key in sorted({share_key(r) for r in mine}):
            sharing = [r for r in mine if share_key(r) == key]
            frame = TopicFrame(reads.with_past(sharing, batch, min(
                since[r.name] for r in sharing), head))
            for rule in sharing:
                def read(start: datetime, only: pd.DataFrame, rule: Rule = rule,
                         head: datetime = head) -> pd.DataFrame:
                    return to_frame(reads.past([rule], start, windows[rule.name][1],
                                               listed(only), head))

                fired = decided_firings(rule, frame, read, since[rule.name],
                                        models.get(rule.name, ()))
                kept = None
                if rule.name in carried:
                    reopened = carried[rule.name].reopened
                    kept, again = carry.split(rule, carried[rule.name].stored, reopened.whole)
                    if again:
                        fired = _reopen(rule, fired, reopened.whole, read,
                                        windows[rule.name][0], models)
                        stale += again
                    if reopened.carries:
                        fired = _resume(rule, fired, reopened, read, since[rule.name], models)
                        kept = {i: a for i, a in kept.items() if i not in reopened.carries}
                        stale += list(reopened.carries)
                # A continued rule's rows keep their earlier checkpoints (an edited rule's
                # are dropped with its recomputed buckets).
                earlier = ({i: a.get("carry") for i, a in carried[rule.name].stored.items()}
                           if rule.name in carried else None)
                found.append(carry.fold(rule, fired, windows[rule.name], kept,
                                        (until or {}).get(rule.name), earlier))
    return found, stale


def _reopen(rule: Rule, fired: pd.DataFrame, entities: pd.DataFrame, read: Reader,
            start: datetime, models: Models) -> pd.DataFrame:
    """`fired` with the firings of `entities` recomputed from `start` (their window's)."""
    past = read(start - timedelta(seconds=recent_reach(rule)), entities)
    again = decided_firings(rule, TopicFrame(past), read, start, models.get(rule.name, ()))
    return pd.concat([fired[~among(fired, entities)], again[among(again, entities)]],
                     ignore_index=True)


def _resume(rule: Rule, fired: pd.DataFrame, reopened: carry.Reopened, read: Reader,
            since: datetime, models: Models) -> pd.DataFrame:
    """`fired` with the resumed entities' firings recomputed from their carries on."""
    start = carry.resume_from(reopened, since)
    past = read(start - timedelta(seconds=recent_reach(rule)), reopened.resumed)
    again = decided_firings(rule, TopicFrame(past), read, start, models.get(rule.name, ()))
    return carry.resumed(rule, fired, again, reopened, since)


def listed(entities: pd.DataFrame) -> dict[str, pa.Array]:
    return distinct(pa.Table.from_pandas(entities, preserve_index=False),
                    tuple(entities.columns))
