"""anomaly_events: one partition per hour, recomputed from the lake alone.

Materialising a partition (a UI backfill, the reprocessing schedule) reads that hour plus the
rules' look-back from raw_*, runs the rule engine and replaces the hour's rows in Postgres.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg

from assets.raw import HOURLY, raw_asset_key
from vigil.alerts import deliver_configured
from vigil.detect.engine import detector_versions
from vigil.detect.hours import detect_hour, forest_models
from vigil.detect.rules import DEFAULT_RULES, load_rules
from vigil.lake import Lake, floor_hour
from vigil.settings import TOPICS, Settings

# Run tag: skip the hour when nothing it reads changed since its last whole detection (the
# schedule's runs; a backfill launched by hand always recomputes).
UNLESS_UNCHANGED = "vigil/unless_unchanged"


@dg.asset(partitions_def=HOURLY, deps=[raw_asset_key(t) for t in TOPICS],
          group_name="detection", kinds={"postgres", "pandas"},
          description="Anomalies found by the rules and models in vigil/detect/rules.yaml "
                      "(an hour's isolation_forest models are retrained from the lake), "
                      "upserted into Postgres anomaly_events by hour of the firing events.")
def anomaly_events(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    settings = Settings.from_env()
    hour = context.partition_time_window.start
    with psycopg.connect(settings.database_url) as conn:
        rules = load_rules()
        result = detect_hour(Lake.open(settings), rules, conn, hour,
                             unless_unchanged=context.run.tags.get(UNLESS_UNCHANGED) == "true")
        delivery = deliver_configured(conn, settings.discord_webhook_url)
    if result.unchanged_since is not None:
        context.log.info(f"{hour:%Y-%m-%d %H}:00 — unchanged since its detection at "
                         f"{result.unchanged_since:%Y-%m-%d %H:%M:%S} (the same lake files "
                         f"and rules): not read again; {result.anomalies} anomalies stand")
    else:
        context.log.info(f"{hour:%Y-%m-%d %H}:00 — {result.events:,} events, "
                         f"{result.anomalies} anomalies ({result.written} written, "
                         f"{result.removed} removed)" + _left_to_ingest(result.left_to_ingest))
    for note in result.notes:
        context.log.warning(note)
    return dg.MaterializeResult(metadata={
        "events": result.events, "anomalies": result.anomalies, "written": result.written,
        "removed": result.removed, "by_rule": dg.MetadataValue.json(result.by_rule),
        "unchanged": result.unchanged_since is not None,
        "alerts_sent": delivery.delivered_rows, "alerts_pending": delivery.pending_rows,
        "alerts": delivery.disabled or "enabled",
        "rules_file": str(DEFAULT_RULES),
        "detector_versions": dg.MetadataValue.json(detector_versions(rules)),
        **({"not_scored": dg.MetadataValue.json(list(result.notes))} if result.notes else {}),
        **({"left_to_ingest_from": dg.MetadataValue.json(
            {t: m.isoformat() for t, m in result.left_to_ingest.items()})}
           if result.left_to_ingest else {})})


def _left_to_ingest(landed: dict[str, datetime]) -> str:
    if not landed:
        return ""
    since = ", ".join(f"{topic} from {moment:%H:%M:%S}" for topic, moment in sorted(landed.items()))
    return (f"; events landed in it while it was read ({since}): those buckets were left to "
            "the ingest runs that landed them, and the next scheduled reprocessing reads the "
            "hour again")


detect_hours = dg.define_asset_job(
    "detect_hours", selection=[anomaly_events],
    executor_def=dg.in_process_executor,
    description="Recompute anomaly_events for hours; launch a backfill over any range.")


@dg.schedule(job=detect_hours, cron_schedule="15 * * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Re-detect the last three complete hours whose lake files or rules "
                         "changed since their last detection, so late events are counted.")
def reprocess_recent_hours(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    # Complete hours only: every ingest run already detects the buckets it landed in. An
    # hour whose lake files and rules are those of its last whole detection is skipped (the
    # same rows), so each hour is read in full about once, not at every tick that covers it.
    keys = HOURLY.get_partition_keys(current_time=context.scheduled_execution_time)
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    return [dg.RunRequest(partition_key=key, run_key=f"{key}@{tick}",
                          tags={UNLESS_UNCHANGED: "true"}) for key in keys[-4:-1]]


@dg.op(config_schema={"hour": dg.Field(str, description="The hour the models will score, "
                                        "ISO 8601, e.g. 2026-11-25T07:00:00+00:00")},
       description="Train and store the isolation_forest models an hour is scored with, from "
                   "the history ending 10 minutes before it; a model already stored is kept.")
def train_forest_models(context: dg.OpExecutionContext) -> None:
    hour = _hour(context.op_config["hour"])
    settings = Settings.from_env()
    rules = load_rules()
    with psycopg.connect(settings.database_url) as conn:
        models, notes = forest_models(Lake.open(settings), rules, conn,
                                      {r.name: [hour] for r in rules}, retrain=False)
    context.log.info(f"{hour:%Y-%m-%d %H}:00 — models ready for: "
                     f"{', '.join(sorted(models)) or 'no rule'}")
    for note in notes:
        context.log.warning(note)


def _hour(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise dg.Failure(f"hour {text!r} is not an ISO 8601 time; "
                         "give one such as 2026-11-25T07:00:00+00:00") from None
    return floor_hour(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


@dg.job(executor_def=dg.in_process_executor,
        description="Train the isolation_forest models of an hour ahead of it.")
def train_hour_models() -> None:
    train_forest_models()


@dg.schedule(job=train_hour_models, cron_schedule="55 * * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Train the next hour's models before it begins, so its first ingest "
                         "runs score with them instead of training them.")
def train_next_hour_models(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    hour = floor_hour(context.scheduled_execution_time) + timedelta(hours=1)
    return dg.RunRequest(run_key=f"models-{hour:%Y%m%dT%H}", run_config={
        "ops": {"train_forest_models": {"config": {"hour": hour.isoformat()}}}})


defs = dg.Definitions(assets=[anomaly_events], jobs=[detect_hours, train_hour_models],
                      schedules=[reprocess_recent_hours, train_next_hour_models])
