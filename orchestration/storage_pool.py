"""Pooled Postgres connections for Dagster's storages in our long-lived processes.

Outside its webserver, Dagster's Postgres storages use `NullPool`: every storage call opens a
connection and closes it, and each connection is a Postgres backend process forked,
authenticated and warmed. The local stack opened ~24 sessions a second idle (the daemon's
run queue every 1 s, the sensor every 2 s, heartbeats) and ~55 under 20,000 events/s (each
run's event log too): Postgres spent 18 % of the machine's two cores starting sessions, next
to the runs that carry events to anomaly rows (`bench/latency.py`). The daemon and each run
process swap their storages' engines for pooled ones here; Dagster's webserver already pools
(`optimize_for_webserver`).

A pooled connection must not cross a fork: the run worker's zygote keeps `NullPool` (it holds
no connection while idle) and each forked run pools its own.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import pool as db_pool

# A pooled connection left idle longer than this is replaced, not reused.
RECYCLE_SECONDS = 1800


def pool_storage_connections(instance: Any, *, size: int, overflow: int,
                             application_name: str) -> int:
    """Give each of `instance`'s Postgres storages (runs, event log, schedules) an engine that
    keeps up to `size` connections open, `overflow` more while busy; checked with a ping when
    taken (a restarted Postgres costs one reconnect, not a failed storage call). Storages that
    are not Postgres (sqlite in tests) or already pooled are left as they are. Returns how
    many engines were replaced."""
    from dagster_postgres.utils import create_pg_engine

    replaced = 0
    for storage in (instance.run_storage, instance.event_log_storage,
                    instance.schedule_storage):
        engine = getattr(storage, "_engine", None)
        url = getattr(storage, "postgres_url", None)
        if engine is None or url is None or not isinstance(engine.pool, db_pool.NullPool):
            continue
        # The URL's own query (e.g. `options`) still reaches the driver: connect_args only add.
        storage._engine = create_pg_engine(
            url, getattr(storage, "_token_provider", None), isolation_level="AUTOCOMMIT",
            pool_size=size, max_overflow=overflow, pool_pre_ping=True,
            pool_recycle=RECYCLE_SECONDS, connect_args={"application_name": application_name})
        engine.dispose()
        replaced += 1
    return replaced


_INSTANCES: dict[str, Any] = {}
_INSTANCES_LOCK = threading.Lock()  # the code server evaluates on a thread pool


def shared_instance(instance_ref: Any, *, application_name: str) -> Any:
    """One pooled DagsterInstance per instance ref for this process."""
    from dagster import DagsterInstance
    from dagster._serdes import serialize_value

    key = serialize_value(instance_ref)
    with _INSTANCES_LOCK:
        if key in _INSTANCES:
            return _INSTANCES[key]
        instance = DagsterInstance.from_ref(instance_ref)
        pool_storage_connections(instance, size=1, overflow=1,
                                 application_name=application_name)
        _INSTANCES[key] = instance
        return instance


def sensor_instance(context: Any, *, application_name: str) -> Any:
    """The instance for a sensor tick, kept across ticks. A sensor's context opens a fresh
    instance on each tick at its first use (`context.instance`, and `context.log`, whose
    captured logs need it): each Postgres storage inspects its tables as it opens, six or
    seven sessions a tick. The kept one is handed to the context (pinned Dagster: the
    context opens its own only while `_instance` is unset), so the tick's runs count and log
    lines reuse its connections."""
    if context.instance_ref is None:  # a test's context built around an instance
        return context.instance
    instance = shared_instance(context.instance_ref, application_name=application_name)
    context._instance = instance
    return instance
