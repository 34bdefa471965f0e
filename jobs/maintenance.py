"""Operator jobs for the platform's own upkeep, launched from the Dagster UI."""

import dagster as dg

from vigil.migrate import migrate
from vigil.settings import Settings


@dg.op(description="Apply pending sql/ migrations to the vigil database (a no-op when current).")
def apply_migrations(context: dg.OpExecutionContext) -> list[str]:
    settings = Settings.from_env()
    applied = [m.path.name for m in migrate(settings.database_url, report=context.log.info,
                                             reader_password=settings.reader_password)]
    context.add_output_metadata({"applied": applied, "count": len(applied)})
    return applied


@dg.job(executor_def=dg.in_process_executor,
        description="Bring the database schema up to date.")
def migrate_database() -> None:
    apply_migrations()


defs = dg.Definitions(jobs=[migrate_database])
