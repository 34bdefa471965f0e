"""The lake: raw events and quarantined records as Parquet, on local disk or S3.

Layout (hour by event time for raw, by Kafka timestamp for quarantine):

    raw/<topic>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset>+t<first>_<last>.parquet
    quarantine/<topic>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset>.parquet

A raw file's name also says its first and last event time (µs since the epoch): a read of a
few seconds skips the rest of an hour's files (thousands under load) without opening them.
Files landed before names carried times are read whatever the span.

A file's name is a pure function of its rows, so a retried run overwrites the same object
with the same bytes. Files are written to a hidden temporary name and renamed into place
(on S3 an object appears only when its upload completes), so a crash never leaves a partial
file where readers look; readers skip names starting with '.'. A write also removes its
directory's temporaries older than any write takes (a dead writer's), never younger ones:
runs in flight write into the same hour directories.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vigil.events import TIMESTAMP, event_type
from vigil.objectstore import s3_filesystem
from vigil.settings import Settings

# Kafka coordinates carried by every landed row, after the topic's own fields.
LANDING_FIELDS = (
    pa.field("_partition", pa.int32(), nullable=False),
    pa.field("_offset", pa.int64(), nullable=False),
    pa.field("_kafka_timestamp", TIMESTAMP),
    pa.field("_ingested_at", TIMESTAMP, nullable=False),
)

QUARANTINE_SCHEMA = pa.schema([
    pa.field("topic", pa.string(), nullable=False),
    pa.field("_partition", pa.int32(), nullable=False),
    pa.field("_offset", pa.int64(), nullable=False),
    pa.field("_kafka_timestamp", TIMESTAMP),
    pa.field("_ingested_at", TIMESTAMP, nullable=False),
    pa.field("key", pa.binary()),
    pa.field("raw", pa.binary(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
])

# Fixed writer settings: the same rows always give the same bytes.
_WRITE_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": True,
                  "write_statistics": True, "coerce_timestamps": "us", "row_group_size": 256_000}


# String fields with few distinct values per hour. Parquet stores them dictionary-encoded;
# reading them as Arrow dictionaries (pandas categoricals) skips materialising each string,
# and gives detection its entity codes without hashing a row.
GROUPING_FIELDS = frozenset({"service", "host", "level", "message", "user_id", "region",
                             "currency", "merchant_id", "country", "payment_method", "status",
                             "merchant_category"})
_DICTIONARY = pa.dictionary(pa.int32(), pa.string())


def raw_schema(topic: str, dictionary: bool = False) -> pa.Schema:
    schema = pa.schema([*event_type(topic).schema, *LANDING_FIELDS])
    if not dictionary:
        return schema
    return pa.schema([f.with_type(_DICTIONARY) if f.name in GROUPING_FIELDS else f
                      for f in schema])


@dataclass(frozen=True)
class WrittenFile:
    path: str  # relative to the lake root
    rows: int
    bytes: int
    hour: datetime
    partition: int
    first_offset: int
    last_offset: int


def hour_dir(area: str, topic: str, hour: datetime) -> str:
    return f"{area}/{topic}/date={hour:%Y-%m-%d}/hour={hour:%H}"


def file_name(topic: str, partition: int, first_offset: int,
              events: tuple[int, int] | None = None) -> str:
    """`events`: the first and last event time in the file, µs since the epoch."""
    span = "" if events is None else f"+t{events[0]}_{events[1]}"
    return f"{topic}+{partition}+{first_offset}{span}.parquet"


_SPAN = re.compile(r"\+t(-?\d+)_(-?\d+)\.parquet$")


def may_hold(path: str, start: datetime, end: datetime) -> bool:
    """Whether a data file may hold events with start <= timestamp < end, by its name."""
    return _may_hold(file_span(path), epoch_us(start), epoch_us(end))


def _may_hold(span: tuple[int, int] | None, low: int, high: int) -> bool:
    """`may_hold` on a name's span (µs) already parsed; None: landed before names carried
    times, so it must be opened to know."""
    return span is None or (span[1] >= low and span[0] < high)


def epoch_us(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def utc_from_us(micros: int) -> datetime:
    """The inverse of `epoch_us`, in UTC."""
    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A temporary this old is a dead writer's: one file's write takes seconds.
TEMPORARY_GRACE = timedelta(minutes=10)


def _remove_stale_temporaries(directory: str) -> int:
    """Delete the temporaries of writers that died mid-write in a local directory.

    Only those older than TEMPORARY_GRACE: runs in flight write into the same hour
    directories, and a younger one may be another run's write in progress (deleting it
    failed that run's rename). Names are read without a stat per file: an hour directory
    holds thousands of data files under load.
    """
    cutoff = time.time() - TEMPORARY_GRACE.total_seconds()
    removed = 0
    for entry in os.scandir(directory):
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        try:
            if entry.stat().st_mtime < cutoff:
                os.remove(entry.path)
                removed += 1
        except FileNotFoundError:  # its writer renamed it, or another run removed it
            continue
    return removed


class Lake:
    """A lake root on a pyarrow filesystem: `file:///path` or `s3://bucket/prefix`."""

    def __init__(self, url: str, filesystem: pafs.FileSystem | None = None) -> None:
        parts = urlsplit(url)
        self.url = url
        if parts.scheme == "file":
            self.fs: pafs.FileSystem = filesystem or pafs.LocalFileSystem()
            self.root = parts.path.rstrip("/")
            self.local = True
        elif parts.scheme == "s3":
            if filesystem is None:
                raise ValueError("an s3:// lake needs its filesystem: use Lake.open(settings)")
            self.fs = filesystem
            self.root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
            self.local = False
        else:
            raise ValueError(f"unsupported lake URL {url!r}: use file:// or s3://")

    @classmethod
    def open(cls, settings: Settings) -> Lake:
        fs = s3_filesystem(settings) if settings.lake_is_s3 else None
        return cls(settings.lake_url, fs)

    def full(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    # ------------------------------------------------------------------ writing

    def write(self, relative: str, table: pa.Table) -> int:
        """Write atomically; returns the file's size in bytes."""
        target = self.full(relative)
        directory, name = target.rsplit("/", 1)
        if self.local:
            self.fs.create_dir(directory, recursive=True)
            _remove_stale_temporaries(directory)
            temporary = f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
            pq.write_table(table, temporary, filesystem=self.fs, **_WRITE_OPTIONS)
            # fsync before the rename: after a power cut the name never points at a hole.
            fd = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.fs.move(temporary, target)
        else:
            pq.write_table(table, target, filesystem=self.fs, **_WRITE_OPTIONS)
        return int(self.fs.get_file_info(target).size or 0)

    def remove(self, relative: str) -> bool:
        """Delete a file if it exists; whether it did."""
        target = self.full(relative)
        if self.fs.get_file_info(target).type != pafs.FileType.File:
            return False
        self.fs.delete_file(target)
        return True

    # ------------------------------------------------------------------ reading

    def _data_files(self, directory: str, recursive: bool = False) -> list[str]:
        """Complete data files under a lake directory: hidden temporaries are skipped."""
        selector = pafs.FileSelector(self.full(directory), recursive=recursive,
                                     allow_not_found=True)
        return sorted(info.path for info in self.fs.get_file_info(selector)
                      if info.type == pafs.FileType.File
                      and info.base_name.endswith(".parquet")
                      and not info.base_name.startswith((".", "_")))

    def files(self, area: str, topic: str, start: datetime, end: datetime) -> list[str]:
        """Data files of the hours overlapping [start, end): only those directories are listed."""
        return [path for hour in hours_between(start, end)
                for path in self._data_files(hour_dir(area, topic, hour))]

    def raw_dataset(self, topic: str, start: datetime, end: datetime,
                    dictionary: bool = False) -> pads.Dataset:
        """The files of one topic that may hold events in [start, end), unfiltered."""
        return RawFiles(self, topic, start, end).dataset(start, end, dictionary)

    def events_dataset(self, topic: str, start: datetime, end: datetime,
                       dictionary: bool = False) -> pads.Dataset:
        """One topic's landed events with start <= timestamp < end, as a lazy dataset;
        with `dictionary`, the GROUPING_FIELDS come as Arrow dictionaries."""
        return self.raw_dataset(topic, start, end, dictionary).filter(time_range(start, end))

    def read_events(self, topic: str, start: datetime, end: datetime,
                    columns: list[str] | None = None, dictionary: bool = False) -> pa.Table:
        """One topic's landed events with start <= timestamp < end, ordered by time."""
        return scan_events(self.raw_dataset(topic, start, end, dictionary), start, end,
                           columns, dictionary)

    def read_all(self, area: str, topic: str) -> pa.Table:
        """Every file of a topic (tests and small lakes; detection reads by time range)."""
        files = self._data_files(f"{area}/{topic}", recursive=True)
        schema = raw_schema(topic) if area == "raw" else QUARANTINE_SCHEMA
        return pads.dataset(files, schema=schema, format="parquet",
                            filesystem=self.fs).to_table()


class RawFiles:
    """One topic's raw files over a span, for several scans of parts of it: each scan opens
    only the files whose names say they may hold its part, and parses a file's footer once
    however many scans read it. A detection run scans an hour of files (thousands under
    load) several times, mostly for its last seconds; a dataset of the whole span visits
    every file on every scan, a cost that grows as the hour fills."""

    def __init__(self, lake: Lake, topic: str, start: datetime, end: datetime) -> None:
        self.topic, self.start, self._fs = topic, start, lake.fs
        self._files = [(path, file_span(path)) for path in lake.files("raw", topic, start, end)]
        self._paths = {path.rsplit("/", 1)[-1]: path for path, _ in self._files}
        self._fragments: dict[bool, dict[str, pads.Fragment]] = {False: {}, True: {}}
        self._formats = {flag: _raw_format(topic, flag) for flag in (False, True)}

    def dataset(self, start: datetime, end: datetime, dictionary: bool = False,
                only: set[str] | None = None) -> pads.Dataset:
        """The files that may hold events in [start, end), unfiltered; with `dictionary`,
        the GROUPING_FIELDS read as Arrow dictionaries; `only`: just these (base names)."""
        low, high = epoch_us(start), epoch_us(end)
        file_format, cache = self._formats[dictionary], self._fragments[dictionary]
        fragments = []
        for path, span in self._files:
            if not _may_hold(span, low, high):
                continue
            if only is not None and path.rsplit("/", 1)[-1] not in only:
                continue
            if path not in cache:
                cache[path] = file_format.make_fragment(path, filesystem=self._fs)
            fragments.append(cache[path])
        return pads.FileSystemDataset(fragments, raw_schema(self.topic, dictionary),
                                      file_format, self._fs)


    def names(self, start: datetime, end: datetime) -> set[str]:
        """The base names of the files that may hold events in [start, end)."""
        return set(self.spans(start, end))

    def spans(self, start: datetime, end: datetime) -> dict[str, tuple[int, int] | None]:
        """`names`, each with its event-time span (µs) from its name, None if it has none."""
        low, high = epoch_us(start), epoch_us(end)
        return {path.rsplit("/", 1)[-1]: span for path, span in self._files
                if _may_hold(span, low, high)}

    def column(self, name: str, column: str) -> pa.Array:
        """One column of one file (by base name), as a plain array."""
        path = self._paths[name]
        return pq.read_table(path, columns=[column], filesystem=self._fs).column(
            column).combine_chunks()


def file_span(path: str) -> tuple[int, int] | None:
    """A raw file's first and last event time from its name (µs), None if it has none."""
    found = _SPAN.search(path)
    return None if found is None else (int(found.group(1)), int(found.group(2)))


def _raw_format(topic: str, dictionary: bool) -> pads.ParquetFileFormat:
    columns = sorted(GROUPING_FIELDS & set(raw_schema(topic).names)) if dictionary else []
    return pads.ParquetFileFormat(
        read_options=pads.ParquetReadOptions(dictionary_columns=columns))


def time_range(start: datetime, end: datetime) -> pads.Expression:
    ts = pads.field("timestamp")
    return (ts >= pa.scalar(start, TIMESTAMP)) & (ts < pa.scalar(end, TIMESTAMP))


def scan_events(dataset: pads.Dataset, start: datetime, end: datetime,
                columns: list[str] | None = None, dictionary: bool = False,
                where: pads.Expression | None = None) -> pa.Table:
    """Rows of a raw dataset with start <= timestamp < end (and `where`), ordered by time."""
    condition = time_range(start, end) if where is None else time_range(start, end) & where
    table = dataset.to_table(columns=columns, filter=condition)
    if dictionary:
        # One dictionary per column across files and row groups: pandas then builds
        # one categorical without re-hashing.
        table = table.unify_dictionaries()
    if "timestamp" in table.column_names:
        table = table.sort_by([("timestamp", "ascending")])
    return table


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_between(start: datetime, end: datetime) -> Iterator[datetime]:
    hour = floor_hour(start)
    while hour < end:
        yield hour
        hour += timedelta(hours=1)


def query_events(lake: Lake, topic: str, start: datetime, end: datetime, sql: str,
                 params: dict[str, object] | None = None) -> pa.Table:
    """Run DuckDB SQL over one topic's events in [start, end), visible as the view `events`.

    The files are chosen by hour directory and handed to DuckDB as an Arrow dataset, so it
    works the same on local disk and S3 (DuckDB itself needs no S3 extension) and DuckDB
    pushes column selection and the time filter into the Parquet scan. Values go in as
    `$name` parameters, never into the SQL text.
    """
    import duckdb

    events = lake.events_dataset(topic, start, end)
    with duckdb.connect() as con:
        con.register("events", events)
        return con.sql(sql, params=params).to_arrow_table()
