"""The Dagster code location: merges each concern's Definitions (workspace.yaml loads this)."""

import dagster as dg

import assets.anomalies
import assets.raw
import jobs.ingest
import jobs.maintenance
import orchestration.alerting
import orchestration.sensors

# Only `defs` may live at module scope: Dagster refuses a module with two Definitions.
defs = dg.Definitions.merge(assets.raw.defs, assets.anomalies.defs, jobs.ingest.defs,
                            jobs.maintenance.defs, orchestration.sensors.defs,
                            orchestration.alerting.defs)
