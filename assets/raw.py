"""raw_logs, raw_metrics, raw_transactions: landed events, one partition per hour of event time.

They are materialised by the ingest job (a sensor-driven op job, not an asset computation:
the data comes from Kafka offset ranges, not from upstream assets), which reports one
materialisation per hour each run touched, with its rows, files, bytes and offsets.
"""

import dagster as dg

from vigil.settings import TOPICS

# Hours before this are still landed, just not reported as partitions (replays of old
# datasets would otherwise need decades of partitions in the UI).
HOURLY = dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00", end_offset=1)


def raw_asset_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{topic}")


RAW_ASSETS = [
    dg.AssetSpec(
        raw_asset_key(topic), partitions_def=HOURLY, group_name="lake",
        description=f"{topic} events landed from Kafka as zstd Parquet under "
                    f"raw/{topic}/date=YYYY-MM-DD/hour=HH/, one file per (partition, hour) "
                    "per ingest run; malformed records go to quarantine/.",
        metadata={"layout": f"raw/{topic}/date=YYYY-MM-DD/hour=HH/{topic}+<p>+<offset>.parquet"},
        kinds={"parquet", "kafka"},
    )
    for topic in TOPICS
]

defs = dg.Definitions(assets=RAW_ASSETS)
