"""Events landed per minute from Parquet footers alone (a local lake: plain files)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from vigil.lake import Lake, file_name, hour_dir, raw_schema
from vigil.pipeline_state import landed_per_minute

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def _file(lake: Lake, first: int, rows: int, event_at: datetime, landed_at: datetime) -> None:
    schema = raw_schema("transactions")
    def filler(field: pa.Field) -> pa.Array:
        if field.nullable:
            return pa.nulls(rows, field.type)
        value = "x" if pa.types.is_string(field.type) else 0
        return pa.array([value] * rows).cast(field.type)

    columns = {f.name: filler(f) for f in schema}
    columns.update({
        "event_id": pa.array([f"e{first + i}" for i in range(rows)]),
        "timestamp": pa.array([event_at] * rows, schema.field("timestamp").type),
        "_offset": pa.array(range(first, first + rows), pa.int64()),
        "_partition": pa.array([0] * rows, pa.int32()),
        "_ingested_at": pa.array([landed_at] * rows, schema.field("_ingested_at").type)})
    lake.write(f"{hour_dir('raw', 'transactions', event_at)}/"
               f"{file_name('transactions', 0, first)}", pa.table(columns, schema=schema))


def test_rows_per_landing_minute_and_topic(tmp_path: Path) -> None:
    lake = Lake(tmp_path.as_uri())
    _file(lake, 0, 5, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2, seconds=5))
    _file(lake, 5, 7, T0 + timedelta(minutes=2), T0 + timedelta(minutes=2, seconds=50))
    _file(lake, 12, 3, T0 + timedelta(minutes=3), T0 + timedelta(minutes=4))
    _file(lake, 15, 9, T0 - timedelta(minutes=50), T0 - timedelta(minutes=40))  # too early
    got = landed_per_minute(lake, ("transactions", "logs"), T0, T0 + timedelta(minutes=10))
    assert got.to_dict("records") == [
        {"minute": T0 + timedelta(minutes=2), "topic": "transactions", "rows": 12},
        {"minute": T0 + timedelta(minutes=4), "topic": "transactions", "rows": 3}]


def test_an_empty_lake_lands_nothing(tmp_path: Path) -> None:
    got = landed_per_minute(Lake(tmp_path.as_uri()), ("logs",), T0, T0 + timedelta(hours=1))
    assert got.empty and list(got.columns) == ["minute", "topic", "rows"]
