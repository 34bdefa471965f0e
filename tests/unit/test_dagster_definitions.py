from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vigil.settings import PROJECT_ROOT


def test_code_location_validates_from_workspace_yaml(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w",
         str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180, check=False,
        env={"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_definitions_expose_the_maintenance_job() -> None:
    from orchestration.definitions import defs

    job = defs.resolve_job_def("migrate_database")
    assert job.executor_def.name == "in_process"
