"""Dagster's Postgres storages keep their connections in our processes (the daemon, each run
forked by the warm worker, the Kafka sensor's ticks) instead of opening one per storage call:
counted as the sessions the real server saw open, next to Dagster's unpooled default."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.storage.dagster_run import DagsterRunStatus
from sqlalchemy import pool as db_pool

from orchestration.daemon import with_pooled_storages
from orchestration.sensors import kafka_sensor
from orchestration.storage_pool import pool_storage_connections, shared_instance

CALLS = 40
LOGGED = 60

JOB_SOURCE = f'''
import dagster as dg


@dg.op
def chatty(context) -> None:
    for i in range({LOGGED}):
        context.log.info(f"line {{i}}")


@dg.job(executor_def=dg.in_process_executor)
def chatty_job():
    chatty()


defs = dg.Definitions(jobs=[chatty_job])
'''
MODULE = "vigil_storage_pool_test_job"


def sessions(url: str) -> int:
    """Sessions the server has opened on this database (this query's own included)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT sessions FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def connected_as(url: str, application_name: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           (application_name,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def storage_url(fresh_database: str) -> str:
    return "postgresql+psycopg2://" + fresh_database.split("://", 1)[1]


@pytest.fixture
def code_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(JOB_SOURCE)
    monkeypatch.syspath_prepend(str(code))
    return code


@pytest.fixture
def instance(tmp_path: Path, storage_url: str, code_dir: Path
             ) -> Iterator[dg.DagsterInstance]:
    launcher = {"module": "orchestration.warm_launcher", "class": "WarmProcessRunLauncher",
                "config": {"preload": [MODULE], "working_directory": str(code_dir)}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home"), overrides={
            "storage": {"postgres": {"postgres_url": storage_url}},
            "run_launcher": launcher}) as inst:
        yield inst


def test_a_pooled_instance_keeps_its_connections(instance: dg.DagsterInstance,
                                                 fresh_database: str) -> None:
    before = sessions(fresh_database)
    for _ in range(CALLS):
        instance.get_runs_count()
    unpooled = sessions(fresh_database) - before - 1
    assert unpooled >= CALLS  # Dagster's default: a session per storage call

    assert pool_storage_connections(instance, size=1, overflow=1,
                                    application_name="vigil pool test") == 3
    before = sessions(fresh_database)
    for _ in range(CALLS):
        instance.get_runs_count()
        instance.get_runs(limit=1)
    pooled = sessions(fresh_database) - before - 1
    assert pooled <= 2, f"{pooled} sessions for {2 * CALLS} pooled storage calls"
    assert connected_as(fresh_database, "vigil pool test") >= 1  # named for operators
    assert pool_storage_connections(instance, size=1, overflow=1,
                                    application_name="again") == 0  # already pooled


def test_a_kept_connection_the_server_dropped_is_replaced_not_failed(
        instance: dg.DagsterInstance, fresh_database: str) -> None:
    pool_storage_connections(instance, size=1, overflow=1, application_name="vigil drop test")
    assert instance.get_runs_count() == 0
    with psycopg.connect(fresh_database, autocommit=True) as conn:  # as a Postgres restart would
        dropped = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = 'vigil drop test'").fetchone()
    assert dropped is not None and dropped[0] >= 1
    assert instance.get_runs_count() == 0  # the ping on checkout found it gone: reconnected
    assert connected_as(fresh_database, "vigil drop test") >= 1


def test_a_run_forked_by_the_warm_worker_pools_its_own_connections(
        instance: dg.DagsterInstance, code_dir: Path, fresh_database: str) -> None:
    recon = ReconstructableRepository.for_module(
        MODULE, "defs", working_directory=str(code_dir)).get_reconstructable_job("chatty_job")
    run = instance.create_run_for_job(recon.get_definition(),
                                      job_code_origin=recon.get_python_origin())
    # The test's own polls keep one connection; the zygote opens its instance (a few
    # sessions, once); the run's 60 log lines and its step events would each open a
    # session without the run's own pool.
    pool_storage_connections(instance, size=1, overflow=1, application_name="vigil test")
    before = sessions(fresh_database)
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while not (finished := instance.get_run_by_id(run.run_id)).is_finished:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the run did not finish in 60 s"
        time.sleep(0.2)
    opened = sessions(fresh_database) - before - 1
    assert finished.status == DagsterRunStatus.SUCCESS  # type: ignore[union-attr]
    lines = [e.user_message for e in instance.all_logs(run.run_id)]
    assert all(f"line {i}" in lines for i in range(LOGGED))  # every event stored
    assert opened <= 20, f"{opened} sessions during a run logging {LOGGED} lines"


def test_the_daemon_pools_the_instance_before_its_threads_start(
        instance: dg.DagsterInstance) -> None:
    made: list[tuple[Any, ...]] = []

    def controller(inst: dg.DagsterInstance, *args: Any, **kwargs: Any) -> str:
        made.append((inst, args, kwargs))
        return "controller"

    assert with_pooled_storages(controller)(instance, "target", log_level="info") == "controller"
    assert made == [(instance, ("target",), {"log_level": "info"})]
    for storage in (instance.run_storage, instance.event_log_storage,
                    instance.schedule_storage):
        assert isinstance(storage._engine.pool, db_pool.QueuePool)  # type: ignore[union-attr]


def test_sensor_ticks_share_one_kept_instance(instance: dg.DagsterInstance,
                                              fresh_database: str) -> None:
    ref = instance.get_ref()
    assert shared_instance(ref, application_name="x") is shared_instance(
        ref, application_name="x")
    before = sessions(fresh_database)
    for _ in range(5):  # each logs its partitions as new: its log needs the instance
        context = dg.build_sensor_context(instance_ref=ref, cursor=None)
        kafka_sensor(context)
        assert context.instance is shared_instance(ref, application_name="x")
    opened = sessions(fresh_database) - before - 1
    # Without the kept instance each tick opened a fresh one: seven sessions a tick.
    assert opened <= 2, f"{opened} sessions for five ticks"
