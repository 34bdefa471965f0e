"""Pipeline alerts: a failed ingest or detection run is posted to the Discord webhook."""

import dagster as dg

from assets.anomalies import detect_hours
from jobs.ingest import ingest
from vigil.alerts import DiscordWebhook, pipeline_failure_message
from vigil.settings import Settings


@dg.run_failure_sensor(monitored_jobs=[ingest, detect_hours],
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Posts a pipeline alert to Discord when an ingest or "
                                   "detection run fails.")
def pipeline_failure_alert(context: dg.RunFailureSensorContext) -> None:
    settings = Settings.from_env()
    run = context.dagster_run
    error = context.failure_event.message or "no error message"
    payload = pipeline_failure_message(
        job=run.job_name, run_id=run.run_id, error=error,
        url=f"http://127.0.0.1:{settings.dagster_port}/runs/{run.run_id}")
    if not settings.discord_webhook_url:
        context.log.warning(f"run {run.run_id} of {run.job_name} failed; no "
                            "DISCORD_WEBHOOK_URL to tell anyone")
        return
    DiscordWebhook(settings.discord_webhook_url).post(payload)


defs = dg.Definitions(sensors=[pipeline_failure_alert])
