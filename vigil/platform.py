"""`vigil run`: the local services, the schema and the Dagster UI in one foreground command.

Dagster runs as `dagster dev` in its own session with SIGINT restored to the default
(a backgrounded child otherwise inherits SIGINT as ignored and never stops, see DESIGN.md);
Ctrl-C or SIGTERM here is forwarded to it, then the services this command started are stopped.
Services that were already running are left as they were.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from vigil import services
from vigil.migrate import migrate
from vigil.services.process import ProcessRegistry, ServiceError, record_for, wait_until
from vigil.settings import PROJECT_ROOT, Settings

DAGSTER_YAML = PROJECT_ROOT / "infra" / "dagster.yaml"


def dagster_home(settings: Settings) -> Path:
    home = settings.state_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML.read_text())
    return home


def dagster_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home(settings))
    env["VIGIL_DAGSTER_STORAGE_URL"] = settings.dagster_storage_url
    env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return env


def ui_answers(port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/server_info"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_platform(settings: Settings, with_s3: bool = False) -> int:
    started = [s.name for s in services.up(settings, with_s3=with_s3) if s.state == "started"]
    for migration in migrate(settings.database_url, reader_password=settings.reader_password):
        print(f"applied {migration.path.name}")
    log = settings.state_dir / "logs" / "dagster.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"dagster: starting (log: {log}) ...")
    with log.open("ab") as out:
        dagster = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(settings.dagster_port)],
            cwd=PROJECT_ROOT, env=dagster_env(settings), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_restore_sigint,
        )
    registry = ProcessRegistry(settings.state_dir)
    registry.put(record_for("dagster", dagster.pid, f"127.0.0.1:{settings.dagster_port}", log))
    stopping = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        wait_until(lambda: ui_answers(settings.dagster_port) or stopping.is_set(),
                   what="the Dagster UI", timeout=180,
                   still_starting=lambda: dagster.poll() is None, log=log)
        if not stopping.is_set():
            print(f"Dagster UI: http://127.0.0.1:{settings.dagster_port}   (Ctrl-C stops)",
                  flush=True)
        while not stopping.is_set() and dagster.poll() is None:
            stopping.wait(0.5)
        code = 0 if stopping.is_set() else (dagster.returncode or 1)
        if code:
            print(f"vigil: dagster exited with code {code}; see {log}", file=sys.stderr)
    except ServiceError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_dagster(dagster)
        registry.remove("dagster")
        if started:
            print(f"stopping the services this command started: {', '.join(started)}")
            services.down(settings, only=started)
    return code


def _stop_dagster(dagster: subprocess.Popen[bytes]) -> None:
    """SIGINT is dagster dev's graceful stop; it ends its webserver, daemon and code servers."""
    if dagster.poll() is not None:
        return
    import psutil

    children = psutil.Process(dagster.pid).children(recursive=True)
    dagster.send_signal(signal.SIGINT)
    try:
        dagster.wait(timeout=30)
    except subprocess.TimeoutExpired:
        dagster.kill()
        dagster.wait()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()
