"""The Dagster code location: merges each concern's Definitions (workspace.yaml loads this)."""

import dagster as dg

import jobs.maintenance

# Only `defs` may live at module scope: Dagster refuses a module with two Definitions.
defs = dg.Definitions.merge(jobs.maintenance.defs)
