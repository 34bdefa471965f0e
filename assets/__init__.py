"""Dagster assets over the lake and anomaly_events."""
