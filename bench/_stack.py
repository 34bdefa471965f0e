"""A Kafka broker for benchmarks: the configured one if it answers, else a temporary one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vigil import services
from vigil.kafka import broker_answers
from vigil.services.process import free_port
from vigil.settings import PROJECT_ROOT, Settings


@contextmanager
def kafka_for_bench() -> Iterator[Settings]:
    settings = Settings.from_env()
    if broker_answers(settings.kafka_bootstrap):
        yield settings
        return
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as state:
        env = dict(os.environ)
        env.update({"VIGIL_STATE_DIR": state,
                    "VIGIL_CACHE_DIR": str(PROJECT_ROOT / ".vigil" / "cache"),
                    "VIGIL_KAFKA_PORT": str(free_port()),
                    "VIGIL_KAFKA_CONTROLLER_PORT": str(free_port()),
                    "POSTGRES_PORT": str(free_port())})
        settings = Settings.from_env(env)
        print(f"starting a temporary broker in {Path(state).name} ...", flush=True)
        services.up(settings, report=lambda _line: None)
        try:
            yield settings
        finally:
            services.down(settings, report=lambda _line: None)
