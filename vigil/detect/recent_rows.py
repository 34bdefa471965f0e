"""The last minutes of a topic's rows, kept between ingest runs.

Before a batch, detection needs the window's past (five minutes for a per-user count) of
every entity in the batch: thousands of them, so reading it from the lake decodes every
row of those minutes, and the next run, a few seconds of events later, decodes nearly the
same rows again. So the rows read are kept as uncompressed Arrow segments (memory-mapped,
nothing to decode) and each run reads from the lake only what is new to them: the events
after their end, and any file landed late inside their span. A run's cost then follows
its batch, not the window.

The lake stays the source of truth. The manifest names the lake files whose rows in the
kept span are all kept. Each read checks it against the run's listing of the lake over
the span it can see: a listed file not named was landed late (by a run beside this one)
and is read whole for the kept span; a named file no longer listed means the lake
changed under the kept rows, and they are dropped. Segments are written before the
manifest naming them, the manifest to a temporary renamed into place, so a crash leaves
the old manifest with its segments, or none. Detection holds its lock while it reads: one
process uses a manifest at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.ipc as ipc

from vigil.lake import (
    RawFiles,
    epoch_us,
    file_span,
    raw_schema,
    scan_events,
    time_range,
    utc_from_us,
)

# Kept before the earliest start a run asked for: the next run's batch may begin a little
# earlier in event time (partitions drift), and should still be served.
SLACK = timedelta(minutes=2)
_SLACK_US = SLACK // timedelta(microseconds=1)


@dataclass(frozen=True)
class Segment:
    name: str
    last: int  # µs, its latest row's time: dropped once the kept span starts after it


@dataclass
class Manifest:
    start: int  # µs, the kept span [start, end)
    end: int
    files: set[str]  # lake files whose rows in the span are all kept
    segments: list[Segment] = field(default_factory=list)


class RecentRows:
    """Kept rows under `directory`, one manifest per lake, topic, columns and `where`."""

    def __init__(self, directory: Path, lake_url: str) -> None:
        self.directory = directory
        self._lake = lake_url
        self.hits = 0
        self.misses = 0

    def read(self, files: RawFiles, columns: list[str], where: pads.Expression | None,
             start: datetime, head: datetime, entities: pads.Expression) -> pa.Table | None:
        """Rows of `files`' topic in [start, head) meeting `where` and `entities`, with
        `columns`, ordered by time then Kafka coordinates; None when the kept rows do not
        reach back to `start` yet (read the lake). Either way the kept rows are brought up
        to `head`."""
        place = self._place(files.topic, columns, where)
        low, high = epoch_us(start), epoch_us(head)
        kept = _load(place)
        if kept is not None and (kept.end < low - _SLACK_US or not _still_valid(kept, files)):
            kept = None  # nothing kept is of use any more, or the lake changed under it
        fresh = Manifest(high, high, set()) if kept is None else replace(kept,
                                                                         files=set(kept.files))
        added = _catch_up(fresh, files, columns, where, head)
        served = fresh.start <= low
        if served:
            self.hits += 1
        else:
            self.misses += 1
        rows = None
        if served:
            new = {s.name: rows for s, rows in added}
            stored = [new[s.name] if s.name in new else _open(place / s.name)
                      for s in fresh.segments]
            table = pa.concat_tables(stored) if stored else None
            if table is not None:
                rows = table.filter(time_range(start, head) & entities).sort_by(
                    [("timestamp", "ascending"), ("_partition", "ascending"),
                     ("_offset", "ascending")])
            else:
                rows = raw_schema(files.topic).empty_table().select(columns)
        _trim(fresh, low - _SLACK_US)
        _store(place, fresh, added)
        return rows

    def _place(self, topic: str, columns: list[str], where: pads.Expression | None) -> Path:
        key = json.dumps([self._lake, topic, columns, "" if where is None else str(where)])
        return self.directory / f"{topic}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _still_valid(kept: Manifest, files: RawFiles) -> bool:
    """Whether every named file the run can see in the kept span is still in the lake, and
    the kept rows end where the run's listing can carry them on."""
    seen = max(kept.start, epoch_us(files.start))
    if kept.end < seen:
        return False
    named = {n for n in kept.files if _overlaps(n, seen, kept.end)}
    return named <= files.names(utc_from_us(seen), utc_from_us(kept.end))


def _catch_up(kept: Manifest, files: RawFiles, columns: list[str],
              where: pads.Expression | None, head: datetime) -> list[tuple[Segment, pa.Table]]:
    """Read into `kept` the files landed late inside its span and the events after it up
    to `head`; the new segments with their rows."""
    added = []
    first, end = utc_from_us(kept.start), utc_from_us(kept.end)
    late = files.names(max(first, files.start), end) - kept.files
    if late:
        added.append(scan_events(files.dataset(first, end, only=late), first, end, columns,
                                 where=where))
        kept.files |= late
    if head > end:
        added.append(scan_events(files.dataset(end, head), end, head, columns, where=where))
        kept.files |= files.names(end, head)
        kept.end = epoch_us(head)
    segments = []
    for rows in added:
        if rows.num_rows:
            last = pc.max(pc.cast(rows.column("timestamp"), pa.int64())).as_py()
            segments.append((Segment(f"{os.urandom(8).hex()}.arrow", last), rows))
    kept.segments += [s for s, _ in segments]
    return segments


def _trim(kept: Manifest, start: int) -> None:
    """Keep the span from `start` on: older segments and file names are dropped."""
    if start <= kept.start:
        return
    kept.start = min(start, kept.end)
    kept.segments = [s for s in kept.segments if s.last >= kept.start]
    kept.files = {n for n in kept.files if _overlaps(n, kept.start, kept.end)}


def _overlaps(name: str, low: int, high: int) -> bool:
    span = file_span(name)
    return span is None or (span[1] >= low and span[0] < high)


def _open(path: Path) -> pa.Table:
    with ipc.open_file(pa.memory_map(str(path))) as reader:
        return reader.read_all()


def _load(place: Path) -> Manifest | None:
    try:
        meta = json.loads((place / "manifest.json").read_text())
        return Manifest(meta["start"], meta["end"], set(meta["files"]),
                        [Segment(name, last) for name, last in meta["segments"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none kept yet, or unreadable: start afresh


def _store(place: Path, new: Manifest,
           added: list[tuple[Segment, pa.Table]]) -> None:
    """Segments first, then the manifest naming them; then segments no longer named."""
    place.mkdir(parents=True, exist_ok=True)
    named = {s.name for s in new.segments}
    for segment, rows in added:
        if segment.name in named:
            _write_arrow(place / segment.name, rows)
    meta = {"start": new.start, "end": new.end, "files": sorted(new.files),
            "segments": [[s.name, s.last] for s in new.segments]}
    temporary = place / f".manifest.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(meta))
    os.replace(temporary, place / "manifest.json")
    for path in place.glob("*.arrow"):
        if path.name not in named:
            path.unlink(missing_ok=True)


def _write_arrow(path: Path, rows: pa.Table) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with ipc.new_file(str(temporary), rows.schema) as writer:
        writer.write_table(rows)
    os.replace(temporary, path)
