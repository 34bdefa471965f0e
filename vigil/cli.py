"""The `vigil` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vigil.settings import Settings, SettingsError

if TYPE_CHECKING:
    from vigil.services import ServiceStatus


def _services_up(settings: Settings, args: argparse.Namespace) -> int:
    from vigil import services

    services.up(settings, with_s3=args.s3)
    _print_status(settings)
    if args.s3:
        print(f"\nS3 mode: export S3_ENDPOINT_URL=http://127.0.0.1:{settings.s3_port} "
              f"VIGIL_LAKE_URL=s3://{settings.s3_bucket or 'vigil-lake'}/lake")
    return 0


def _services_down(settings: Settings, args: argparse.Namespace) -> int:
    from vigil import services

    services.down(settings)
    return 0


def _services_status(settings: Settings, args: argparse.Namespace) -> int:
    statuses = _print_status(settings)
    return 0 if all(s.healthy or s.state in {"stopped", "off"} for s in statuses) else 1


def _print_status(settings: Settings) -> list[ServiceStatus]:
    from vigil import services

    statuses = services.status(settings)
    print(f"{'service':<9} {'state':<12} {'health':<8} {'address':<28} process")
    for entry in statuses:
        print(entry.line())
    print(f"lake: {settings.lake_url}")
    return statuses


def _db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.migrate import migrate

    applied = migrate(settings.database_url, report=print)
    if not applied:
        print("database schema is up to date")
    return 0


def _init(settings: Settings, args: argparse.Namespace) -> int:
    """Prepare external services (compose, production): schema, topics, bucket."""
    from vigil.kafka import ensure_topics
    from vigil.migrate import migrate
    from vigil.settings import TOPICS

    applied = migrate(settings.database_url, report=print)
    print(f"database: {len(applied)} migration(s) applied, schema up to date")
    changed = ensure_topics(settings.kafka_bootstrap, TOPICS, settings.kafka_partitions)
    print(f"kafka: topics {', '.join(TOPICS)} ready"
          + (f" (created or grown: {', '.join(changed)})" if changed else ""))
    if settings.lake_is_s3 and settings.s3_bucket:
        from vigil.objectstore import create_bucket, s3_client

        create_bucket(s3_client(settings), settings.s3_bucket, settings.aws_region)
        print(f"s3: bucket {settings.s3_bucket} ready")
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.platform import run_platform

    return run_platform(settings, with_s3=args.s3)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil", description="Real-time compliance and anomaly monitoring over Kafka.")
    commands = parser.add_subparsers(dest="command", required=True)

    svc = commands.add_parser("services", help="the local Kafka, PostgreSQL and S3 servers")
    svc_cmds = svc.add_subparsers(dest="action", required=True)
    svc_up = svc_cmds.add_parser("up", help="start what is not running; waits until ready")
    svc_up.add_argument("--s3", action="store_true", help="also start a loopback S3 server")
    svc_up.set_defaults(handler=_services_up)
    svc_cmds.add_parser("down", help="stop what `up` started").set_defaults(
        handler=_services_down)
    svc_cmds.add_parser("status", help="each service, its address and health").set_defaults(
        handler=_services_status)

    db = commands.add_parser("db", help="the PostgreSQL schema")
    db_cmds = db.add_subparsers(dest="action", required=True)
    db_cmds.add_parser("migrate", help="apply pending sql/ migrations").set_defaults(
        handler=_db_migrate)

    commands.add_parser(
        "init", help="apply migrations, create topics and the bucket on configured services"
    ).set_defaults(handler=_init)

    run = commands.add_parser(
        "run", help="start the services and the Dagster UI; Ctrl-C stops what it started")
    run.add_argument("--s3", action="store_true", help="also start a loopback S3 server")
    run.set_defaults(handler=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from vigil.migrate import MigrationError
        from vigil.services.process import ServiceError

        if isinstance(exc, ServiceError | MigrationError):
            print(f"vigil: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
