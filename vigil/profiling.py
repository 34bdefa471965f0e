"""Where a run's time goes, when an operator asks: a cProfile of one step, dumped to a
file per run (`VIGIL_PROFILE_DIR`). Off by default: profiling slows Python code ~1.5x."""

from __future__ import annotations

import cProfile
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def profiled(directory: Path | None, name: str) -> Iterator[None]:
    """Profile the block into `directory/<name>.prof` (read with `python -m pstats` or
    snakeviz); no-op when `directory` is None. The profile is written even if the block
    raises: a failing slow run is the one worth reading."""
    if directory is None:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        directory.mkdir(parents=True, exist_ok=True)
        profile.dump_stats(directory / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.prof")
