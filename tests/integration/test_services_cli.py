"""`vigil services up | status | down` as an operator runs them, on an isolated state folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from tests.conftest import stack_env


def _vigil(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _recorded(state: Path) -> dict[str, dict[str, float]]:
    return {p.stem: json.loads(p.read_text()) for p in (state / "run").glob("*.json")}


def _ours(state: Path) -> list[psutil.Process]:
    """Running processes whose command line or working files point into our state folder."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _alive(pid: int, started: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - started) < 1
    except psutil.NoSuchProcess:
        return False


def test_up_twice_status_then_down_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = stack_env(state)

    first = _vigil(env, "services", "up", "--s3")
    assert first.returncode == 0, first.stdout + first.stderr
    records = _recorded(state)
    assert set(records) == {"postgres", "kafka", "s3"}
    assert all(_alive(int(r["pid"]), r["started"]) for r in records.values())

    second = _vigil(env, "services", "up")
    assert second.returncode == 0, second.stderr
    for name in ("postgres", "kafka", "s3"):
        assert f"{name}: already running (pid {int(records[name]['pid'])})" in second.stdout
    assert "starting" not in second.stdout
    assert _recorded(state) == records, "a second up must start nothing new"

    status = _vigil(env, "services", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:4]}
    for name in ("postgres", "kafka", "s3"):
        assert rows[name][1:3] == ["running", "healthy"], status.stdout
    assert f"127.0.0.1:{env['VIGIL_KAFKA_PORT']}" in status.stdout
    assert f"127.0.0.1:{env['POSTGRES_PORT']}" in status.stdout

    down = _vigil(env, "services", "down")
    assert down.returncode == 0, down.stderr
    for name, record in records.items():
        assert not _alive(int(record["pid"]), record["started"]), f"{name} survived down"
    assert _recorded(state) == {}
    assert _ours(state) == []

    after = _vigil(env, "services", "status")
    assert after.returncode == 0
    assert "stopped" in after.stdout and "healthy" not in after.stdout.replace("health ", "")


def test_restart_keeps_postgres_data_and_downloads_no_jars(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = stack_env(state)
    try:
        assert _vigil(env, "services", "up").returncode == 0
        marker = "INSERT INTO anomaly_events (id, timestamp, alert_type, alert_level, " \
                 "alert_title) VALUES ('kept', now(), 'probe', 'info', 'survives restart')"
        assert _vigil(env, "db", "migrate").returncode == 0
        import psycopg

        from vigil.settings import Settings

        url = Settings.from_env(env).database_url
        with psycopg.connect(url) as conn:
            conn.execute(marker)
        assert _vigil(env, "services", "down").returncode == 0

        again = _vigil(env, "services", "up")
        assert again.returncode == 0, again.stderr
        assert "broker jars cached, nothing downloaded" in again.stdout
        assert "initialised a new cluster" not in again.stdout
        assert "formatted KRaft storage" not in again.stdout
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT alert_title FROM anomaly_events WHERE id = 'kept'"
                                ).fetchone() == ("survives restart",)
    finally:
        _vigil(env, "services", "down")
    assert _ours(state) == []


def test_a_busy_port_is_reported_with_the_variable_to_change(tmp_path: Path) -> None:
    import socket

    env = stack_env(tmp_path / "state")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env["VIGIL_KAFKA_PORT"])))
        busy.listen()
        result = _vigil(env, "services", "up")
    _vigil(env, "services", "down")
    assert result.returncode == 1
    assert "already in use" in result.stderr and "VIGIL_KAFKA_PORT" in result.stderr
    assert "Traceback" not in result.stderr
