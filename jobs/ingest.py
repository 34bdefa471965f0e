"""The ingest job: land the exact offset ranges a sensor tick cut, report what landed where."""

import time
from datetime import datetime
from typing import Any

import dagster as dg
import psycopg

from assets.raw import HOURLY, raw_asset_key
from vigil.alerts import deliver_configured
from vigil.detect.engine import detector_versions
from vigil.detect.hours import RecentResult, detect_recent
from vigil.detect.past_cache import PastCache
from vigil.detect.recent_rows import RecentRows
from vigil.detect.rules import DEFAULT_RULES, RuleError, load_rules
from vigil.ingest import LandingReport, OffsetRange, land_offset_ranges
from vigil.lake import Lake
from vigil.profiling import profiled
from vigil.settings import Settings


class OffsetRangeConfig(dg.Config):
    topic: str
    partition: int
    start: int
    end: int


class IngestConfig(dg.Config):
    ranges: list[OffsetRangeConfig]
    requested_at: str  # ISO time the sensor cut the ranges: the rows' _ingested_at


# The sensor has already moved its cursor past these ranges, so a failed attempt must be
# retried: landing is idempotent (same files, same bytes), which makes retrying safe.
LANDING_RETRIES = dg.RetryPolicy(max_retries=5, delay=5, backoff=dg.Backoff.EXPONENTIAL)


ANOMALY_EVENTS = dg.AssetKey("anomaly_events")


@dg.op(description="Read exactly the configured Kafka offset ranges, land them as Parquet "
                   "(malformed records to quarantine), commit the landed offsets, then "
                   "detect the re-alert buckets the new events fall in and post new alerts.",
       retry_policy=LANDING_RETRIES)
def land_ranges(context: dg.OpExecutionContext, config: IngestConfig) -> dg.Output[int]:
    settings = Settings.from_env()
    ranges = [OffsetRange(r.topic, r.partition, r.start, r.end) for r in config.ranges]
    total = sum(r.end - r.start for r in ranges)
    context.log.info(f"landing {total:,} offsets from {len(ranges)} partition ranges")
    step = max(total // 5, 1)
    next_log = [step]  # log about every fifth of the way

    def progress(read: int) -> None:
        if read >= next_log[0]:
            context.log.info(f"read {read:,} of {total:,} offsets")
            next_log[0] = (read // step + 1) * step

    try:
        requested_at = datetime.fromisoformat(config.requested_at)
    except ValueError:
        # A config mistake: retrying cannot fix it.
        raise dg.Failure(f"requested_at={config.requested_at!r} is not an ISO 8601 time",
                         allow_retries=False) from None
    lake = Lake.open(settings)
    report = land_offset_ranges(lake, settings.kafka_bootstrap, ranges, requested_at,
                                group=settings.deployment, progress=progress)
    for event in materializations(report):
        context.log_event(event)
    detection = detect_landed(context, settings, lake, report)
    return dg.Output(report.rows, metadata={
        "rows": report.rows, "quarantined": report.quarantined,
        "ranges": [r.key for r in ranges],
        "lag_after": dg.MetadataValue.json(report.lag), **detection})


def detect_landed(context: dg.OpExecutionContext, settings: Settings, lake: Lake,
                  report: LandingReport) -> dict[str, Any]:
    """Detect right after landing, in the same run: the re-alert buckets the new events fall
    in are recomputed from the lake, then the outbox posts what is new."""
    landed = {topic: (t.first_event, t.last_event) for topic, t in report.topics.items()
              if t.first_event is not None and t.last_event is not None}
    if not landed:
        return {}
    try:
        rules = load_rules()
    except RuleError as exc:
        raise dg.Failure(f"detection skipped, the events are landed: {exc}. Fix "
                         f"{DEFAULT_RULES}; the reprocessing schedule re-detects recent "
                         "hours, a backfill of anomaly_events older ones.",
                         allow_retries=False) from None
    try:
        with psycopg.connect(settings.database_url) as conn:
            pasts = PastCache(settings.state_dir / "entity-pasts", lake.url)
            recent = RecentRows(settings.state_dir / "recent-rows", lake.url)
            with profiled(settings.profile_dir, f"detect-{context.run_id}"):
                result = detect_recent(lake, rules, conn, landed, pasts, recent)
            delivering = time.monotonic()
            delivery = deliver_configured(conn, settings.discord_webhook_url)
            delivered = time.monotonic() - delivering
    except psycopg.errors.UndefinedTable as exc:
        raise dg.Failure(f"detection skipped, the events are landed: the database has no "
                         f"anomaly_events table ({exc}). Run `vigil db migrate`.",
                         allow_retries=False) from None
    continued = sorted(name for name, flag in result.continued.items() if flag)
    context.log.info(f"detection: {result.anomalies} anomalies in the recomputed buckets "
                     f"({result.written} written, {result.removed} removed); "
                     f"{len(continued)} of {len(result.continued)} rules continued their "
                     f"stored anomalies from the batch on ({_reopened(result)}), the rest "
                     f"recomputed their buckets; windows' pasts "
                     f"{recent.hits} from kept rows, {recent.misses} read from the lake; "
                     f"long look-backs {pasts.hits} from kept rows, {pasts.misses} read from "
                     f"the lake{_presence(pasts)}; "
                     f"alerts sent {delivery.delivered_rows}, pending {delivery.pending_rows}; "
                     f"{time_spent({**result.seconds, 'alerts': delivered})}")
    for note in result.notes:
        context.log.warning(note)
    metadata: dict[str, Any] = {
        "recomputed_from": min(s for s, _ in result.windows.values()).isoformat(),
        "by_rule": dg.MetadataValue.json(result.by_rule),
        "detector_versions": dg.MetadataValue.json(detector_versions(rules))}
    for hour in result.hours:
        key = hour.strftime("%Y-%m-%d-%H:%M")
        if HOURLY.has_partition_key(key):
            context.log_event(dg.AssetMaterialization(
                asset_key=ANOMALY_EVENTS, partition=key, metadata=metadata))
    return {"anomalies": result.anomalies, "anomalies_written": result.written,
            "anomalies_removed": result.removed, "alerts_sent": delivery.delivered_rows,
            "alerts": delivery.disabled or "enabled"}


def _presence(pasts: PastCache) -> str:
    """How the look-backs new to the kept rows were read: the files presence ruled out."""
    if pasts.presence is None:
        return ""
    broken = (f"; presence filters unusable, rebuilding ({pasts.presence.failure})"
              if pasts.presence.failure else "")
    if not pasts.added + pasts.misses:
        return broken
    checked = pasts.presence.opened + pasts.presence.skipped
    return (f" ({pasts.added} adding entities new to the kept rows; of {checked:,} files, "
            f"{pasts.presence.skipped:,} ruled out by presence filters){broken}")


def _reopened(result: RecentResult) -> str:
    """How many entities with anomalies still open were recomputed, and from where, by rule
    (the runs that redo a bucket's start are the slow ones)."""
    total = sum(result.reopened.values())
    if not total:
        return "no entity with an anomaly still open"
    by_rule = ", ".join(f"{name} {n} ({result.resumed.get(name, 0)} resumed)"
                        for name, n in sorted(result.reopened.items()) if n)
    why = "; ".join(f"{reason} {n}" for reason, n in sorted(result.why_whole.items()))
    return (f"{total} entities with anomalies still open recomputed, "
            f"{sum(result.resumed.values())} resumed from their carry, the rest from "
            f"their bucket's start{f' ({why})' if why else ''}: {by_rule}")


def time_spent(seconds: dict[str, float]) -> str:
    """Where detection's time went, e.g. "seconds: models 0.01, lock_wait 2.10, detect 1.40,
    alerts 0.05" (bench/latency.py reads it back from the run's log)."""
    return "seconds: " + ", ".join(f"{name} {value:.2f}" for name, value in seconds.items())


def materializations(report: LandingReport) -> list[dg.AssetMaterialization]:
    """One materialisation per (topic, hour) this landing touched."""
    events = []
    for topic, landing in report.topics.items():
        by_hour: dict[str, list] = {}
        for written in landing.files:
            by_hour.setdefault(written.hour.strftime("%Y-%m-%d-%H:%M"), []).append(written)
        ranges = [r.key for r in report.ranges if r.topic == topic]
        for key, files in sorted(by_hour.items()):
            if not HOURLY.has_partition_key(key):  # e.g. replayed data from before 2024
                continue
            events.append(dg.AssetMaterialization(
                asset_key=raw_asset_key(topic), partition=key,
                metadata={
                    "rows": sum(f.rows for f in files),
                    "files": len(files),
                    "bytes": sum(f.bytes for f in files),
                    "offsets": [f"{f.partition}:{f.first_offset}-{f.last_offset}"
                                for f in files],
                    "paths": [f.path for f in files],
                    "quarantined_in_run": landing.quarantined,
                    "run_ranges": ranges,
                    "consumer_lag": dg.MetadataValue.json(
                        {str(p): v for p, v in report.lag.get(topic, {}).items()}),
                }))
    return events


@dg.job(executor_def=dg.in_process_executor, tags={"vigil/kind": "ingest"},
        description="Land Kafka offset ranges cut by the kafka sensor.")
def ingest() -> None:
    land_ranges()


defs = dg.Definitions(jobs=[ingest])
