"""A warm Dagster run worker: a process that imports Dagster and the code location before a
run exists, then waits on stdin for one run to execute (`WarmProcessRunLauncher` keeps one
such spare ready). A run then starts in milliseconds instead of paying ~3 s of interpreter
start and imports on the path from a Kafka event to its anomaly row.

Run as `python -m orchestration.run_worker MODULE...`. It does what `dagster api execute_run`
does (the pinned Dagster's own run body), with the imports and the instance's storage opened
ahead; end of input (the launcher went away or retired the spare) ends it without a run.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

PROBE_RUN_ID = "00000000-0000-0000-0000-000000000000"


def _source_files(root: Path) -> dict[str, float]:
    """Modification times of the loaded modules that live under `root` (the project)."""
    stamps: dict[str, float] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).is_relative_to(root):
            try:
                stamps[path] = os.stat(path).st_mtime
            except OSError:
                stamps[path] = -1.0
    return stamps


def _changed(stamps: dict[str, float]) -> bool:
    for path, mtime in stamps.items():
        try:
            if os.stat(path).st_mtime != mtime:
                return True
        except OSError:
            return True
    return False


def _cold_start(instance: Any, run_id: str) -> None:
    """Run it the way Dagster would in a fresh process (the preloaded code is stale)."""
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import serialize_value

    run = instance.get_run_by_id(run_id)
    args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run_id,
                          instance_ref=instance.get_ref(), set_exit_code_on_failure=None)
    os.execv(sys.executable, [sys.executable, "-m", "dagster", "api", "execute_run",
                              serialize_value(args)])


def main(modules: list[str]) -> int:
    """stdin: the instance ref (one serialized line, sent when the worker starts), then the
    id of the run to execute (sent when there is one)."""
    root = Path.cwd().resolve()
    try:
        from dagster._cli.api import _execute_run_command_body
        from dagster._cli.utils import get_instance_for_cli
        from dagster._core.instance.ref import InstanceRef
        from dagster._serdes import deserialize_value
        from dagster._utils.interrupts import capture_interrupts
        preloaded = True
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # the run reports it again, with its trace
                print(f"run worker: preloading {name} failed ({exc})", file=sys.stderr)
                preloaded = False
        stamps = _source_files(root)
        ref = deserialize_value(sys.stdin.readline(), InstanceRef)
        with get_instance_for_cli(instance_ref=ref) as instance:
            instance.get_run_by_id(PROBE_RUN_ID)  # opens the storage before a run waits on it
            run_id = sys.stdin.readline().strip()
            if not run_id:  # the launcher went away or retired this spare
                return 0
            if preloaded and _changed(stamps):
                _cold_start(instance, run_id)
            with capture_interrupts():
                return _execute_run_command_body(run_id, instance, lambda _event: None,
                                                 set_exit_code_on_failure=False)
    except KeyboardInterrupt:  # Ctrl-C on the whole stack while the spare waits
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
