"""The long pasts of a few entities, kept between ingest runs.

A rule's long look-back (a user's baseline hour, a host's sustained run back to its start,
an open anomaly's bucket) is read only for the few entities near firing, but reading it
from the lake costs as much as reading every event of the span: an hour holds tens of
millions of events at 20,000 events/s, and each run would read it again for the same
entities while they stay near firing. So the rows read are kept in a local file, and the
next run reads from the lake only what landed after them.

The lake stays the source of truth: kept rows are used only while every lake file that
may hold their span was among the files they were read from (a file's name is a pure
function of its rows, and names carry their event-time span). What the kept rows lack is
read from the lake and added: a file landed late inside their span (read for the kept
entities), an entity new to them (its whole look-back, from only the files its presence
filters do not rule out: presence.py), and what landed after them. A kept file gone from
the lake, or a span reaching before the kept one, means a full read, which then replaces
what is kept. Kept rows end a margin before the batch being detected: the batch's own
files and those of the run in flight beside it land around it. Detection holds its lock
while it reads, so one process uses a cache file at a time; a write goes to a temporary
and is renamed into place, so a crash leaves the old file or none.
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

from vigil.detect.presence import Presence
from vigil.lake import RawFiles, epoch_us, may_hold, utc_from_us

# Past this many entities the read is not "a few" (a whole batch's entities): not kept.
KEEP_LIMIT = 2_000
# Kept rows end this long before the batch's first event (runs in flight land around it).
MARGIN = timedelta(seconds=60)
# Nothing older than this before the newest kept row is kept (the longest look-back, an
# hour's baseline, plus its window and bucket).
HORIZON = timedelta(hours=2)

# Past this many entities a presence check rules out few files: every file is read.
PRUNE_LIMIT = 256

# (start, end, entities, only these files or None for all) -> their rows, time ordered
Scan = Callable[[datetime, datetime, pa.Array, set[str] | None], pa.Table]


@dataclass(frozen=True)
class Kept:
    rows: pa.Table  # time-ordered, plain (not dictionary) columns
    column: str  # the entity column
    entities: frozenset[str]
    start: int  # µs, the kept span [start, end)
    end: int
    files: frozenset[str]  # lake files that could hold the span when it was read


class PastCache:
    """Kept pasts under `directory`, one file per lake, topic, entity column and columns;
    with `presence`, the lake reads for entities new to them open only the files that may
    hold them (presence.py)."""

    def __init__(self, directory: Path, lake_url: str, presence: bool = True) -> None:
        self.directory = directory
        self._lake = lake_url
        self.presence = Presence(directory / "presence.sqlite3", lake_url) if presence else None
        self.hits = 0  # reads served by kept rows (with what landed after or late in them)
        self.added = 0  # of those, reads of entities new to the kept rows
        self.misses = 0  # reads of the whole span from the lake

    def index(self, topic: str, column: str, files: RawFiles, start: datetime,
              end: datetime) -> int:
        """Give the files over [start, end) a presence filter of `column` where they have
        none yet: run before the detection lock, so the reads under it can skip files.
        Returns how many were given one."""
        if self.presence is None:
            return 0
        spans = files.spans(start, end)
        return self.presence.refresh(
            topic, column, {name: span[1] for name, span in spans.items() if span},
            lambda name: files.column(name, column), epoch_us(start - HORIZON))

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
        extended = None
        if (kept is not None and kept.start <= low <= kept.end
                and len(kept.entities | wanted) <= KEEP_LIMIT):
            extended = self._extend(kept, topic, wanted, start, end, files, scan)
        if extended is not None:
            self.hits += 1
            rows, known, since, named = extended
        else:
            self.misses += 1
            known, since, named = wanted, low, files(start, end)
            rows = scan(start, end, _values(known), self._possible(topic, column, named, known))
        until = min(epoch_us(head - MARGIN), high)
        since = max(since, until - int(HORIZON / timedelta(microseconds=1)))
        if len(known) <= KEEP_LIMIT and until > since:
            first, last = utc_from_us(since), utc_from_us(until)
            _store(path, Kept(_between(rows, since, until), column, known, since, until,
                              frozenset(n for n in named if may_hold(n, first, last))))
        return _among(_between(rows, low, high), column, wanted)

    def _extend(self, kept: Kept, topic: str, wanted: frozenset[str], start: datetime,
                end: datetime, files: Callable[[datetime, datetime], set[str]], scan: Scan
                ) -> tuple[pa.Table, frozenset[str], int, set[str]] | None:
        """The kept rows brought up to the lake as it is: (rows, their entities, the start
        of the span they hold every row of, the files read for it), None if a kept file has
        left the lake. Read from the lake: the files landed late inside the kept span (for
        the kept entities), the entities new to it (only the files that may hold them), and
        what landed after it (for all)."""
        kept_end = utc_from_us(kept.end)
        listed = files(start, kept_end)
        if {n for n in kept.files if may_hold(n, start, kept_end)} - listed:
            return None  # the lake changed under the kept rows
        late, new = listed - kept.files, wanted - kept.entities
        parts, since, reach = [kept.rows], kept.start, min(kept_end, end)
        if late or new:  # read from `start` on, not from the kept start (nor past `end`)
            parts, since = [_between(kept.rows, epoch_us(start), epoch_us(reach))], epoch_us(start)
        if late:
            parts.append(scan(start, reach, _values(kept.entities), late))
        if new:
            self.added += 1
            parts.append(scan(start, reach, _values(new),
                              self._possible(topic, kept.column, listed, new)))
        known = kept.entities | new
        named = listed if late or new else set(kept.files)
        if kept.end < epoch_us(end):
            parts.append(scan(kept_end, end, _values(known), None))
            named |= files(kept_end, end)
        return pa.concat_tables(parts), known, since, named

    def _possible(self, topic: str, column: str, names: set[str], values: frozenset[str]
                  ) -> set[str] | None:
        """The files among `names` that may hold any of `values`, None for all of them."""
        if self.presence is None or len(values) > PRUNE_LIMIT:
            return None
        return self.presence.may_hold(topic, column, names, _values(values))

    def _path(self, topic: str, column: str, columns: list[str]) -> Path:
        key = hashlib.sha256(json.dumps([self._lake, topic, column, columns]).encode())
        return self.directory / f"{topic}-{column}-{key.hexdigest()[:16]}.arrow"


def _values(entities: frozenset[str]) -> pa.Array:
    return pa.array(sorted(entities), pa.string())


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
