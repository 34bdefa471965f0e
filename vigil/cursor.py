"""The ingest cursor: the next offset to land for every topic-partition, and the next ranges.

The cursor lives in the Dagster sensor (not in a consumer group): each tick compares it with
the brokers' high watermarks and cuts the next exact [start, end) ranges. This module is the
pure part of that tick, so it is tested without Dagster or Kafka.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from vigil.ingest import OffsetRange

Cursor = dict[str, dict[int, int]]  # topic -> partition -> next offset to land
Watermarks = dict[str, dict[int, tuple[int, int]]]  # topic -> partition -> (low, high)
StartPosition = Literal["earliest", "latest"]


@dataclass(frozen=True)
class IngestPolicy:
    max_records_per_run: int = 500_000
    start: StartPosition = "earliest"  # where a never-seen partition begins


@dataclass
class IngestPlan:
    ranges: list[OffsetRange]
    cursor: Cursor
    lag: dict[str, dict[int, int]]  # high watermark minus the cursor before this plan
    notes: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(r.end - r.start for r in self.ranges)

    @property
    def total_lag(self) -> int:
        return sum(sum(p.values()) for p in self.lag.values())


def load_cursor(text: str | None) -> Cursor:
    if not text:
        return {}
    raw = json.loads(text)
    return {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in raw.items()}


def dump_cursor(cursor: Cursor) -> str:
    return json.dumps({t: {str(p): o for p, o in sorted(parts.items())}
                       for t, parts in sorted(cursor.items())}, separators=(",", ":"))


def plan_next(cursor: Cursor, marks: Watermarks, policy: IngestPolicy) -> IngestPlan:
    """Cut the next ranges: at most `max_records_per_run` records, shared in proportion.

    A partition first seen starts at its low (earliest) or high (latest) watermark. A cursor
    below the low watermark (retention deleted data before it landed) jumps to it, with a
    note saying how many offsets were lost.
    """
    new: Cursor = {topic: dict(parts) for topic, parts in cursor.items()}
    notes: list[str] = []
    lag: dict[str, dict[int, int]] = {}
    backlog: list[tuple[str, int, int, int]] = []  # topic, partition, start, high
    for topic, partitions in sorted(marks.items()):
        seen = new.setdefault(topic, {})
        lag[topic] = {}
        for partition, (low, high) in sorted(partitions.items()):
            if partition not in seen:
                seen[partition] = low if policy.start == "earliest" else high
                notes.append(f"{topic}[{partition}]: new partition, starting at "
                             f"{policy.start} offset {seen[partition]}")
            elif seen[partition] < low:
                notes.append(f"{topic}[{partition}]: offsets {seen[partition]}-{low - 1} were "
                             "deleted by retention before they landed")
                seen[partition] = low
            start = seen[partition]
            lag[topic][partition] = max(0, high - start)
            if high > start:
                backlog.append((topic, partition, start, high))
    ranges = _share(backlog, policy.max_records_per_run)
    for r in ranges:
        new[r.topic][r.partition] = r.end
    return IngestPlan(ranges, new, lag, notes)


def _share(backlog: list[tuple[str, int, int, int]], budget: int) -> list[OffsetRange]:
    """Split the record budget in proportion to each partition's backlog.

    Every partition then lands the same share of what it owes, so under a backlog the
    partitions of a topic stay close in event time: detection, which recomputes from the
    earliest newly landed event, is not made to reach minutes back because a slow
    partition lagged behind a busy one. Each partition with a backlog moves at least one
    record: none is starved."""
    owed = [high - start for _topic, _partition, start, high in backlog]
    total = sum(owed)
    if total <= budget:
        takes = owed
    else:
        exact = [o * budget / total for o in owed]
        takes = [int(x) for x in exact]
        by_fraction = sorted(range(len(owed)), key=lambda i: (takes[i] - exact[i], i))
        for i in by_fraction[:budget - sum(takes)]:
            takes[i] += 1
        for i, take in enumerate(takes):
            largest = max(range(len(takes)), key=lambda j: takes[j])
            if take == 0 and takes[largest] > 1:
                takes[largest] -= 1
                takes[i] = 1
    ranges = [OffsetRange(topic, partition, start, start + take)
              for (topic, partition, start, _high), take in zip(backlog, takes, strict=True)
              if take > 0]
    return sorted(ranges, key=lambda r: (r.topic, r.partition))
