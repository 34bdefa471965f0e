"""Replay a real dataset (CSV, NDJSON or Parquet) into a topic, with its original times.

Columns are renamed (`--map value=cpu_percent`) and constants set (`--set service=x`);
every row is then checked by the same decoder the landing job uses, so a row that would be
quarantined downstream is reported here with its line number instead (or, with --strict,
stops the replay before anything is sent). Replays are paced by the rows' own timestamps at
`--speed` (60x, max). Rows are turned into JSON one by one: a replay is read-bound and
paced, not a hot path.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from vigil.events import EventType, Reject, decode_batch, encode_batch, encode_keys
from vigil.produce import EventSender

_NAMESPACE = uuid.UUID("6f1c3c52-7d0e-4a57-9a57-5b6c0c9e4a11")
_NUMERIC = (pa.types.is_floating, pa.types.is_integer)


class ReplayError(ValueError):
    """The file cannot be replayed as asked; the message says what to change."""


@dataclass(frozen=True)
class BadRow:
    line: str  # "line 17" (CSV/NDJSON) or "row 16" (Parquet)
    reason: str


@dataclass
class ReplayPlan:
    kind: EventType
    table: pa.Table  # accepted events, in file order
    bad: list[BadRow]
    rows: int
    filled: dict[str, str]  # fields vigil filled in, and how


def read_rows(path: Path) -> tuple[list[dict[str, Any]], Callable[[int], str]]:
    """The file's rows as dicts, and how to name row i for a human."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    if suffix == ".csv":
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={}, strings_can_be_null=True))
        return table.to_pylist(), lambda i: f"line {i + 2}"  # line 1 is the header
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist(), lambda i: f"row {i + 1}"
    if suffix in (".ndjson", ".jsonl", ".json"):
        rows, lines = [], []
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except ValueError as exc:
                    value = {"__unreadable__": f"malformed JSON: {exc}"}
                rows.append(value if isinstance(value, dict)
                            else {"__unreadable__": "not a JSON object"})
                lines.append(number)
        return rows, lambda i: f"line {lines[i]}"
    raise ReplayError(f"{path}: unsupported file type {suffix!r}; use .csv, .ndjson/.jsonl "
                      "or .parquet")


def plan_replay(path: Path, kind: EventType, mapping: dict[str, str],
                constants: dict[str, str]) -> ReplayPlan:
    rows, where = read_rows(path)
    if not rows:
        raise ReplayError(f"{path}: no rows")
    columns = set().union(*(row.keys() for row in rows[:1000]))
    missing = [source for source in mapping if source not in columns]
    if missing:
        raise ReplayError(f"--map names column(s) {', '.join(missing)} that {path.name} lacks; "
                          f"its columns are: {', '.join(sorted(columns))}")
    unknown = [t for t in [*mapping.values(), *constants] if t not in kind.names]
    if unknown:
        raise ReplayError(f"{', '.join(unknown)} is not a {kind.topic} field; fields are: "
                          f"{', '.join(kind.names)}")
    numeric = {f.name for f in kind.fields if any(test(f.type) for test in _NUMERIC)}
    filled: dict[str, str] = {}
    provided = set(mapping.values()) | set(constants) | (columns & set(kind.names))
    if "event_id" not in provided:
        filled["event_id"] = f"uuid5 of ({path.name}, row number): stable across replays"
    if kind.topic in ("logs", "metrics") and "host" not in provided and "service" in provided:
        filled["host"] = "the service's value"
    messages: list[bytes] = []
    for i, row in enumerate(rows):
        event: dict[str, Any] = {}
        for source, value in row.items():
            event[mapping.get(source, source)] = value
        event.update(constants)
        if "event_id" in filled:
            event["event_id"] = str(uuid.uuid5(_NAMESPACE, f"{path.name}:{i}"))
        if "host" in filled:
            event["host"] = event.get("service")
        messages.append(_to_json(event, numeric))
    decoded = decode_batch(kind.topic, messages)
    bad = [BadRow(where(r.index), _reason(r, rows)) for r in decoded.rejects]
    return ReplayPlan(kind, decoded.table, bad, len(rows), filled)


def _reason(reject: Reject, rows: list[dict[str, Any]]) -> str:
    unreadable = rows[reject.index].get("__unreadable__")
    return str(unreadable) if unreadable else reject.reason


def _to_json(event: dict[str, Any], numeric: set[str]) -> bytes:
    out: dict[str, Any] = {}
    for key, value in event.items():
        if isinstance(value, datetime | date):
            value = value.isoformat()
        elif key in numeric and isinstance(value, str):
            value = _number_or_text(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # the decoder names the field; json would write bare NaN
        out[key] = value
    return json.dumps(out, default=str).encode()


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def paced_batches(table: pa.Table, speed: float | None, batch: int = 5000
                  ) -> Iterator[pa.Table]:
    """Slices of `table` released as the rows' own times come due at `speed` x."""
    if speed is None or table.num_rows == 0:
        for start in range(0, table.num_rows, batch):
            yield table.slice(start, batch)
        return
    times = table.column("timestamp").to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6
    order_ok = bool(np.all(np.diff(times) >= 0))
    if not order_ok:
        order = np.argsort(times, kind="stable")
        table, times = table.take(pa.array(order)), times[order]
    started, first = time.monotonic(), times[0]
    start = 0
    while start < table.num_rows:
        due = (times[start] - first) / speed
        delay = started + due - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 1.0))
            continue
        now_due = first + (time.monotonic() - started) * speed
        end = min(int(np.searchsorted(times, now_due, side="right")), start + batch)
        end = max(end, start + 1)
        yield table.slice(start, end - start)
        start = end


def send_plan(sender: EventSender, plan: ReplayPlan, speed: float | None,
              on_batch: Callable[[int], None] = lambda _n: None) -> int:
    sent, started = 0, time.monotonic()
    for chunk in paced_batches(plan.table, speed):
        sender.send(plan.kind.topic, encode_batch(chunk, plan.kind),
                    encode_keys(chunk, plan.kind))
        sent += chunk.num_rows
        on_batch(sent)
    sender.flush()
    sender.report.seconds = time.monotonic() - started
    return sent
