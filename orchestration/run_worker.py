"""A warm Dagster run worker: one long-lived "zygote" process that imports Dagster and the
code location once, then forks a child per run (`WarmProcessRunLauncher` keeps it ready).
A run then starts in milliseconds and costs no imports: a fresh interpreter per run pays
~2.5 CPU-seconds of imports here, a real share of a 2-core machine at a run every few
seconds, and it sits on the path from every Kafka event to its anomaly row.

Run as `python -m orchestration.run_worker MODULE...`. stdin: the instance ref (one
serialized line), then one run id per line; for each, stdout answers the pid of the child
executing it, or `stale` (the project's source changed since the imports: the zygote exits
and the launcher starts a fresh one). The child does what `dagster api execute_run` does
(the pinned Dagster's own run body) on the instance the zygote opened ahead. End of input
ends the zygote; running children go on.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from orchestration.storage_pool import pool_storage_connections

STALE = "stale"
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


def _execute(instance: Any, run_id: str) -> int:
    """In the forked child: Dagster's own run body, on the instance the zygote opened. The
    zygote's storages pool no connections, so none crosses the fork; the run pools its own
    (a run logs each event: one connection per storage, not one per event)."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._utils.interrupts import capture_interrupts

    pool_storage_connections(instance, size=1, overflow=2,
                             application_name=f"vigil run {run_id[:8]}")
    with capture_interrupts():
        return _execute_run_command_body(run_id, instance, lambda _event: None,
                                         set_exit_code_on_failure=False)


def _fork_run(instance: Any, run_id: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        # The child is the run's own process: default signal handling (SIGINT becomes the
        # run's interrupt, its own subprocesses are waited for), stdout away from the
        # zygote's answer pipe, no input.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.dup2(2, 1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        code = _execute(instance, run_id)
    except BaseException as exc:  # report, then leave without the zygote's cleanup
        print(f"run worker: run {run_id} failed to execute ({exc!r})", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(modules: list[str]) -> int:
    root = Path.cwd().resolve()
    try:
        from dagster._cli.utils import get_instance_for_cli
        from dagster._core.instance.ref import InstanceRef
        from dagster._serdes import deserialize_value
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # each run then reports it, with its trace
                print(f"run worker: preloading {name} failed ({exc})", file=sys.stderr)
        stamps = _source_files(root)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished runs
        ref = deserialize_value(sys.stdin.readline(), InstanceRef)
        with get_instance_for_cli(instance_ref=ref) as instance:
            instance.get_run_by_id(PROBE_RUN_ID)  # loads the storages before a run waits
            for line in sys.stdin:
                run_id = line.strip()
                if not run_id:
                    continue
                if _changed(stamps):
                    print(STALE, flush=True)
                    return 0
                print(_fork_run(instance, run_id), flush=True)
    except KeyboardInterrupt:  # Ctrl-C on the whole stack while the zygote waits
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
