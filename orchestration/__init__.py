"""Dagster wiring: definitions, resources, sensors, schedules."""
