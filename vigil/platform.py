"""`vigil run`: the local services, the schema, the Dagster UI, the dashboard and the REST API
in one foreground command.

Dagster runs as `dagster dev` (through `orchestration.dev`: its daemon ticks the sensor every
`VIGIL_SENSOR_INTERVAL` seconds, not Dagster's fixed 5) in its own session with SIGINT
restored to the default (a backgrounded child otherwise inherits SIGINT as ignored and never
stops, see DESIGN.md);
Ctrl-C or SIGTERM here is forwarded to it, then the services this command started are stopped.
Services that were already running are left as they were.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from vigil import services
from vigil.migrate import migrate
from vigil.services.process import ProcessRegistry, ServiceError, record_for, wait_until
from vigil.settings import PROJECT_ROOT, Settings

DAGSTER_YAML = PROJECT_ROOT / "infra" / "dagster.yaml"
LOCAL_RUNS_YAML = PROJECT_ROOT / "infra" / "dagster.local.yaml"  # the warm run launcher


def dagster_home(settings: Settings) -> Path:
    home = settings.state_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    local = LOCAL_RUNS_YAML.read_text().replace("{project_root}", str(PROJECT_ROOT))
    (home / "dagster.yaml").write_text(DAGSTER_YAML.read_text() + "\n" + local)
    return home


def dagster_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home(settings))
    env["VIGIL_DAGSTER_STORAGE_URL"] = settings.dagster_storage_url
    env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return env


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False  # not up yet, or something else answers on the port


def ui_answers(port: int) -> bool:
    return answers(f"http://127.0.0.1:{port}/server_info")


def _restore_sigint() -> None:
    """In the child, before exec: SIGINT back to its default, and on Linux a SIGINT when the
    parent dies however it dies (SIGKILL included), so no part outlives `vigil run`."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGINT)


@dataclass(frozen=True)
class Part:
    """One long-running process of the platform, the URL that shows it is up, what to print."""

    name: str
    argv: list[str]
    ready_url: str
    banner: str


def parts(settings: Settings) -> list[Part]:
    streamlit = [sys.executable, "-m", "streamlit", "run",
                 str(PROJECT_ROOT / "dashboards" / "app.py"), "--server.headless", "true",
                 "--server.address", "127.0.0.1", "--server.port", str(settings.dashboard_port),
                 "--browser.gatherUsageStats", "false"]
    return [
        Part("dagster", [sys.executable, "-m", "orchestration.dev", "-w",
                         str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p",
                         str(settings.dagster_port)],
             f"http://127.0.0.1:{settings.dagster_port}/server_info",
             f"Dagster UI: http://127.0.0.1:{settings.dagster_port}"),
        Part("dashboard", streamlit, f"http://127.0.0.1:{settings.dashboard_port}/_stcore/health",
             f"Dashboard:  http://127.0.0.1:{settings.dashboard_port}"),
        Part("api", [sys.executable, "-m", "vigil.cli", "api"],
             f"http://127.0.0.1:{settings.api_port}/health",
             f"REST API:   http://127.0.0.1:{settings.api_port}/docs"),
    ]


class LocalPlatform:
    """The local services, the schema, Dagster, the dashboard and the API as one family.
    `start()` brings up what is not running and waits until every part answers; `stop()`
    ends exactly what `start()` started. `stopping` cuts the waits short (Ctrl-C)."""

    def __init__(self, settings: Settings, with_s3: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.with_s3 = with_s3
        self.env = env or {}
        self.stopping = threading.Event()
        self.registry = ProcessRegistry(settings.state_dir)
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.started_services: list[str] = []

    def start(self) -> None:
        settings = self.settings
        self.started_services = [s.name for s in services.up(settings, with_s3=self.with_s3)
                                 if s.state == "started"]
        for migration in migrate(settings.database_url,
                                 reader_password=settings.reader_password):
            print(f"applied {migration.path.name}")
        env = {**dagster_env(settings), **self.env}
        for part in parts(settings):
            log = self.logs[part.name] = settings.state_dir / "logs" / f"{part.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"{part.name}: starting (log: {log}) ...", flush=True)
            with log.open("ab") as out:
                self.running[part.name] = subprocess.Popen(
                    part.argv, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_restore_sigint)
            self.registry.put(record_for(part.name, self.running[part.name].pid,
                                         part.ready_url.split("/")[2], log))
        for part in parts(settings):
            _wait_ready(part, self.running[part.name], self.logs[part.name], self.stopping)

    def banners(self) -> list[str]:
        return [part.banner for part in parts(self.settings)]

    def exited(self) -> str | None:
        """The first part that is no longer running, if any."""
        return next((n for n, p in self.running.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for name, process in reversed(list(self.running.items())):
            _stop(process)
            self.registry.remove(name)
        self.running.clear()
        if self.started_services:
            print("stopping the services this command started: "
                  f"{', '.join(self.started_services)}", flush=True)
            services.down(self.settings, only=self.started_services)
            self.started_services = []


@contextmanager
def stop_requests(event: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set `event` instead of raising, for the duration."""

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        event.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_platform(settings: Settings, with_s3: bool = False) -> int:
    platform = LocalPlatform(settings, with_s3)
    code = 0
    with stop_requests(platform.stopping):
        try:
            platform.start()
            if not platform.stopping.is_set():
                for banner in platform.banners():
                    print(banner, flush=True)
                print("(Ctrl-C stops everything this command started)", flush=True)
            while not platform.stopping.is_set() and platform.exited() is None:
                platform.stopping.wait(0.5)
            name = platform.exited()
            if not platform.stopping.is_set() and name is not None:
                code = platform.running[name].returncode or 1
                print(f"vigil: {name} exited with code {code}; see {platform.logs[name]}",
                      file=sys.stderr)
        except ServiceError as exc:
            print(f"vigil: {exc}", file=sys.stderr)
            code = 1
        finally:
            platform.stop()
    return code


def _wait_ready(part: Part, process: subprocess.Popen[bytes], log: Path,
                stopping: threading.Event) -> None:
    wait_until(lambda: answers(part.ready_url) or stopping.is_set(), what=part.name,
               timeout=180, still_starting=lambda: process.poll() is None, log=log)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT: dagster dev's graceful stop (it ends its webserver, daemon and code servers);
    Streamlit and uvicorn stop on it too. Then whatever is left of the family is killed."""
    if process.poll() is not None:
        return
    import psutil

    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()
