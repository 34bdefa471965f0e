from __future__ import annotations

import psycopg

from vigil.settings import Settings


def test_migrate_job_runs_in_process_against_the_stack(stack: Settings) -> None:
    from orchestration.definitions import defs

    result = defs.resolve_job_def("migrate_database").execute_in_process()
    assert result.success
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT to_regclass('anomaly_events')").fetchone() == (
            "anomaly_events",)
    # A second run finds nothing to do.
    again = defs.resolve_job_def("migrate_database").execute_in_process()
    assert again.output_for_node("apply_migrations") == []
