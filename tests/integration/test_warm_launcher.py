"""The warm run launcher with a real Dagster instance and real worker processes: each run is
a child forked from one zygote that imported the code once, code changed after the import
still runs as changed, termination cancels, and a killed worker is reported failed."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from orchestration.warm_launcher import PID_TAG, WarmProcessRunLauncher

JOB_SOURCE = '''
import time
import dagster as dg

VERSION = {version}


@dg.op(config_schema={{"sleep": float}})
def work(context) -> int:
    context.log.info(f"job code version {{VERSION}}")
    time.sleep(context.op_config["sleep"])
    return VERSION


@dg.job(executor_def=dg.in_process_executor)
def warm_job():
    work()


defs = dg.Definitions(jobs=[warm_job])
'''

MODULE = "vigil_warm_launcher_test_job"


@pytest.fixture
def code_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(JOB_SOURCE.format(version=1))
    monkeypatch.syspath_prepend(str(code))
    return code


@pytest.fixture
def instance(tmp_path: Path, code_dir: Path) -> Iterator[dg.DagsterInstance]:
    with instance_for(tmp_path, code_dir) as inst:
        yield inst


@contextlib.contextmanager
def instance_for(tmp_path: Path, code_dir: Path, **config: Any
                 ) -> Iterator[dg.DagsterInstance]:
    launcher = {"module": "orchestration.warm_launcher", "class": "WarmProcessRunLauncher",
                "config": {"preload": [MODULE], "working_directory": str(code_dir), **config}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home"),
                              overrides={"run_launcher": launcher}) as inst:
        yield inst


def launch(instance: dg.DagsterInstance, code_dir: Path, sleep: float = 0.0) -> DagsterRun:
    recon = ReconstructableRepository.for_module(
        MODULE, "defs", working_directory=str(code_dir)).get_reconstructable_job("warm_job")
    run = instance.create_run_for_job(
        recon.get_definition(), run_config={"ops": {"work": {"config": {"sleep": sleep}}}},
        job_code_origin=recon.get_python_origin())
    return instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]


def wait_finished(instance: dg.DagsterInstance, run_id: str, timeout: float = 60.0
                  ) -> DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.is_finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def wait_status(instance: dg.DagsterInstance, run_id: str, status: DagsterRunStatus) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {status}")


def logged(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id)]


def launcher_of(instance: dg.DagsterInstance) -> WarmProcessRunLauncher:
    launcher = instance.run_launcher
    assert isinstance(launcher, WarmProcessRunLauncher)
    return launcher


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid), f"process {pid} is still there"


def test_each_run_is_its_own_child_of_one_warm_zygote(instance: dg.DagsterInstance,
                                                      code_dir: Path) -> None:
    first = launch(instance, code_dir, sleep=1.0)
    zygote = launcher_of(instance)._zygote
    assert zygote is not None and zygote.poll() is None
    wait_status(instance, first.run_id, DagsterRunStatus.STARTED)
    first_pid = int(instance.get_run_by_id(first.run_id).tags[PID_TAG])  # type: ignore[union-attr]
    assert psutil.Process(first_pid).ppid() == zygote.pid
    # Not a background job: as urgent as the worker it was forked from.
    assert psutil.Process(first_pid).nice() == psutil.Process(zygote.pid).nice()
    assert wait_finished(instance, first.run_id).status == DagsterRunStatus.SUCCESS
    wait_gone(first_pid)  # reaped by the zygote: no zombie left behind

    second = launch(instance, code_dir, sleep=1.0)
    assert launcher_of(instance)._zygote is zygote  # the same warm process, no new imports
    second_run = wait_finished(instance, second.run_id)
    assert second_run.status == DagsterRunStatus.SUCCESS
    assert "job code version 1" in logged(instance, second.run_id)
    assert int(second_run.tags[PID_TAG]) not in (first_pid, zygote.pid)


def test_a_background_jobs_run_yields_the_cpu(tmp_path: Path, code_dir: Path) -> None:
    """Runs of the configured background jobs (by default the hourly re-detection and model
    training) get a lower CPU priority than ingest runs; the warm worker keeps its own."""
    with instance_for(tmp_path, code_dir, background_jobs=["warm_job"],
                      background_niceness=7) as inst:
        run = launch(inst, code_dir, sleep=2.0)
        wait_status(inst, run.run_id, DagsterRunStatus.STARTED)
        pid = int(inst.get_run_by_id(run.run_id).tags[PID_TAG])  # type: ignore[union-attr]
        zygote = launcher_of(inst)._zygote
        assert zygote is not None
        assert psutil.Process(pid).nice() == 7
        assert psutil.Process(zygote.pid).nice() == psutil.Process().nice()
        assert wait_finished(inst, run.run_id).status == DagsterRunStatus.SUCCESS


def test_code_changed_after_the_zygote_imported_it_runs_as_changed(
        instance: dg.DagsterInstance, code_dir: Path) -> None:
    wait_finished(instance, launch(instance, code_dir).run_id)
    zygote = launcher_of(instance)._zygote
    assert zygote is not None
    source = code_dir / f"{MODULE}.py"
    source.write_text(JOB_SOURCE.format(version=2))
    later = os.stat(source).st_mtime + 2
    os.utime(source, (later, later))
    run = wait_finished(instance, launch(instance, code_dir).run_id)
    assert run.status == DagsterRunStatus.SUCCESS
    messages = logged(instance, run.run_id)
    assert "job code version 2" in messages and "job code version 1" not in messages
    assert zygote.poll() == 0  # the stale one retired; a fresh one imported version 2
    assert launcher_of(instance)._zygote is not zygote


def test_terminate_cancels_the_run(instance: dg.DagsterInstance, code_dir: Path) -> None:
    run = launch(instance, code_dir, sleep=60)
    wait_status(instance, run.run_id, DagsterRunStatus.STARTED)
    assert launcher_of(instance).terminate(run.run_id)
    assert wait_finished(instance, run.run_id, timeout=30).status == DagsterRunStatus.CANCELED
    assert not launcher_of(instance).terminate(run.run_id)  # finished: nothing to stop


def test_a_killed_worker_is_reported_failed(instance: dg.DagsterInstance,
                                            code_dir: Path) -> None:
    launcher = launcher_of(instance)
    run = launch(instance, code_dir, sleep=60)
    wait_status(instance, run.run_id, DagsterRunStatus.STARTED)
    started = instance.get_run_by_id(run.run_id)
    assert started is not None
    assert launcher.check_run_worker_health(started).status == WorkerStatus.RUNNING
    pid = int(started.tags[PID_TAG])
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    health = launcher.check_run_worker_health(started)
    assert health.status == WorkerStatus.FAILED
    assert str(pid) in (health.msg or "")


def test_a_dead_zygote_is_replaced_at_the_next_launch(instance: dg.DagsterInstance,
                                                      code_dir: Path) -> None:
    wait_finished(instance, launch(instance, code_dir).run_id)
    zygote = launcher_of(instance)._zygote
    assert zygote is not None
    zygote.kill()
    zygote.wait()
    run = wait_finished(instance, launch(instance, code_dir).run_id)
    assert run.status == DagsterRunStatus.SUCCESS


def test_the_zygote_exits_when_the_launcher_is_disposed(instance: dg.DagsterInstance,
                                                        code_dir: Path) -> None:
    wait_finished(instance, launch(instance, code_dir).run_id)
    launcher = launcher_of(instance)
    zygote = launcher._zygote
    assert zygote is not None
    launcher.dispose()
    assert zygote.wait(timeout=30) == 0
