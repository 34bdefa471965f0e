"""A Dagster run launcher that forks each run from a warm process.

Dagster's default launcher asks the code server to spawn a fresh interpreter per run, which
then imports Dagster, pandas, pyarrow and the code location: ~2.5 CPU-seconds on this
machine before a run does anything, on the path from every Kafka event to its anomaly row,
and a large share of 2 cores at a run every few seconds. This launcher (configured for the
local stack by `vigil run` / `vigil demo`) keeps one `orchestration.run_worker` zygote that
has paid those imports once and forks a child per run. Each run still gets its own process
(memory and crashes are isolated); when the project's source changes, the zygote is replaced
before the next run, so runs never execute stale code.

It runs runs on the daemon's host, so it is a single-machine launcher: a cluster swaps in
dagster-k8s or Celery as DESIGN.md says.
"""

from __future__ import annotations

import contextlib
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
# Jobs that are not on the path from an event to its alert (re-detecting whole hours,
# training the next hour's models): their runs yield the CPU to ingest runs, which would
# otherwise share two cores with a minute-long hour of detection.
DEFAULT_BACKGROUND_JOBS = ("detect_hours", "train_hour_models")
BACKGROUND_NICENESS = 10


class WarmProcessRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, inst_data: ConfigurableClassData | None = None,
                 preload: Sequence[str] = DEFAULT_PRELOAD,
                 working_directory: str | None = None,
                 background_jobs: Sequence[str] = DEFAULT_BACKGROUND_JOBS,
                 background_niceness: int = BACKGROUND_NICENESS) -> None:
        self._inst_data = inst_data
        self._preload = list(preload)
        self._background = frozenset(background_jobs)
        self._niceness = background_niceness
        self._cwd = working_directory or os.getcwd()
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen[bytes] | None = None
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        from dagster import Array, Field, StringSource
        return {"preload": Field(Array(str), is_required=False,
                                 default_value=list(DEFAULT_PRELOAD)),
                "working_directory": Field(StringSource, is_required=False),
                "background_jobs": Field(Array(str), is_required=False,
                                         default_value=list(DEFAULT_BACKGROUND_JOBS)),
                "background_niceness": Field(int, is_required=False,
                                             default_value=BACKGROUND_NICENESS)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData,
                          config_value: Mapping[str, Any]) -> WarmProcessRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    # ------------------------------------------------------------------ workers

    def _start_zygote(self) -> subprocess.Popen[bytes]:
        zygote = subprocess.Popen([sys.executable, "-m", "orchestration.run_worker",
                                   *self._preload], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, cwd=self._cwd)
        assert zygote.stdin is not None
        zygote.stdin.write(serialize_value(self._instance.get_ref()).encode() + b"\n")
        zygote.stdin.flush()
        return zygote

    def _fork(self, run_id: str) -> int:
        """The pid of a fresh child of the zygote executing `run_id`. A zygote that has
        exited or holds stale code is replaced and asked again (once)."""
        for _attempt in range(2):
            if self._zygote is None or self._zygote.poll() is not None:
                self._zygote = self._start_zygote()
            zygote = self._zygote
            assert zygote.stdin is not None and zygote.stdout is not None
            try:
                zygote.stdin.write(run_id.encode() + b"\n")
                zygote.stdin.flush()
                answer = zygote.stdout.readline().decode().strip()
            except BrokenPipeError:
                answer = ""
            if answer.isdigit():
                return int(answer)
            self._retire(zygote)  # "stale", or it died: a fresh one imports the code anew
            self._zygote = None
        raise RuntimeError(f"the run worker could not start run {run_id}; see the daemon's log")

    @staticmethod
    def _retire(zygote: subprocess.Popen[bytes]) -> None:
        if zygote.stdin is not None and not zygote.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                zygote.stdin.close()  # end of input: the zygote exits, its runs go on
        try:
            zygote.wait(timeout=10)
        except subprocess.TimeoutExpired:
            zygote.kill()
            zygote.wait()

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        with self._lock:
            pid = self._fork(run.run_id)
        if run.job_name in self._background:
            # Lowering a priority needs no privilege; a run already gone needs none.
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, pid, self._niceness)
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid)})

    def dispose(self) -> None:
        with self._lock:
            if self._zygote is not None:
                self._retire(self._zygote)
                self._zygote = None

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
