"""The kafka sensor: one sensor for all topics, one ingest run per tick at most.

Each tick reads high watermarks (no consumer group is joined), cuts the next exact offset
ranges from the cursor, and requests one run whose run_key is derived from those ranges —
so a tick evaluated twice can never land a range twice. While `VIGIL_INGEST_MAX_IN_FLIGHT`
ingest runs are queued or running, it waits (backpressure) and says so.
"""

from datetime import UTC, datetime

import dagster as dg
from confluent_kafka import KafkaException

from jobs.ingest import ingest
from orchestration.storage_pool import sensor_instance
from vigil.cursor import IngestPolicy, dump_cursor, load_cursor, plan_next
from vigil.ingest import run_key
from vigil.kafka import topic_watermarks
from vigil.settings import TOPICS, Settings

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _lag_text(lag: dict[str, dict[int, int]]) -> str:
    return "; ".join(f"{topic} " + ",".join(f"p{p}={n:,}" for p, n in sorted(parts.items()))
                     for topic, parts in sorted(lag.items()))


@dg.sensor(job=ingest, minimum_interval_seconds=1,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Cuts new Kafka offsets of logs, metrics and transactions into exact "
                       "ranges and requests an ingest run for them.")
def kafka_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    settings = Settings.from_env()
    instance = sensor_instance(context, application_name="vigil kafka sensor")
    in_flight = instance.get_runs_count(
        dg.RunsFilter(job_name=ingest.name, statuses=IN_FLIGHT))
    if in_flight >= settings.ingest_max_in_flight:
        return dg.SkipReason(f"backpressure: {in_flight} ingest runs queued or running "
                             f"(limit {settings.ingest_max_in_flight})")
    try:
        marks = topic_watermarks(settings.kafka_bootstrap, TOPICS, timeout=5.0)
    except (KafkaException, RuntimeError) as exc:
        return dg.SkipReason(f"Kafka at {settings.kafka_bootstrap} is unreachable ({exc}); "
                             "the cursor is kept and the next tick retries")
    policy = IngestPolicy(settings.ingest_max_records, settings.ingest_start)  # type: ignore[arg-type]
    plan = plan_next(load_cursor(context.cursor), marks, policy)
    for note in plan.notes:
        context.log.info(note)
    cursor = dump_cursor(plan.cursor)
    if not plan.ranges:
        return dg.SensorResult(cursor=cursor,
                               skip_reason=f"no new offsets; lag 0 ({_lag_text(plan.lag)})")
    request = dg.RunRequest(
        run_key=run_key(plan.ranges),
        run_config={"ops": {"land_ranges": {"config": {
            "ranges": [r.to_dict() for r in plan.ranges],
            "requested_at": datetime.now(UTC).isoformat()}}}},
        tags={"vigil/records": str(plan.records),
              "vigil/lag_before": str(plan.total_lag),
              "vigil/topics": ",".join(sorted({r.topic for r in plan.ranges}))})
    context.log.info(f"requesting {plan.records:,} offsets; lag before: {_lag_text(plan.lag)}")
    return dg.SensorResult(run_requests=[request], cursor=cursor)


defs = dg.Definitions(sensors=[kafka_sensor])
