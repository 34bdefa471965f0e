"""The long pasts of a few entities, kept between ingest runs.

A rule's long look-back (a user's baseline hour, a host's sustained run back to its start,
an open anomaly's bucket) is read only for the few entities near firing, but reading it
from the lake costs as much as reading every event of the span: an hour holds tens of
millions of events at 20,000 events/s, and each run would read it again for the same
entities while they stay near firing. So the rows read are kept in a local file, and the
next run reads from the lake only what landed after them.

The lake stays the source of truth: kept rows are used only while every lake file that
may hold their span was among the files they were read from (a file's name is a pure
function of its rows, and names carry their event-time span). A late file landing in the
span, an entity not kept, or a span reaching before the kept one means a full read from
the lake, which then replaces what is kept. Kept rows end a margin before the batch being
detected: the batch's own files and those of the run in flight beside it land around it.
Detection holds its lock while it reads, so one process uses a cache file at a time; a
write goes to a temporary and is renamed into place, so a crash leaves the old file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from vigil.lake import epoch_us, may_hold, utc_from_us

# Past this many entities the read is not "a few" (a whole batch's entities): not kept.
KEEP_LIMIT = 2_000
# Kept rows end this long before the batch's first event (runs in flight land around it).
MARGIN = timedelta(seconds=60)
# Nothing older than this before the newest kept row is kept (the longest look-back, an
# hour's baseline, plus its window and bucket).
HORIZON = timedelta(hours=2)

Scan = Callable[[datetime, datetime, pa.Array], pa.Table]


@dataclass(frozen=True)
class Kept:
    rows: pa.Table  # time-ordered, plain (not dictionary) columns
    column: str  # the entity column
    entities: frozenset[str]
    start: int  # µs, the kept span [start, end)
    end: int
    files: frozenset[str]  # lake files that could hold the span when it was read


class PastCache:
    """Kept pasts under `directory`, one file per lake, topic, entity column and columns."""

    def __init__(self, directory: Path, lake_url: str) -> None:
        self.directory = directory
        self._lake = lake_url
        self.hits = 0
        self.misses = 0

    def read(self, topic: str, column: str, columns: list[str], entities: pa.Array,
             start: datetime, end: datetime, head: datetime,
             files: Callable[[datetime, datetime], set[str]], scan: Scan) -> pa.Table:
        """Rows of `entities` (values of `column`) in [start, end) with `columns`, time
        ordered: kept rows for the span they cover, the lake (`scan`) for the rest.
        `files(a, b)`: the lake files that may hold events in [a, b); `head`: the first
        event of the batch being detected."""
        wanted = frozenset(entities.to_pylist())
        path = self._path(topic, column, columns)
        kept = _load(path)
        low, high = epoch_us(start), epoch_us(end)
        if kept is not None and self._serves(kept, wanted, low, high, files):
            self.hits += 1
            if kept.end >= high:  # all of it kept already
                return _among(_between(kept.rows, low, high), column, wanted)
            # What landed after the kept rows, for every kept entity: they stay complete.
            known, since, scanned_from, read_from = (kept.entities, kept.start, kept.end,
                                                     kept.files)
            rows = pa.concat_tables([kept.rows, scan(utc_from_us(kept.end), end,
                                                     pa.array(sorted(known)))])
        else:
            self.misses += 1
            known = wanted
            if kept is not None and len(kept.entities | wanted) <= KEEP_LIMIT:
                known = kept.entities | wanted  # one scan reads any number alike
            rows = scan(start, end, pa.array(sorted(known)))
            since, scanned_from, read_from = low, low, frozenset()
        until = min(epoch_us(head - MARGIN), high)
        since = max(since, until - int(HORIZON / timedelta(microseconds=1)))
        if len(known) <= KEEP_LIMIT and until > since:
            first, last = utc_from_us(since), utc_from_us(until)
            # The files the kept part was read from, and those the scan read for the rest.
            named = read_from | files(utc_from_us(max(scanned_from, since)), last)
            _store(path, Kept(_between(rows, since, until), column, known, since, until,
                              frozenset(n for n in named if may_hold(n, first, last))))
        return _among(_between(rows, low, high), column, wanted)

    @staticmethod
    def _serves(kept: Kept, wanted: frozenset[str], low: int, high: int,
                files: Callable[[datetime, datetime], set[str]]) -> bool:
        """Whether the kept rows hold every wanted entity's rows from `low` to their end:
        they cover the start, and no lake file that may hold that span is new to them."""
        if not (kept.entities >= wanted and kept.start <= low <= kept.end):
            return False
        return files(utc_from_us(low), utc_from_us(min(kept.end, high))) <= kept.files

    def _path(self, topic: str, column: str, columns: list[str]) -> Path:
        key = hashlib.sha256(json.dumps([self._lake, topic, column, columns]).encode())
        return self.directory / f"{topic}-{column}-{key.hexdigest()[:16]}.arrow"


def _between(rows: pa.Table, low: int, high: int) -> pa.Table:
    stamps = pc.cast(rows.column("timestamp"), pa.int64())
    return rows.filter(pc.and_(pc.greater_equal(stamps, low), pc.less(stamps, high)))


def _among(rows: pa.Table, column: str, wanted: frozenset[str]) -> pa.Table:
    picked = rows.filter(pc.is_in(rows.column(column), pa.array(sorted(wanted), pa.string())))
    # Kept and fresh rows meet at a time boundary; ties broken by their Kafka coordinates.
    return picked.sort_by([("timestamp", "ascending"), ("_partition", "ascending"),
                           ("_offset", "ascending")])


def _load(path: Path) -> Kept | None:
    try:
        with ipc.open_file(pa.memory_map(str(path))) as reader:
            table = reader.read_all()
    except (OSError, pa.ArrowInvalid):
        return None  # none kept yet, or unreadable: read the lake
    meta = json.loads((table.schema.metadata or {}).get(b"vigil", b"null"))
    if not meta:
        return None
    return Kept(table.replace_schema_metadata(None), meta["column"],
                frozenset(meta["entities"]), meta["start"], meta["end"],
                frozenset(meta["files"]))


def _store(path: Path, kept: Kept) -> None:
    meta = {"column": kept.column, "entities": sorted(kept.entities), "start": kept.start,
            "end": kept.end, "files": sorted(kept.files)}
    table = kept.rows.replace_schema_metadata({"vigil": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with ipc.new_file(str(temporary), table.schema) as writer:
        writer.write_table(table)
    os.replace(temporary, path)
