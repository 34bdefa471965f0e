"""Land exact Kafka offset ranges in the lake: read, decode in batches, write Parquet.

The function is a pure step over (ranges, ingested_at): re-running it with the same inputs
rewrites the same files with the same bytes, so a retried or re-executed Dagster run is
harmless. `ingested_at` is the moment the sensor cut the ranges (carried in the run's
config), not the wall clock of this attempt, for exactly that reason.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vigil.events import TIMESTAMP, decode_batch
from vigil.kafka import (
    RangeReader,
    RecordBatch,
    commit_landed,
    high_watermarks,
    topic_watermarks,
)
from vigil.lake import (
    QUARANTINE_SCHEMA,
    Lake,
    WrittenFile,
    file_name,
    floor_hour,
    hour_dir,
    raw_schema,
)

log = logging.getLogger(__name__)
_HOUR_US = 3_600_000_000
DECODE_BATCH = 25_000


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    start: int  # first offset to land
    end: int  # one past the last offset to land

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}:{self.start}-{self.end}"

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> OffsetRange:
        return cls(str(value["topic"]), int(value["partition"]), int(value["start"]),
                   int(value["end"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranges_since(bootstrap: str, before: dict[tuple[str, int], int],
                 topics: Iterable[str]) -> list[OffsetRange]:
    """Everything appended to `topics` since the high watermarks `before`."""
    return [OffsetRange(t, p, before.get((t, p), 0), high)
            for (t, p), high in sorted(high_watermarks(bootstrap, topics).items())
            if high > before.get((t, p), 0)]


def run_key(ranges: Iterable[OffsetRange]) -> str:
    return ",".join(r.key for r in sorted(ranges, key=lambda r: (r.topic, r.partition)))


@dataclass
class TopicLanding:
    topic: str
    rows: int = 0
    quarantined: int = 0
    files: list[WrittenFile] = field(default_factory=list)
    quarantine_files: list[WrittenFile] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    first_event: datetime | None = None  # event-time span of the rows landed: what
    last_event: datetime | None = None  # detection must look at again

    def cover(self, times: pa.ChunkedArray) -> None:
        span = pc.min_max(times).as_py()
        if span["min"] is None:
            return
        self.first_event = min(filter(None, (self.first_event, span["min"])))
        self.last_event = max(filter(None, (self.last_event, span["max"])))

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


@dataclass
class LandingReport:
    ranges: list[OffsetRange]
    topics: dict[str, TopicLanding]
    lag: dict[str, dict[int, int]] = field(default_factory=dict)  # after this landing

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.topics.values())

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.topics.values())


class _PartitionBuffer:
    """Decoded tables and rejects of one partition, accumulated across read batches."""

    def __init__(self, topic: str, partition: int, ingested_at: datetime) -> None:
        self.topic, self.partition = topic, partition
        self.ingested_at = ingested_at
        self.tables: list[pa.Table] = []
        self.rejects: list[dict[str, Any]] = []

    def add(self, batch: RecordBatch) -> None:
        decoded = decode_batch(self.topic, batch.values)
        rows = decoded.positions
        n = len(rows)
        table = decoded.table
        for name, column in (
            ("_partition", pa.array(np.full(n, self.partition, dtype=np.int32))),
            ("_offset", pa.array(batch.offsets[rows], pa.int64())),
            ("_kafka_timestamp", _millis(batch.timestamps[rows])),
            ("_ingested_at", pa.array(np.full(n, _micros(self.ingested_at),
                                              dtype="datetime64[us]"), TIMESTAMP)),
        ):
            table = table.append_column(name, column)
        self.tables.append(table.cast(raw_schema(self.topic)))
        for reject in decoded.rejects:
            i = reject.index
            self.rejects.append({
                "topic": self.topic, "_partition": self.partition,
                "_offset": int(batch.offsets[i]), "_kafka_timestamp": int(batch.timestamps[i]),
                "key": batch.messages[i].key(), "raw": reject.raw, "reason": reject.reason})


def _micros(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1_000_000)


def _millis(values: np.ndarray) -> pa.Array:
    mask = values < 0  # -1: the broker gave no timestamp
    return pa.array((values * 1000).astype("datetime64[us]"), TIMESTAMP, mask=mask)


def land_offset_ranges(lake: Lake, bootstrap: str, ranges: list[OffsetRange],
                       ingested_at: datetime, group: str | None = None,
                       progress: Callable[[int], None] = lambda _n: None) -> LandingReport:
    """Read exactly `ranges`, land events and quarantine, then commit `group`'s offsets.

    Partitions are landed one after another, so memory holds one partition's range.
    """
    report = LandingReport(list(ranges), {r.topic: TopicLanding(r.topic) for r in ranges})
    read = 0
    # Parquet encoding releases the GIL: one writer thread encodes partition i while the
    # main thread reads and decodes partition i + 1.
    # A broker restart mid-run is waited out (librdkafka reconnects); a longer outage fails
    # the attempt and the job's retry policy runs the same ranges again.
    with RangeReader(bootstrap, batch=DECODE_BATCH, idle_timeout=60.0) as reader, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-writer") as writer:
        pending: list[Future[None]] = []
        for r in sorted(ranges, key=lambda r: (r.topic, r.partition)):
            buffer = _PartitionBuffer(r.topic, r.partition, ingested_at)
            for batch in reader.read(r.topic, r.partition, r.start, r.end):
                buffer.add(batch)
                read += len(batch.messages)
                progress(read)
            pending.append(writer.submit(_write_partition, lake, buffer,
                                         report.topics[r.topic]))
        for future in pending:
            future.result()  # re-raises a failed write: the run fails, nothing is committed
    if group is not None:
        commit_landed(bootstrap, group, {(r.topic, r.partition): r.end for r in ranges})
    report.lag = _lag_after(bootstrap, ranges)
    return report


def _write_partition(lake: Lake, buffer: _PartitionBuffer, landing: TopicLanding) -> None:
    topic = buffer.topic
    if buffer.tables:
        table = pa.concat_tables(buffer.tables)
        landing.rows += table.num_rows
        landing.cover(table.column("timestamp"))
        for (partition, hour), part in _split(table, "timestamp"):
            landing.files.append(_write(lake, "raw", topic, partition, hour, part))
    if buffer.rejects:
        rejects = _quarantine_table(buffer.rejects, buffer.ingested_at)
        landing.quarantined += rejects.num_rows
        for reason in rejects.column("reason").to_pylist():
            landing.reasons[reason] = landing.reasons.get(reason, 0) + 1
        for (partition, hour), part in _split(rejects, "_kafka_timestamp"):
            landing.quarantine_files.append(
                _write(lake, "quarantine", topic, partition, hour, part))


def _quarantine_table(rejects: list[dict[str, Any]], ingested_at: datetime) -> pa.Table:
    n = len(rejects)
    stamps = np.array([r["_kafka_timestamp"] for r in rejects], dtype=np.int64)
    return pa.Table.from_arrays([
        pa.array([r["topic"] for r in rejects], pa.string()),
        pa.array([r["_partition"] for r in rejects], pa.int32()),
        pa.array([r["_offset"] for r in rejects], pa.int64()),
        _millis(stamps),
        pa.array(np.full(n, _micros(ingested_at), dtype="datetime64[us]"), TIMESTAMP),
        pa.array([r["key"] for r in rejects], pa.binary()),
        pa.array([r["raw"] for r in rejects], pa.binary()),
        pa.array([r["reason"] for r in rejects], pa.string()),
    ], schema=QUARANTINE_SCHEMA)


def _split(table: pa.Table, time_column: str
           ) -> Iterable[tuple[tuple[int, datetime], pa.Table]]:
    """Rows grouped by (partition, hour of `time_column`), each group in offset order."""
    if table.num_rows == 0:
        return
    partitions = table.column("_partition").to_numpy()
    times = pc.fill_null(table.column(time_column).cast(pa.int64()), 0).to_numpy()
    hours = times // _HOUR_US
    offsets = table.column("_offset").to_numpy()
    order = np.lexsort((offsets, hours, partitions))
    p_sorted, h_sorted = partitions[order], hours[order]
    breaks = np.flatnonzero((np.diff(p_sorted) != 0) | (np.diff(h_sorted) != 0)) + 1
    for chunk in np.split(order, breaks):
        first = chunk[0]
        hour = datetime.fromtimestamp(int(hours[first]) * 3600, UTC)
        contiguous = chunk[-1] - chunk[0] + 1 == len(chunk) and bool(np.all(np.diff(chunk) > 0))
        part = table.slice(int(first), len(chunk)) if contiguous else table.take(pa.array(chunk))
        yield (int(partitions[first]), hour), part


def _write(lake: Lake, area: str, topic: str, partition: int, hour: datetime,
           part: pa.Table) -> WrittenFile:
    offsets = part.column("_offset")
    first, last = pc.min(offsets).as_py(), pc.max(offsets).as_py()
    directory = hour_dir(area, topic, hour)
    events = None
    if area == "raw":  # named with its event times: reads of a span skip it unopened
        stamps = pc.min_max(part.column("timestamp").cast(pa.int64()))
        events = (stamps["min"].as_py(), stamps["max"].as_py())
    relative = f"{directory}/{file_name(topic, partition, first, events)}"
    size = lake.write(relative, part)
    if events is not None:  # the same rows landed before names carried times: one copy
        lake.remove(f"{directory}/{file_name(topic, partition, first)}")
    return WrittenFile(relative, part.num_rows, size, floor_hour(hour), partition, first, last)


def _lag_after(bootstrap: str, ranges: list[OffsetRange]) -> dict[str, dict[int, int]]:
    lag: dict[str, dict[int, int]] = defaultdict(dict)
    try:
        marks = topic_watermarks(bootstrap, {r.topic for r in ranges})
        for r in ranges:
            if r.partition in marks[r.topic]:
                lag[r.topic][r.partition] = max(0, marks[r.topic][r.partition][1] - r.end)
    except Exception as exc:  # lag is reporting, never a reason to fail a landed run
        log.warning("could not read watermarks for lag: %s", exc)
    return dict(lag)
