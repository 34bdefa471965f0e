"""The local stack's Dagster daemon: `orchestration.dev` swaps the daemon module that
`dagster dev` spawns, and `orchestration.daemon` sets the sensor loop's interval. Both lean on
the pinned Dagster's internals, so these tests fail loudly if an upgrade moves them."""

from __future__ import annotations

import inspect
import sys

from dagster._cli import dev
from dagster._daemon import cli, sensor

from orchestration.daemon import configure_sensor_loop
from orchestration.dev import with_vigil_daemon


def test_the_daemon_dagster_dev_spawns_is_ours() -> None:
    daemon = [sys.executable, "-m", "dagster._daemon", "run", "--log-level", "info"]
    assert with_vigil_daemon(daemon) == [sys.executable, "-m", "orchestration.daemon", "run",
                                         "--log-level", "info"]
    webserver = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1"]
    assert with_vigil_daemon(webserver) == webserver


def test_dagster_dev_still_spawns_its_daemon_the_way_the_shim_expects() -> None:
    source = inspect.getsource(dev)
    assert "open_ipc_subprocess(" in source and '"dagster._daemon",' in source


def test_the_sensor_loop_interval_is_the_constant_the_loop_reads() -> None:
    assert "MIN_INTERVAL_LOOP_TIME" in inspect.getsource(sensor.execute_sensor_iteration_loop)
    before = sensor.MIN_INTERVAL_LOOP_TIME
    try:
        configure_sensor_loop(1)
        assert sensor.MIN_INTERVAL_LOOP_TIME == 1
    finally:
        sensor.MIN_INTERVAL_LOOP_TIME = before


def test_the_daemon_builds_its_controller_through_the_name_we_wrap() -> None:
    # orchestration.daemon pools the instance's storages by replacing this module-level
    # name; the command body must still look it up there, at call time.
    assert "daemon_controller_from_instance(" in inspect.getsource(cli._daemon_run_command)
    assert callable(cli.daemon_controller_from_instance)
