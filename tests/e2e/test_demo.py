"""`vigil demo`, shortened: everything starts, traffic with every scenario lands, every
threshold scenario is detected and alerted to the local receiver, the UIs answered, and it
exits 0 leaving nothing running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil

from tests.conftest import stack_env
from vigil.settings import PROJECT_ROOT


def test_a_short_demo_detects_every_threshold_scenario_and_cleans_up(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-m", "vigil.cli", "demo", "--duration", "45", "--span", "900",
         "--rate", "60"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=600, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "OK: every threshold scenario was detected" in out
    for topic in ("logs", "metrics", "transactions"):
        row = re.search(rf"^{topic}\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)$", out, re.MULTILINE)
        assert row, topic
        produced, landed, quarantined = (int(x.replace(",", "")) for x in row.groups())
        assert produced > 0 and landed + quarantined == produced, row.group(0)
    for scenario in ("error_burst", "failed_login_storm", "user_log_spike", "cpu_sustained",
                     "latency_spike", "cpu_latency", "large_amount", "rapid_fire"):
        assert re.search(rf"^{scenario}\s+\S+\s+1\s+1\s+100%", out, re.MULTILINE), scenario
    assert re.search(r"Dagster UI: \S+\s+answered every check: yes", out)
    assert re.search(r"Dashboard:\s+\S+\s+answered every check: yes", out)
    received = re.search(r"alerts received by the local webhook: (\d+)", out)
    assert received, out[-2000:]
    alerts = int(received.group(1))
    stored = (tmp_path / "state" / "demo" / "alerts.jsonl").read_text().splitlines()
    assert alerts == len(stored) > 0
    assert all(json.loads(line)["payload"]["embeds"] for line in stored)
    # Nothing it started is left running.
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))]
    assert leftovers == []
    assert list((tmp_path / "state" / "demo" / "run").glob("*.json")) == []
