"""Which lake files may hold an entity: a Bloom filter of each file's values of a column.

An entity new to the kept long pasts (past_cache.py) needs its events of the last hour: a
user's baseline when it first nears firing. Its events are in a few of the hour's files,
but a filtered scan still opens every file and decodes the whole column of each (thousands
of files, tens of millions of ids at 20,000 events/s), several seconds under the detection
lock. A Bloom filter per file, built once from the file's column when it lands, tells which
files cannot hold the entity, so such a read opens only the others.

A Bloom filter has no false negatives, and a file's rows never change (its name is a pure
function of them), so a filter stays true for as long as the file exists. A file with no
filter yet (landed by a run in flight, or beyond one refresh's share) is always opened:
a missing or lost entry costs time, never rows. Filters live in SQLite (one small insert
per file; concurrent runs write through its locking), keyed by lake, topic and column.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

# Probes per value: with 10 bits per distinct value, under 1 % of files answer "may hold"
# for a value they lack.
PROBES = 6
BITS_PER_VALUE = 10
# Filter sizes are whole blocks: files' filters group into a few sizes, each probed at once.
BLOCK_BITS = 4096
# Files indexed per refresh at most, newest first: a first refresh over an hour of files
# (thousands) is spread over runs instead of stalling one.
REFRESH_LIMIT = 64

_U64 = np.uint64
_MULTIPLIER = _U64(0x100000001B3)


def value_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string (nulls dropped), the same in every process: a
    polynomial over the bytes, mixed by splitmix64's finaliser. Vectorised over the
    Arrow buffers: a file's thousands of ids hash in well under a millisecond."""
    strings = values.drop_null().cast(pa.string())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    n = len(strings)
    if n == 0:
        return np.zeros(0, dtype=_U64)
    _, offsets_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[strings.offset:strings.offset + n + 1]
    data = (np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]]
            if data_buffer is not None else np.zeros(0, dtype=np.uint8))
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    position = np.arange(len(data)) - np.repeat(starts, lengths)
    powers = np.cumprod(np.full(max(int(lengths.max()), 1), _MULTIPLIER, dtype=_U64), dtype=_U64)
    terms = (data.astype(_U64) + _U64(1)) * powers[position]
    sums = np.concatenate([np.zeros(1, dtype=_U64), np.cumsum(terms, dtype=_U64)])
    mixed = (sums[starts + lengths] - sums[starts]) + lengths.astype(_U64) * _U64(
        0x9E3779B97F4A7C15)
    mixed ^= mixed >> _U64(30)
    mixed *= _U64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> _U64(27)
    mixed *= _U64(0x94D049BB133111EB)
    mixed ^= mixed >> _U64(31)
    return mixed


def _positions(hashes: np.ndarray, bits: int) -> np.ndarray:
    """Each hash's PROBES bit positions (PROBES x len(hashes)), by double hashing."""
    first, step = hashes & _U64(0xFFFFFFFF), (hashes >> _U64(32)) | _U64(1)
    probes = np.arange(PROBES, dtype=_U64)[:, None]
    return ((first[None, :] + probes * step[None, :]) % _U64(bits)).astype(np.int64)


def bloom(values: pa.Array) -> bytes:
    """The Bloom filter of the distinct non-null values, in whole bytes."""
    hashes = np.unique(value_hashes(values))
    bits = max(1, -(-len(hashes) * BITS_PER_VALUE // BLOCK_BITS)) * BLOCK_BITS
    flags = np.zeros(bits, dtype=bool)
    flags[_positions(hashes, bits).ravel()] = True
    return np.packbits(flags, bitorder="little").tobytes()


def may_contain(filters: list[bytes], values: pa.Array) -> np.ndarray:
    """Per filter, whether it may hold any of the values (filters grouped by size, each
    group tested at once)."""
    hashes = value_hashes(values)
    answer = np.zeros(len(filters), dtype=bool)
    if len(hashes) == 0:
        return answer
    by_size: dict[int, list[int]] = {}
    for i, f in enumerate(filters):
        by_size.setdefault(len(f), []).append(i)
    for size, indices in by_size.items():
        stacked = np.frombuffer(b"".join(filters[i] for i in indices),
                                dtype=np.uint8).reshape(len(indices), size)
        positions = _positions(hashes, size * 8)  # PROBES x values
        bits: np.ndarray = (stacked[:, positions >> 3] >> (positions & 7).astype(np.uint8)) & 1
        answer[indices] = np.any(np.all(bits, axis=1), axis=1)
    return answer


class Presence:
    """Bloom filters of lake files' column values, in a SQLite file at `path`."""

    def __init__(self, path: Path, lake_url: str) -> None:
        self.path, self._lake = path, lake_url
        self.indexed = 0  # files given a filter by this process
        self.opened = 0  # files `may_hold` could not rule out
        self.skipped = 0  # files it did
        self.failure: str | None = None  # why the filters were last unusable, if they were
        self._ready = False  # the table exists (WAL mode persists in the file)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection, committed and closed on leaving. An unreadable file is a lost
        index, not a failed run: it is removed (rebuilt by later refreshes) and the error
        raised as `IndexUnusableError`, which callers answer as if no file had a filter."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            with conn:
                if not self._ready:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("CREATE TABLE IF NOT EXISTS file_values (lake TEXT, "
                                 "topic TEXT, field TEXT, file TEXT, last_event INTEGER, "
                                 "filter BLOB, PRIMARY KEY (lake, topic, field, file))")
                    self._ready = True
                yield conn
        except sqlite3.DatabaseError as exc:  # corrupt, or locked past the timeout
            self.failure, self._ready = f"{self.path}: {exc}", False
            if not isinstance(exc, sqlite3.OperationalError):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            raise IndexUnusableError(self.failure) from exc
        finally:
            conn.close()

    def refresh(self, topic: str, column: str, files: dict[str, int],
                read: Callable[[str], pa.Array], forget_before: int) -> int:
        """Give a filter to the `files` (base name -> last event, µs) that have none yet,
        newest first, at most REFRESH_LIMIT; `read(name)` gives a file's column. Filters
        of files whose events all end before `forget_before` (µs) are dropped. Returns
        how many files were indexed (0 if the index is unusable)."""
        key = (self._lake, topic, column)
        try:
            with self._connection() as conn:
                have = {row[0] for row in conn.execute(
                    "SELECT file FROM file_values WHERE lake=? AND topic=? AND field=?", key)}
            missing = sorted(set(files) - have, key=lambda n: files[n],
                             reverse=True)[:REFRESH_LIMIT]
            # Read outside any transaction: other runs write theirs meanwhile.
            rows = [(*key, name, files[name], bloom(read(name))) for name in missing]
            with self._connection() as conn:
                conn.executemany("INSERT OR IGNORE INTO file_values VALUES (?, ?, ?, ?, ?, ?)",
                                 rows)
                conn.execute("DELETE FROM file_values WHERE lake=? AND topic=? AND field=? "
                             "AND last_event < ?", (*key, forget_before))
        except IndexUnusableError:
            return 0
        self.indexed += len(rows)
        return len(rows)

    def may_hold(self, topic: str, column: str, names: Iterable[str],
                 values: pa.Array) -> set[str]:
        """The `names` that may hold any of `values` in `column`: those whose filter says
        so, and those with no filter (all of them if the index is unusable)."""
        names = set(names)
        try:
            with self._connection() as conn:
                found = [(name, bytes(f)) for name, f in conn.execute(
                    "SELECT file, filter FROM file_values WHERE lake=? AND topic=? AND field=?",
                    (self._lake, topic, column)) if name in names]
        except IndexUnusableError:
            found = []
        hits = may_contain([f for _, f in found], values)
        ruled_out = {name for (name, _), hit in zip(found, hits, strict=True) if not hit}
        self.skipped += len(ruled_out)
        self.opened += len(names) - len(ruled_out)
        return names - ruled_out


class IndexUnusableError(Exception):
    """The presence index could not be read or written."""
