"""`vigil run`: services + schema + Dagster UI in one command; SIGTERM/Ctrl-C stops it all."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg

from tests.conftest import stack_env
from vigil.generate import StreamSpec, SyntheticStream
from vigil.lake import Lake, floor_hour
from vigil.produce import EventSender, produce_stream
from vigil.settings import PROJECT_ROOT, TOPICS, Settings


def _graphql(port: int, query: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def _produce_across_an_hour_boundary(settings: Settings
                                     ) -> tuple[dict[str, int], list[datetime]]:
    """A minute of traffic, half in each of two hours, each half with an error burst and
    a large amount: anomalies in both hours."""
    boundary = floor_hour(datetime.now(UTC)) - timedelta(hours=1)
    spec = StreamSpec(seed=3, start=boundary - timedelta(seconds=30),
                      rates=dict.fromkeys(TOPICS, 20.0),
                      scenarios=("error_burst", "large_amount"), horizon=30)
    report = produce_stream(EventSender(settings.kafka_bootstrap), SyntheticStream(spec),
                            list(TOPICS), 60, None, lambda _labels: None)
    return dict(report.delivered), [boundary - timedelta(hours=1), boundary]


def _anomalies(settings: Settings) -> list[tuple[str, str, str, datetime]]:
    with psycopg.connect(settings.database_url) as conn:
        return [(r[0], r[1], r[2], r[3]) for r in conn.execute(
            "SELECT id, rule, alert_title, detected_hour FROM anomaly_events "
            "ORDER BY id").fetchall()]


def _backfill_and_wait(env: dict[str, str], settings: Settings, port: int,
                       hours: list[datetime]) -> list[tuple[str, str, str, datetime]]:
    """`dagster job backfill --from --to` against the running instance; the daemon runs
    one run per hour; returns the table once every run of the backfill succeeded."""
    dagster_env = {**env, "DAGSTER_HOME": str(settings.state_dir / "dagster"),
                   "VIGIL_DAGSTER_STORAGE_URL": settings.dagster_storage_url}
    before = _backfill_ids(port)
    launched = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "backfill", "-w",
         str(PROJECT_ROOT / "workspace.yaml"), "-j", "detect_hours",
         "--from", hours[0].strftime("%Y-%m-%d-%H:%M"),
         "--to", hours[-1].strftime("%Y-%m-%d-%H:%M"), "--noprompt"],
        env=dagster_env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
        check=False)
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
    [backfill] = set(_backfill_ids(port)) - set(before)
    deadline = time.monotonic() + 180
    statuses: list[str] = []
    while time.monotonic() < deadline:
        answer = _graphql(port, '{ runsOrError(filter: {tags: [{key: "dagster/backfill", '
                                f'value: "{backfill}"}}]}}) {{ ... on Runs {{ results '
                                '{ status tags { key value } } } } }')
        runs = answer["data"]["runsOrError"]["results"]  # type: ignore[index]
        statuses = [run["status"] for run in runs]
        assert "FAILURE" not in statuses, runs
        if len(runs) == len(hours) and set(statuses) == {"SUCCESS"}:
            partitions = sorted(t["value"] for run in runs for t in run["tags"]
                                if t["key"] == "dagster/partition")
            assert partitions == [h.strftime("%Y-%m-%d-%H:%M") for h in hours]
            return _anomalies(settings)
        time.sleep(1)
    raise AssertionError(f"the backfill's runs did not all succeed in time: {statuses}")


def _backfill_ids(port: int) -> list[str]:
    answer = _graphql(port, "{ partitionBackfillsOrError(limit: 20) { ... on "
                            "PartitionBackfills { results { id } } } }")
    results = answer["data"]["partitionBackfillsOrError"]["results"]  # type: ignore[index]
    return [b["id"] for b in results]


def test_run_serves_the_dagster_ui_lands_events_and_ctrl_c_stops_everything(
        tmp_path: Path) -> None:
    env = stack_env(tmp_path / "state")
    port = int(env["VIGIL_DAGSTER_PORT"])
    proc = subprocess.Popen([sys.executable, "-m", "vigil.cli", "run"], env=env,
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("(Ctrl-C stops"):
                break
        banners = [line.strip() for line in lines
                   if line.startswith(("Dagster UI:", "Dashboard:", "REST API:"))]
        dashboard, api = int(env["VIGIL_DASHBOARD_PORT"]), int(env["VIGIL_API_PORT"])
        assert banners == [f"Dagster UI: http://127.0.0.1:{port}",
                           f"Dashboard:  http://127.0.0.1:{dashboard}",
                           f"REST API:   http://127.0.0.1:{api}/docs"], lines
        # The dashboard and the API answer, the API as the read-only role.
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/_stcore/health",
                                    timeout=10) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=10) as answer:
            assert json.loads(answer.read()) == {"status": "ok", "database": "ok"}
        assert any("applied 0001_anomaly_events.sql" in line for line in lines)

        family = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        records = {p.stem: json.loads(p.read_text())
                   for p in (tmp_path / "state" / "run").glob("*.json")}
        assert {"postgres", "kafka", "dagster", "dashboard", "api"} <= set(records)

        answer = _graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries "
                                "{ name locationOrLoadError { __typename } } } } }")
        entries = answer["data"]["workspaceOrError"]["locationEntries"]  # type: ignore[index]
        assert entries == [{"name": "vigil",
                            "locationOrLoadError": {"__typename": "RepositoryLocation"}}]

        # The kafka sensor is on by default: events produced now land in the lake through
        # the daemon's ticks and queued ingest runs, with no operator action.
        settings = Settings.from_env(env)
        produced, hours = _produce_across_an_hour_boundary(settings)
        lake = Lake(settings.lake_url)
        deadline = time.monotonic() + 120
        landed: dict[str, int] = {}
        while time.monotonic() < deadline:
            landed = {t: lake.read_all("raw", t).num_rows for t in TOPICS}
            if landed == produced:
                break
            time.sleep(1)
        assert landed == produced, (landed, produced)
        # The local stack's own daemon (sensor loop every VIGIL_SENSOR_INTERVAL) ran it, and
        # the runs were forked from the warm run worker.
        now_running = psutil.Process(proc.pid).children(recursive=True)
        family += [p.pid for p in now_running]  # the run worker too: nothing may outlive us
        commands = []
        for part in now_running:
            with contextlib.suppress(psutil.NoSuchProcess):  # a run that just ended
                commands.append(" ".join(part.cmdline()))
        assert any("-m orchestration.daemon run" in c for c in commands), commands
        assert not any("-m dagster._daemon" in c for c in commands), commands
        assert any("-m orchestration.run_worker" in c for c in commands), commands

        # A backfill over the two hours, launched through Dagster, recomputes them from the
        # lake alone and reproduces every row after the table is emptied.
        first = _backfill_and_wait(env, settings, port, hours)
        for hour in hours:
            assert {r[1] for r in first if r[3] == hour} >= {"error_spike", "large_amount"}
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM anomaly_events")
        assert _anomalies(settings) == []
        assert _backfill_and_wait(env, settings, port, hours) == first

        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        rest, _ = proc.communicate(timeout=120)
        lines.append(rest)
        assert proc.returncode == 0, "".join(lines)
        assert "stopping the services this command started: postgres, kafka" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run([sys.executable, "-m", "vigil.cli", "services", "down"], env=env,
                           check=False, capture_output=True)

    pids = family + [int(r["pid"]) for r in records.values()]
    time.sleep(0.5)
    survivors = [pid for pid in pids if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], [psutil.Process(p).cmdline() for p in survivors]
    assert list((tmp_path / "state" / "run").glob("*.json")) == []


def test_a_killed_vigil_run_takes_dagster_the_dashboard_and_the_api_with_it(
        tmp_path: Path) -> None:
    env = stack_env(tmp_path / "state")
    proc = subprocess.Popen([sys.executable, "-m", "vigil.cli", "run"], env=env,
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith("(Ctrl-C stops"):
                break
        records = {p.stem: json.loads(p.read_text())
                   for p in (tmp_path / "state" / "run").glob("*.json")}
        parts = [int(records[name]["pid"]) for name in ("dagster", "dashboard", "api")]
        family = parts + [c.pid for pid in parts
                          for c in psutil.Process(pid).children(recursive=True)]
        proc.kill()  # SIGKILL: no handler runs; the parts must notice on their own
        proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs([psutil.Process(p) for p in family
                                         if psutil.pid_exists(p)], timeout=60)
        assert [p.pid for p in alive
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == [], \
            [p.cmdline() for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([sys.executable, "-m", "vigil.cli", "services", "down"], env=env,
                       check=False, capture_output=True)
