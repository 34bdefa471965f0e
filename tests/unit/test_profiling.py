from __future__ import annotations

import pstats
from pathlib import Path

import pytest

from vigil.profiling import profiled
from vigil.settings import Settings


def _slow_step() -> int:
    return sum(i * i for i in range(20_000))


def _failing_step() -> None:
    _slow_step()
    raise ZeroDivisionError("a step failed")


def _functions(path: Path) -> set[str]:
    return {name for (_file, _line, name) in pstats.Stats(str(path)).stats}  # type: ignore[attr-defined]


def test_a_profiled_block_is_dumped_under_the_run_name(tmp_path: Path) -> None:
    with profiled(tmp_path / "profiles", "detect-run/1 2"):
        _slow_step()
    (dumped,) = (tmp_path / "profiles").iterdir()
    assert dumped.name == "detect-run_1_2.prof"  # a path-safe name whatever the run id
    assert "_slow_step" in _functions(dumped)


def test_a_failing_block_still_leaves_its_profile(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), profiled(tmp_path, "failed"):
        _failing_step()
    assert "_slow_step" in _functions(tmp_path / "failed.prof")


def test_no_directory_profiles_nothing(tmp_path: Path) -> None:
    with profiled(None, "x"):
        _slow_step()
    assert list(tmp_path.iterdir()) == []


def test_profile_dir_setting(tmp_path: Path) -> None:
    assert Settings.from_env({}).profile_dir is None
    assert Settings.from_env({"VIGIL_PROFILE_DIR": str(tmp_path / "p")}).profile_dir == \
        tmp_path / "p"
