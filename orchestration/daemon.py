"""The Dagster daemon with the sensor loop every `VIGIL_SENSOR_INTERVAL` seconds.

Dagster's sensor daemon sleeps until 5 s have passed since the start of each loop, whatever a
sensor's `minimum_interval_seconds` says (DESIGN.md): an event then waits up to 5 s before
any run is even requested for it. The local stack (`vigil run`, `vigil demo`) runs this
daemon instead, through `orchestration.dev`; it is Dagster's own daemon with that one
constant set, and its storages' Postgres connections pooled (`orchestration.storage_pool`;
pinned Dagster: tests check both hooks are still where we set them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestration.storage_pool import pool_storage_connections
from vigil.settings import Settings

# The daemon's threads (sensor, run queue, schedules, backfills, monitoring) share one
# instance: a few connections each storage, more while several are busy.
DAEMON_POOL_SIZE = 4
DAEMON_POOL_OVERFLOW = 8


def configure_sensor_loop(seconds: float) -> None:
    from dagster._daemon import sensor

    sensor.MIN_INTERVAL_LOOP_TIME = seconds  # type: ignore[assignment]


def with_pooled_storages(make_controller: Callable[..., Any]) -> Callable[..., Any]:
    """Dagster's daemon controller factory, pooling the instance's storages first."""
    def make(instance: Any, *args: Any, **kwargs: Any) -> Any:
        pool_storage_connections(instance, size=DAEMON_POOL_SIZE, overflow=DAEMON_POOL_OVERFLOW,
                                 application_name="vigil dagster daemon")
        return make_controller(instance, *args, **kwargs)
    return make


def main() -> None:
    configure_sensor_loop(Settings.from_env().sensor_interval)
    from dagster._daemon import cli

    cli.daemon_controller_from_instance = with_pooled_storages(
        cli.daemon_controller_from_instance)
    cli.main()


if __name__ == "__main__":
    main()
