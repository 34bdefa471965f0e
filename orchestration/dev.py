"""`dagster dev` whose daemon is `orchestration.daemon` (the sensor loop at
`VIGIL_SENSOR_INTERVAL`): the same webserver, code server and shutdown handling, only the
daemon's module is swapped when `dagster dev` spawns it.

Run as `python -m orchestration.dev -w workspace.yaml -h 127.0.0.1 -p 3000`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

DAGSTER_DAEMON = ["-m", "dagster._daemon"]
VIGIL_DAEMON = ["-m", "orchestration.daemon"]


def with_vigil_daemon(argv: Sequence[str]) -> list[str]:
    """`python -m dagster._daemon run ...` -> `python -m orchestration.daemon run ...`."""
    argv = list(argv)
    if argv[1:3] == DAGSTER_DAEMON:
        return [argv[0], *VIGIL_DAEMON, *argv[3:]]
    return argv


def main(args: Sequence[str]) -> None:
    from dagster._cli import dev
    from dagster._cli import main as dagster_main

    spawn = dev.open_ipc_subprocess

    def spawn_with_vigil_daemon(parts: Sequence[str], **kwargs: Any) -> Any:
        return spawn(with_vigil_daemon(parts), **kwargs)

    dev.open_ipc_subprocess = spawn_with_vigil_daemon
    sys.argv = ["dagster", "dev", *args]
    dagster_main()


if __name__ == "__main__":
    main(sys.argv[1:])
