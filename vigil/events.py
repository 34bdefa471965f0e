"""Event types, their Arrow schemas, and the wire format: JSON, one UTF-8 object per message.

Wire conventions (producers must follow them, the decoder enforces them):
- `timestamp` is an ISO 8601 string. With an offset (`Z`, `+02:00`) it is converted to UTC;
  without one it is taken as UTC. Epoch numbers are refused.
- Fields not in the schema are ignored (dropped): producers may add fields before consumers
  know them, and the contract stays the schema below.
- Required fields must be present and non-null; numbers must be finite (NaN and Infinity are
  refused) and inside their range; enumerations must use the listed values.

`decode_batch` is the landing job's hot path: it hands the whole batch to Arrow's C++ JSON
reader as one newline-delimited buffer and validates column-wise. Only when the reader fails
does it split the batch to isolate the bad messages, and only those are examined in Python.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

TIMESTAMP = pa.timestamp("us", tz="UTC")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRANSACTION_STATUSES = ("approved", "declined", "pending", "refunded")
PAYMENT_METHODS = ("card", "bank_transfer", "wallet", "crypto", "cash")

# A column check: the column -> a boolean mask of the rows that break it (nulls count as fine).
Check = Callable[[pa.ChunkedArray], pa.ChunkedArray]


@dataclass(frozen=True)
class Field:
    name: str
    type: pa.DataType
    required: bool = True
    checks: tuple[tuple[Check, str], ...] = ()  # (check, what a valid value looks like)


# A row check across fields: the table -> a boolean mask of rows that break it.
RowCheck = Callable[[pa.Table], pa.ChunkedArray | pa.Array]


@dataclass(frozen=True)
class EventType:
    topic: str
    key: str  # the field that orders the stream: Kafka message key
    fields: tuple[Field, ...]
    row_checks: tuple[tuple[RowCheck, str], ...] = ()

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(f.name, f.type, nullable=not f.required) for f in self.fields])

    @property
    def wire_schema(self) -> pa.Schema:
        """What the JSON reader parses to: every field nullable, so a missing required field
        becomes a null that validation rejects with a reason instead of failing the batch;
        times as strings, converted column-wise afterwards (see `_parse_times`)."""
        return pa.schema([pa.field(f.name, pa.string() if pa.types.is_timestamp(f.type)
                                   else f.type) for f in self.fields])

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]


def _outside(low: Any, high: Any = None) -> Check:
    def check(col: pa.ChunkedArray) -> pa.ChunkedArray:
        bad = pc.less(col, pa.scalar(low, col.type))
        return bad if high is None else pc.or_(bad, pc.greater(col, pa.scalar(high, col.type)))
    return check


def _not_in(values: Sequence[str]) -> Check:
    allowed = pa.array(values)
    return lambda col: pc.invert(pc.is_in(col, value_set=allowed))


def _not_matching(pattern: str) -> Check:
    return lambda col: pc.invert(pc.match_substring_regex(col, pattern))


def _blank(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)


_NOT_BLANK = ((_blank, "a non-empty string"),)
_TIME_RANGE = ((_outside(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)),
                "a time between 2000 and 2100"),)


def _id_field(name: str) -> Field:
    return Field(name, pa.string(), checks=_NOT_BLANK)


def _percent(name: str, required: bool = True) -> Field:
    return Field(name, pa.float64(), required,
                 checks=((_outside(0, 100), "a percentage 0-100"),))


def _non_negative(name: str, required: bool = True) -> Field:
    return Field(name, pa.float64(), required, checks=((_outside(0), "a number >= 0"),))


_MEASUREMENTS = ("cpu_percent", "memory_percent", "latency_ms", "requests_per_sec", "error_rate")


def _no_measurement(table: pa.Table) -> pa.ChunkedArray:
    present = [pc.is_valid(table.column(name)) for name in _MEASUREMENTS]
    any_present = present[0]
    for more in present[1:]:
        any_present = pc.or_(any_present, more)
    return pc.invert(any_present)


LOGS = EventType("logs", key="service", fields=(
    _id_field("event_id"),
    Field("timestamp", TIMESTAMP, checks=_TIME_RANGE),
    _id_field("service"),
    _id_field("host"),
    Field("level", pa.string(), checks=((_not_in(LOG_LEVELS), " | ".join(LOG_LEVELS)),)),
    Field("message", pa.string()),
    Field("user_id", pa.string(), required=False),
    Field("ip", pa.string(), required=False),
    Field("trace_id", pa.string(), required=False),
))

# Measurements are each optional (agents report different subsets; a replayed series
# carries one), but an event must carry at least one.
METRICS = EventType("metrics", key="service", fields=(
    _id_field("event_id"),
    Field("timestamp", TIMESTAMP, checks=_TIME_RANGE),
    _id_field("service"),
    _id_field("host"),
    _percent("cpu_percent", required=False),
    _percent("memory_percent", required=False),
    _non_negative("latency_ms", required=False),
    _non_negative("requests_per_sec", required=False),
    Field("error_rate", pa.float64(), required=False,
          checks=((_outside(0, 1), "a fraction 0-1"),)),
    Field("region", pa.string(), required=False),
), row_checks=((_no_measurement, "no measurement: at least one of "
                + ", ".join(_MEASUREMENTS) + " is required"),))

TRANSACTIONS = EventType("transactions", key="user_id", fields=(
    _id_field("event_id"),
    Field("timestamp", TIMESTAMP, checks=_TIME_RANGE),
    _id_field("transaction_id"),
    _id_field("user_id"),
    Field("amount", pa.float64(), checks=((_outside(0), "an amount >= 0"),)),
    Field("currency", pa.string(),
          checks=((_not_matching(r"^[A-Z]{3}$"), "a 3-letter ISO 4217 code"),)),
    _id_field("merchant_id"),
    Field("country", pa.string(),
          checks=((_not_matching(r"^[A-Z]{2}$"), "a 2-letter ISO 3166 code"),)),
    Field("payment_method", pa.string(),
          checks=((_not_in(PAYMENT_METHODS), " | ".join(PAYMENT_METHODS)),)),
    Field("status", pa.string(),
          checks=((_not_in(TRANSACTION_STATUSES), " | ".join(TRANSACTION_STATUSES)),)),
    Field("merchant_category", pa.string(), required=False),
    Field("ip", pa.string(), required=False),
))

EVENT_TYPES: dict[str, EventType] = {t.topic: t for t in (LOGS, METRICS, TRANSACTIONS)}


def event_type(topic: str) -> EventType:
    try:
        return EVENT_TYPES[topic]
    except KeyError:
        raise ValueError(f"unknown topic {topic!r}: expected one of "
                         f"{', '.join(EVENT_TYPES)}") from None


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Reject:
    index: int  # position in the input batch
    raw: bytes
    reason: str


@dataclass(frozen=True)
class DecodedBatch:
    table: pa.Table  # accepted events, in input order, with the topic's schema
    positions: np.ndarray  # int64: table row i came from input message positions[i]
    rejects: list[Reject]


def decode_batch(topic: str, messages: Sequence[bytes | None]) -> DecodedBatch:
    """Decode raw Kafka message values into an Arrow table plus rejects with reasons."""
    kind = event_type(topic)
    rejects: list[Reject] = []
    values: Sequence[bytes] = (messages if None not in messages  # type: ignore[assignment]
                               else [m or b"" for m in messages])
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    empty = lengths == 0
    if empty.any():
        rejects += [Reject(int(i), b"", "empty message") for i in np.flatnonzero(empty)]
        candidates: list[int] = np.flatnonzero(~empty).tolist()
    else:
        candidates = list(range(len(values)))
    lines = _Lines(values, candidates, lengths)
    pieces: list[tuple[pa.Table, int, int]] = []  # (table, first, end) in candidate numbering
    _parse_isolating(kind, lines, 0, len(candidates), pieces, rejects)
    pieces.sort(key=lambda piece: piece[1])
    tables = [table for table, _, _ in pieces]
    table = pa.concat_tables(tables) if tables else kind.wire_schema.empty_table()
    order = np.asarray(candidates, dtype=np.int64)
    positions = (np.concatenate([order[lo:hi] for _, lo, hi in pieces]) if pieces
                 else np.empty(0, dtype=np.int64))
    table, time_errors = _parse_times(kind, table)
    table, positions = _validate(kind, table, positions, time_errors, messages, rejects)
    rejects.sort(key=lambda r: r.index)
    return DecodedBatch(table.cast(kind.schema), positions, rejects)


_BLOCK = 1 << 20  # 1 MiB blocks let the reader parse on every core
_ROW = re.compile(r" in row (\d+)")
_LEAF = 8


class _Lines:
    """The candidate messages as one newline-delimited buffer, built once; any run of
    consecutive candidates [lo, hi) is a zero-copy slice of it."""

    def __init__(self, messages: Sequence[bytes], candidates: list[int],
                 lengths: np.ndarray) -> None:
        chosen = (messages if len(candidates) == len(messages)
                  else [messages[i] for i in candidates])
        joined = b"\n".join(chosen) + b"\n"
        sizes = lengths[candidates] if len(candidates) != len(messages) else lengths
        if joined.count(b"\n") != len(chosen) or b"\r" in joined:
            # A raw line break inside valid JSON can only be whitespace: flattening it keeps
            # one message per line for the newline-delimited reader.
            chosen = [m.replace(b"\n", b" ").replace(b"\r", b" ") for m in chosen]
            joined = b"\n".join(chosen) + b"\n"
        self.buffer = pa.py_buffer(joined)
        self.starts = np.concatenate([[0], np.cumsum(sizes + 1)])
        self.messages = messages
        self.candidates = candidates

    def slice(self, lo: int, hi: int) -> pa.Buffer:
        start = int(self.starts[lo])
        return self.buffer.slice(start, int(self.starts[hi]) - start)

    def raw(self, k: int) -> bytes:
        return self.messages[self.candidates[k]] or b""


def _read(kind: EventType, lines: _Lines, lo: int, hi: int,
          whole: bool = False) -> tuple[pa.Table | None, int | None]:
    """(table, None) on success; (None, failing row or None) on failure.

    `whole` parses the slice as one block, single-threaded: the reader then names the row of
    the first bad line, which the threaded multi-block read does not.
    """
    data = lines.slice(lo, hi)
    block = data.size + 1 if whole else max(_BLOCK, data.size // 8 + 1)
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(use_threads=not whole, block_size=block),
            parse_options=pajson.ParseOptions(explicit_schema=kind.wire_schema,
                                              unexpected_field_behavior="ignore"))
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        row = _ROW.search(str(exc)) if whole else None
        return None, int(row.group(1)) if row else None
    if table.num_rows != hi - lo:  # e.g. two objects in one message
        return None, None
    return table.select(kind.names), None


def _parse_isolating(kind: EventType, lines: _Lines, lo: int, hi: int,
                     out: list[tuple[pa.Table, int, int]], rejects: list[Reject]) -> None:
    """Parse [lo, hi) in one go; on failure, find each bad line and keep its neighbours
    batched. A located failure costs one sequential parse up to it."""
    if lo >= hi:
        return
    table, _ = _read(kind, lines, lo, hi)
    if table is not None:
        out.append((table, lo, hi))
        return
    while lo < hi:
        table, row = _read(kind, lines, lo, hi, whole=True)
        if table is not None:
            out.append((table, lo, hi))
            return
        if row is None or row >= hi - lo:
            _split(kind, lines, lo, hi, out, rejects)
            return
        if row:
            _parse_isolating(kind, lines, lo, lo + row, out, rejects)
        _single(kind, lines, lo + row, out, rejects)
        lo += row + 1


def _split(kind: EventType, lines: _Lines, lo: int, hi: int,
           out: list[tuple[pa.Table, int, int]], rejects: list[Reject]) -> None:
    """No row to blame: isolate by splitting into sixteenths, down to single messages."""
    if hi - lo <= _LEAF:
        for k in range(lo, hi):
            _single(kind, lines, k, out, rejects)
        return
    step = -(-(hi - lo) // 16)
    for start in range(lo, hi, step):
        end = min(hi, start + step)
        table, _ = _read(kind, lines, start, end)
        if table is not None:
            out.append((table, start, end))
        else:
            _split(kind, lines, start, end, out, rejects)


def _single(kind: EventType, lines: _Lines, k: int, out: list[tuple[pa.Table, int, int]],
            rejects: list[Reject]) -> None:
    table, _ = _read(kind, lines, k, k + 1, whole=True)
    if table is not None:
        out.append((table, k, k + 1))
    else:
        raw = lines.raw(k)
        rejects.append(Reject(lines.candidates[k], raw, diagnose(kind, raw)))


_ISO_TIME = (r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?"
             r"(Z|[+-]\d\d:?\d\d)$")


def _parse_times(kind: EventType, table: pa.Table) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """ISO 8601 strings -> UTC timestamps, column-wise; returns the rows that failed.

    Times without an offset are taken as UTC; fractions beyond microseconds (.NET writes
    seven digits) are truncated.
    """
    failures: dict[str, np.ndarray] = {}
    for field in kind.fields:
        if not pa.types.is_timestamp(field.type) or table.num_rows == 0:
            continue
        raw = table.column(field.name)
        try:  # fast path: every value already a zoned ISO time (what our producers send)
            times = pc.cast(raw, field.type)
        except pa.ArrowInvalid:
            pass
        else:
            failures[field.name] = np.zeros(table.num_rows, dtype=bool)
            table = table.set_column(table.schema.get_field_index(field.name), field.name,
                                     times)
            continue
        text = pc.replace_substring_regex(raw, r"(\.\d{6})\d+", r"\1")
        zoned = pc.if_else(pc.match_substring_regex(text, r"(Z|[+-]\d\d:?\d\d)$"), text,
                           pc.binary_join_element_wise(text, "Z", ""))
        shaped = pc.fill_null(pc.match_substring_regex(zoned, _ISO_TIME), False)
        candidate = pc.if_else(shaped, zoned, pa.scalar(None, pa.string()))
        try:
            times = pc.cast(candidate, field.type)
        except pa.ArrowInvalid:  # a well-shaped but impossible date: rare, go row by row
            times = pa.array([_iso_or_none(v) for v in candidate.to_pylist()], field.type)
        failed = pc.and_(pc.is_valid(raw), pc.is_null(times))
        failures[field.name] = pc.fill_null(failed, False).to_numpy(zero_copy_only=False)
        table = table.set_column(table.schema.get_field_index(field.name), field.name, times)
    return table, failures


def _iso_or_none(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _validate(kind: EventType, table: pa.Table, positions: np.ndarray,
              time_errors: dict[str, np.ndarray], messages: Sequence[bytes | None],
              rejects: list[Reject]) -> tuple[pa.Table, np.ndarray]:
    """Column-wise checks; each bad row is rejected with the first broken rule."""
    if table.num_rows == 0:
        return table, positions
    reasons = np.full(table.num_rows, None, dtype=object)
    for name, failed in time_errors.items():
        reasons[failed] = f"field '{name}' must be an ISO 8601 time"
    for field in kind.fields:
        col = table.column(field.name)
        tests: list[tuple[Any, str]] = []
        if field.required:
            tests.append((pc.is_null(col), f"field '{field.name}' is missing or null"))
        if pa.types.is_floating(field.type):
            tests.append((pc.invert(pc.is_finite(col)),
                          f"field '{field.name}' is NaN or infinite"))
        for check, expected in field.checks:
            tests.append((check(col), f"field '{field.name}' must be {expected}"))
        for mask, reason in tests:
            hits = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
            if hits.any():
                fresh = hits & (reasons == None)  # noqa: E711 (element-wise on an object array)
                reasons[fresh] = reason
    for row_check, reason in kind.row_checks:
        hits = pc.fill_null(row_check(table), False).to_numpy(zero_copy_only=False)
        reasons[hits & (reasons == None)] = reason  # noqa: E711
    bad = reasons != None  # noqa: E711
    if not bad.any():
        return table, positions
    for row in np.flatnonzero(bad):
        index = int(positions[row])
        reason = str(reasons[row])
        if "'timestamp'" in reason or "NaN" in reason or "ISO 8601" in reason:
            reason = _with_value(kind, messages[index] or b"", reason)
        rejects.append(Reject(index, messages[index] or b"", reason))
    keep = ~bad
    return table.filter(pa.array(keep)), positions[keep]


def _with_value(kind: EventType, raw: bytes, reason: str) -> str:
    field = reason.split("'")[1]
    try:
        value = json.loads(raw).get(field)
    except (ValueError, AttributeError):
        return reason
    return f"{reason} (got {json.dumps(value)[:80]})"


# ---------------------------------------------------------------- diagnosis (rejects only)

_JSON_TYPE = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
              int: "a number", float: "a number", type(None): "null"}


def diagnose(kind: EventType, raw: bytes) -> str:
    """Why one message cannot be decoded; called only for messages Arrow refused."""
    if not raw.strip():
        return "empty message"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start})"
    try:
        value = json.loads(text, parse_constant=lambda c: float(c))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            return f"more than one JSON value in the message (extra data at char {exc.pos})"
        return f"malformed JSON: {exc.msg} at char {exc.pos}"
    if not isinstance(value, dict):
        return f"not a JSON object (got {_JSON_TYPE.get(type(value), 'a value')})"
    for field in kind.fields:
        if field.name not in value or value[field.name] is None:
            continue
        problem = _type_problem(field, value[field.name])
        if problem:
            return f"field '{field.name}': {problem}"
    return "could not be decoded with the schema"


def _type_problem(field: Field, value: Any) -> str | None:
    got = _JSON_TYPE.get(type(value), type(value).__name__)
    if pa.types.is_timestamp(field.type):
        # Times are read as strings (see wire_schema); a bad string is judged column-wise
        # by _parse_times, so only a non-string can make the reader fail here.
        return None if isinstance(value, str) else f"expected an ISO 8601 time string, got {got}"
    if pa.types.is_floating(field.type) or pa.types.is_integer(field.type):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {got}"
        if isinstance(value, float) and not math.isfinite(value):
            return "NaN or infinite"
        return None
    if pa.types.is_string(field.type) and not isinstance(value, str):
        return f"expected a string, got {got}"
    return None


# ---------------------------------------------------------------- encoding


def encode_batch(table: pa.Table, kind: EventType) -> list[bytes]:
    """Serialise a table of events to one JSON message each, column-wise in Arrow.

    Times are written as `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Strings holding '"' or '\\' are
    escaped; if any value holds a control character the batch goes through the json module
    instead (generated data never does; replayed files may).
    """
    pieces: list[pa.Array | pa.ChunkedArray | pa.Scalar] = []
    for n, field in enumerate(kind.fields):
        if field.name not in table.column_names:
            continue
        col = table.column(field.name)
        prefix = ("{" if n == 0 else ",") + f'"{field.name}":'
        if pa.types.is_timestamp(field.type):
            naive = pc.cast(col.cast(TIMESTAMP), pa.timestamp("us"))  # UTC wall time
            text = pc.replace_substring(pc.cast(naive, pa.string()), " ", "T",
                                        max_replacements=1)
            rendered = pc.binary_join_element_wise('"', text, 'Z"', "")
        elif pa.types.is_string(field.type):
            if _has_bytes(col, b'"\\'):
                col = pc.replace_substring(pc.replace_substring(col, "\\", "\\\\"),
                                           '"', '\\"')
            rendered = pc.binary_join_element_wise('"', col, '"', "")
        else:
            rendered = pc.cast(col, pa.string())
        pieces += [pa.scalar(prefix), pc.fill_null(rendered, "null")]
    pieces.append(pa.scalar("}"))
    joined = pc.binary_join_element_wise(*pieces, "")
    if _has_control_bytes(joined):
        return _encode_slow(table, kind)
    return joined.cast(pa.binary()).to_pylist()


def _data_bytes(col: pa.Array | pa.ChunkedArray) -> list[np.ndarray]:
    """The UTF-8 payload of a string column, as numpy views (no copy)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    views = []
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is not None:
            views.append(np.frombuffer(data, dtype=np.uint8))
    return views


def _has_bytes(col: pa.Array | pa.ChunkedArray, needles: bytes) -> bool:
    return any(np.logical_or.reduce([view == byte for byte in needles]).any()
               for view in _data_bytes(col))


def _has_control_bytes(col: pa.Array | pa.ChunkedArray) -> bool:
    return any((view < 0x20).any() for view in _data_bytes(col))


def _encode_slow(table: pa.Table, kind: EventType) -> list[bytes]:
    names = [n for n in kind.names if n in table.column_names]
    out = []
    for row in table.select(names).to_pylist():
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode())
    return out


def encode_keys(table: pa.Table, kind: EventType) -> list[bytes | None]:
    return table.column(kind.key).cast(pa.binary()).to_pylist()
