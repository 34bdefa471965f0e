"""The local stack — Kafka, PostgreSQL and (on request) S3 — for dev, the demo, tests and CI.

`up` is idempotent and returns only when every service answers; `down` stops exactly the
processes `up` recorded; `status` says what runs where. Services configured as external
(KAFKA_SERVER_1, DATABASE_URL/POSTGRES_HOST) are checked, never started or stopped.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from vigil.services.kafka_broker import KafkaBroker
from vigil.services.postgres_server import PostgresServer
from vigil.services.process import ProcessRecord, ProcessRegistry, ServiceError, stop
from vigil.services.s3_server import S3Server
from vigil.settings import Settings

__all__ = ["ServiceError", "ServiceStatus", "down", "status", "up"]


class LocalService(Protocol):
    @property
    def address(self) -> str: ...
    def running(self) -> ProcessRecord | None: ...
    def healthy(self) -> bool: ...
    def start(self, progress: list[str]) -> ProcessRecord: ...


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # started | running | stopped | external | unreachable | off
    address: str
    pid: int | None = None
    healthy: bool = False

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else ""
        health = "healthy" if self.healthy else "-"
        return f"{self.name:<9} {self.state:<12} {health:<8} {self.address:<28} {pid}"


def _services(settings: Settings, with_s3: bool) -> list[tuple[str, LocalService, bool]]:
    """(name, service, managed by us) in start order."""
    found: list[tuple[str, LocalService, bool]] = [
        ("postgres", PostgresServer(settings), settings.postgres_embedded),
        ("kafka", KafkaBroker(settings), settings.kafka_managed),
    ]
    s3 = S3Server(settings)
    if with_s3 or s3.running() is not None:
        found.append(("s3", s3, True))
    return found


@contextmanager
def _stack_lock(settings: Settings) -> Iterator[None]:
    """Two `up`/`down` calls on one state folder take turns instead of racing."""
    run_dir = settings.state_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up(settings: Settings, with_s3: bool = False,
       report: Callable[[str], None] = print) -> list[ServiceStatus]:
    results: list[ServiceStatus] = []
    with _stack_lock(settings):
        for name, service, managed in _services(settings, with_s3):
            if not managed:
                ok = service.healthy()
                if not ok:
                    raise ServiceError(f"{name} at {service.address} (external) is unreachable")
                results.append(ServiceStatus(name, "external", service.address, None, ok))
                continue
            record = service.running()
            if record is not None:
                report(f"{name}: already running (pid {record.pid})")
                results.append(ServiceStatus(name, "running", service.address, record.pid,
                                             service.healthy()))
                continue
            progress: list[str] = []
            report(f"{name}: starting on {service.address} ...")
            try:
                record = service.start(progress)
            except BaseException:
                _abandon(service, name, settings)
                raise
            finally:
                for line in progress:
                    report(line)
            report(f"{name}: ready (pid {record.pid})")
            results.append(ServiceStatus(name, "started", service.address, record.pid, True))
    return results


def _abandon(service: LocalService, name: str, settings: Settings) -> None:
    """A start that failed half-way leaves no process behind."""
    record = service.running()
    if record is not None:
        _stop_one(name, service, record)
    ProcessRegistry(settings.state_dir).remove(name)


def _stop_one(name: str, service: LocalService, record: ProcessRecord) -> None:
    if isinstance(service, PostgresServer):
        service.stop()  # a fast shutdown lets the server write its checkpoint
    stop(record)
    if record.is_alive():
        raise ServiceError(f"{name} (pid {record.pid}) did not stop")


def down(settings: Settings, report: Callable[[str], None] = print,
         only: Collection[str] | None = None) -> list[str]:
    """Stop the recorded services (or `only` those named), newest first."""
    stopped: list[str] = []
    with _stack_lock(settings):
        for name, service, managed in reversed(_services(settings, with_s3=False)):
            if only is not None and name not in only:
                continue
            record = service.running() if managed else None
            if record is None:
                continue
            report(f"{name}: stopping pid {record.pid} ...")
            _stop_one(name, service, record)
            service.running()  # drops the record now that the process is gone
            stopped.append(name)
    if not stopped:
        report("nothing was running")
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    results = []
    for name, service, managed in _services(settings, with_s3=True):
        if not managed:
            results.append(ServiceStatus(name, "external", service.address, None,
                                         service.healthy()))
            continue
        record = service.running()
        if record is None:
            state = "off" if name == "s3" else "stopped"
            results.append(ServiceStatus(name, state, service.address))
        else:
            results.append(ServiceStatus(name, "running", service.address, record.pid,
                                         service.healthy()))
    return results
