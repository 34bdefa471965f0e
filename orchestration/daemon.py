"""The Dagster daemon with the sensor loop every `VIGIL_SENSOR_INTERVAL` seconds.

Dagster's sensor daemon sleeps until 5 s have passed since the start of each loop, whatever a
sensor's `minimum_interval_seconds` says (DESIGN.md): an event then waits up to 5 s before
any run is even requested for it. The local stack (`vigil run`, `vigil demo`) runs this
daemon instead, through `orchestration.dev`; it is Dagster's own daemon with that one
constant set (pinned Dagster: a test checks the constant is still where we set it).
"""

from __future__ import annotations

from vigil.settings import Settings


def configure_sensor_loop(seconds: float) -> None:
    from dagster._daemon import sensor

    sensor.MIN_INTERVAL_LOOP_TIME = seconds  # type: ignore[assignment]


def main() -> None:
    configure_sensor_loop(Settings.from_env().sensor_interval)
    from dagster._daemon.cli import main as daemon_main

    daemon_main()


if __name__ == "__main__":
    main()
