"""How the pipeline is keeping up: landing lag per partition (Kafka) and events landed per
minute (the lake's Parquet footers only — no row is read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq

from vigil.kafka import committed_offsets, topic_watermarks
from vigil.lake import Lake


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    high: int  # next offset Kafka will write
    landed: int  # next offset to land (-1: nothing landed yet)
    lag: int


def landing_lag(bootstrap: str, group: str, topics: tuple[str, ...]) -> list[PartitionLag]:
    """Offsets in Kafka not yet landed in the lake, per partition (raises KafkaException
    when the broker cannot be reached)."""
    marks = topic_watermarks(bootstrap, topics)
    landed = committed_offsets(bootstrap, group,
                               [(t, p) for t, parts in marks.items() for p in parts])
    rows = []
    for topic, parts in marks.items():
        for partition, (low, high) in sorted(parts.items()):
            done = landed.get((topic, partition), -1)
            rows.append(PartitionLag(topic, partition, high, done,
                                     high - (done if done >= 0 else low)))
    return rows


def landed_per_minute(lake: Lake, topics: tuple[str, ...], since: datetime,
                      until: datetime | None = None) -> pd.DataFrame:
    """Rows landed per minute and topic, by landing time (`_ingested_at`, one value per file:
    the run's cut time), from each file's footer. Columns: minute, topic, rows.

    Files are found by event hour, so events landed long after their event time (a replay
    of old data) are not counted here.
    """
    until = until or datetime.now(UTC)
    records = []
    for topic in topics:
        for path in lake.files("raw", topic, since - timedelta(hours=1), until):
            landed_at, rows = _footer(lake, path)
            if landed_at is not None and since <= landed_at < until:
                records.append((landed_at.replace(second=0, microsecond=0), topic, rows))
    frame = pd.DataFrame(records, columns=["minute", "topic", "rows"])
    return frame.groupby(["minute", "topic"])["rows"].sum().reset_index()


def _footer(lake: Lake, path: str) -> tuple[datetime | None, int]:
    with lake.fs.open_input_file(path) as source:
        meta = pq.ParquetFile(source).metadata
    column = meta.schema.names.index("_ingested_at")
    stats = meta.row_group(0).column(column).statistics if meta.num_row_groups else None
    if stats is None or not stats.has_min_max:
        return None, meta.num_rows
    moment = pd.Timestamp(stats.min)
    return (moment.tz_localize(UTC) if moment.tzinfo is None else moment).to_pydatetime(), \
        meta.num_rows
