"""Background processes that `vigil services` starts, recorded by PID so `down` ends exactly them.

A record holds the PID and the process's start time: a PID the kernel has since reused for
some other program is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    started: float  # psutil create_time, to tell our process from a reused PID
    address: str
    log: str

    def is_alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (abs(proc.create_time() - self.started) < 1.0
                    and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False


class ProcessRegistry:
    """PID records under `<state>/run/<name>.json`."""

    def __init__(self, state_dir: Path) -> None:
        self.run_dir = state_dir / "run"

    def _path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def get(self, name: str) -> ProcessRecord | None:
        path = self._path(name)
        if not path.exists():
            return None
        try:
            return ProcessRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            path.unlink()  # a torn record from a crash mid-write: treat as absent
            return None

    def put(self, record: ProcessRecord) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._path(record.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self._path(record.name))

    def remove(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def live(self, name: str) -> ProcessRecord | None:
        """The record if its process still runs; a stale record is removed."""
        record = self.get(name)
        if record is not None and not record.is_alive():
            self.remove(name)
            return None
        return record


def record_for(name: str, pid: int, address: str, log: Path) -> ProcessRecord:
    return ProcessRecord(name=name, pid=pid, started=psutil.Process(pid).create_time(),
                         address=address, log=str(log))


def spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a detached process (own session: a Ctrl-C at the caller's terminal spares it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True,
        )


def stop(record: ProcessRecord, timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL: the process and any children it left in its group."""
    if not record.is_alive():
        return
    proc = psutil.Process(record.pid)
    family = [proc, *proc.children(recursive=True)]
    for member in family:
        _signal(member, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        _signal(member, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)


def wait_until(ready: Callable[[], bool], *, what: str, timeout: float,
               still_starting: Callable[[], bool] = lambda: True, log: Path | None = None,
               interval: float = 0.25) -> None:
    """Poll `ready` until it holds; fail early with the log's tail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not still_starting():
            raise ServiceError(f"{what} exited during start-up.{_tail(log)}")
        time.sleep(interval)
    raise ServiceError(f"{what} was not ready after {timeout:.0f} s.{_tail(log)}")


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\nLast lines of {log}:\n" + "\n".join("  " + line for line in text)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something listens on host:port.

    Our ports lie in the kernel's ephemeral range, so probing one nothing listens on
    eventually draws that very port as the probe's own source and connects to itself (TCP
    simultaneous open): seen as a listener, and its TIME_WAIT then kept the broker from
    binding. Such a connection is aborted without TIME_WAIT and counts as closed.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if sock.getsockname() != sock.getpeername():
                return True
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
    except OSError:
        return False


def require_free_port(host: str, port: int, variable: str) -> None:
    if port_open(host, port):
        raise ServiceError(
            f"port {host}:{port} is already in use by another program; "
            f"set {variable} to a free port")


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range when it can: a port in
    that range may be drawn meanwhile as the source port of any outgoing connection, and the
    service meant to listen on it then fails to start ("already in use")."""
    low = _ephemeral_low()
    below = range(max(1024, low - 12_000), low)
    for port in random.sample(below, k=min(500, len(below))):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_HANDED_OUT: set[int] = set()  # not handed out twice by one process


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def environ_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
