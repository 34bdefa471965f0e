"""A Dagster run launcher that keeps one warm worker process ready.

Dagster's default launcher asks the code server to spawn a fresh interpreter per run, which
then imports Dagster, pandas, pyarrow and the code location: ~3 s on this machine before a
run does anything, on the path from every Kafka event to its anomaly row. This launcher
(configured for the local stack by `vigil run` / `vigil demo`) keeps a spare
`orchestration.run_worker` that has already paid those imports, hands it the next run on
stdin and starts the next spare. Each run still gets its own process (memory and crashes are
isolated); a spare whose source files changed since it imported them runs cold instead.

It runs runs on the daemon's host, so it is a single-machine launcher: a cluster swaps in
dagster-k8s or Celery as DESIGN.md says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import psutil
from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

PID_TAG = "vigil/run_worker_pid"
DEFAULT_PRELOAD = ("orchestration.definitions",)


class WarmProcessRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, inst_data: ConfigurableClassData | None = None,
                 preload: Sequence[str] = DEFAULT_PRELOAD,
                 working_directory: str | None = None) -> None:
        self._inst_data = inst_data
        self._preload = list(preload)
        self._cwd = working_directory or os.getcwd()
        self._lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        from dagster import Array, Field, StringSource
        return {"preload": Field(Array(str), is_required=False,
                                 default_value=list(DEFAULT_PRELOAD)),
                "working_directory": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData,
                          config_value: Mapping[str, Any]) -> WarmProcessRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    # ------------------------------------------------------------------ workers

    def _start_worker(self) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen([sys.executable, "-m", "orchestration.run_worker",
                                   *self._preload], stdin=subprocess.PIPE, cwd=self._cwd)
        assert worker.stdin is not None
        worker.stdin.write(serialize_value(self._instance.get_ref()).encode() + b"\n")
        worker.stdin.flush()
        return worker

    def _take_spare(self) -> subprocess.Popen[bytes]:
        spare = self._spare
        self._spare = None
        if spare is None or spare.poll() is not None:
            spare = self._start_worker()  # cold: it reads the run once its imports finish
        return spare

    def _reap(self) -> None:
        for run_id, worker in list(self._running.items()):
            if worker.poll() is not None:
                del self._running[run_id]

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        with self._lock:
            self._reap()
            worker = self._take_spare()
            self._instance.add_run_tags(run.run_id, {PID_TAG: str(worker.pid)})
            assert worker.stdin is not None
            worker.stdin.write(run.run_id.encode() + b"\n")
            worker.stdin.close()
            self._running[run.run_id] = worker
            self._spare = self._start_worker()

    def dispose(self) -> None:
        with self._lock:
            if self._spare is not None and self._spare.stdin is not None:
                self._spare.stdin.close()  # end of input: the spare exits without a run
                self._spare = None

    # ------------------------------------------------------------------ monitoring

    @staticmethod
    def _worker_pid(run: DagsterRun) -> int | None:
        pid = run.tags.get(PID_TAG)
        return int(pid) if pid and pid.isdigit() else None

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        pid = self._worker_pid(run)
        if pid is None or not psutil.pid_exists(pid):
            return False
        self._instance.report_run_canceling(run)
        # Dagster turns SIGINT into an execution interrupt: the run ends as CANCELED.
        os.kill(pid, signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = self._worker_pid(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no worker pid tag")
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED,
                                    f"run worker process {pid} is gone")
