"""One typed settings object, read once from the environment.

Operators of the original system already set KAFKA_SERVER_1, POSTGRES_*, S3_BUCKET, PREFIX,
AWS_REGION, ROLE_ARN and DISCORD_WEBHOOK_URL; those names are accepted as they are. Every
value is checked here, at start-up, so a typo fails with the variable's name instead of a
stack trace deep inside a run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parents[1]

TOPICS: tuple[str, ...] = ("logs", "metrics", "transactions")
READER_ROLE = "vigil_reader"  # created by sql/0005; SELECT on what the dashboard reads

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class SettingsError(ValueError):
    """A setting has a value vigil cannot use; the message names the variable."""

    def __init__(self, variable: str, expected: str, got: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}={got!r} is invalid: expected {expected}")


@dataclass(frozen=True)
class Settings:
    """Where every service lives and how to reach it."""

    state_dir: Path
    cache_dir: Path
    deployment: str
    kafka_bootstrap: str
    kafka_port: int
    kafka_controller_port: int
    kafka_partitions: int
    kafka_heap_mb: int
    database_url: str = field(repr=False)
    postgres_embedded: bool
    postgres_host: str
    postgres_port: int
    postgres_db: str
    postgres_user: str
    postgres_password: str = field(repr=False)
    lake_url: str = ""
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_port: int = 19000
    aws_region: str = "us-east-1"
    role_arn: str | None = None
    discord_webhook_url: str | None = field(default=None, repr=False)
    dagster_port: int = 3000
    dashboard_port: int = 8501
    api_port: int = 8000
    reader_password: str = field(default="vigil-reader", repr=False)
    ingest_max_records: int = 500_000
    ingest_start: str = "earliest"
    ingest_max_in_flight: int = 2
    sensor_interval: int = 2  # seconds between sensor ticks (local daemon; Dagster's own: 5)
    profile_dir: Path | None = None  # each ingest run's detection profiled into it

    @property
    def reader_url(self) -> str:
        """The dashboard's and API's connection: the SELECT-only role `vigil_reader`."""
        parts = urlsplit(self.database_url)
        netloc = (f"{READER_ROLE}:{quote(self.reader_password, safe='')}@"
                  f"{parts.hostname}:{parts.port or 5432}")
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def kafka_managed(self) -> bool:
        """True when `vigil services` runs the broker (no external KAFKA_SERVER_1)."""
        return self.kafka_bootstrap == f"127.0.0.1:{self.kafka_port}"

    @property
    def lake_is_s3(self) -> bool:
        return self.lake_url.startswith("s3://")

    @property
    def dagster_storage_url(self) -> str:
        # Dagster's storage breaks on SQLAlchemy 2.1's default psycopg 3 dialect (DESIGN.md).
        return "postgresql+psycopg2://" + self.database_url.split("://", 1)[1]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return _read(_Env(os.environ if env is None else env))


class _Env:
    """Typed getters over an environment mapping; empty strings count as unset."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self._env.get(name, "").strip()
        return value or default

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, 1, 65535, "a TCP port number between 1 and 65535")

    def integer(self, name: str, default: int, low: int, high: int, expected: str) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(name, expected, raw) from None
        if not low <= value <= high:
            raise SettingsError(name, expected, raw)
        return value

    def url(self, name: str, schemes: tuple[str, ...], expected: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise SettingsError(name, expected, raw)
        return raw


def _read(env: _Env) -> Settings:
    state_dir = Path(env.text("VIGIL_STATE_DIR") or PROJECT_ROOT / ".vigil").resolve()
    cache_dir = Path(env.text("VIGIL_CACHE_DIR") or state_dir / "cache").resolve()

    deployment = env.text("VIGIL_DEPLOYMENT", "vigil") or "vigil"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", deployment):
        raise SettingsError("VIGIL_DEPLOYMENT", "1-64 letters, digits, '.', '_' or '-'", deployment)

    kafka_port = env.port("VIGIL_KAFKA_PORT", 19092)
    kafka_controller_port = env.port("VIGIL_KAFKA_CONTROLLER_PORT", 19093)
    if kafka_controller_port == kafka_port:
        raise SettingsError(
            "VIGIL_KAFKA_CONTROLLER_PORT", "a port different from VIGIL_KAFKA_PORT",
            str(kafka_controller_port),
        )
    kafka_bootstrap = env.text("KAFKA_SERVER_1") or f"127.0.0.1:{kafka_port}"
    if not all(_HOST_PORT.match(server.strip()) for server in kafka_bootstrap.split(",")):
        raise SettingsError(
            "KAFKA_SERVER_1", "comma-separated host:port bootstrap servers", kafka_bootstrap
        )

    pg = _read_postgres(env)
    lake_url, bucket, prefix = _read_lake(env, state_dir)

    role_arn = env.text("ROLE_ARN")
    if role_arn is not None and not _ROLE_ARN.match(role_arn):
        raise SettingsError("ROLE_ARN", "an IAM role ARN like arn:aws:iam::123456789012:role/name",
                            role_arn)
    region = env.text("AWS_REGION", "us-east-1") or "us-east-1"
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        raise SettingsError("AWS_REGION", "an AWS region name such as eu-west-1", region)

    return Settings(
        state_dir=state_dir,
        cache_dir=cache_dir,
        deployment=deployment,
        kafka_bootstrap=kafka_bootstrap,
        kafka_port=kafka_port,
        kafka_controller_port=kafka_controller_port,
        kafka_partitions=env.integer("VIGIL_KAFKA_PARTITIONS", 3, 1, 1000,
                                 "a partition count between 1 and 1000"),
        kafka_heap_mb=env.integer("VIGIL_KAFKA_HEAP_MB", 512, 128, 16384,
                              "the broker heap in MiB, between 128 and 16384"),
        database_url=pg.url,
        postgres_embedded=pg.embedded,
        postgres_host=pg.host,
        postgres_port=pg.port,
        postgres_db=pg.db,
        postgres_user=pg.user,
        postgres_password=pg.password,
        lake_url=lake_url,
        s3_bucket=bucket,
        s3_prefix=prefix,
        s3_endpoint_url=env.url("S3_ENDPOINT_URL", ("http", "https"),
                                "an http(s):// URL of an S3-compatible endpoint"),
        s3_port=env.port("VIGIL_S3_PORT", 19000),
        aws_region=region,
        role_arn=role_arn,
        discord_webhook_url=env.url("DISCORD_WEBHOOK_URL", ("http", "https"),
                                    "an http(s):// Discord webhook URL"),
        dagster_port=env.port("VIGIL_DAGSTER_PORT", 3000),
        dashboard_port=env.port("VIGIL_DASHBOARD_PORT", 8501),
        api_port=env.port("VIGIL_API_PORT", 8000),
        reader_password=env.text("VIGIL_READER_PASSWORD", "vigil-reader") or "vigil-reader",
        ingest_max_records=env.integer("VIGIL_INGEST_MAX_RECORDS", 500_000, 1, 100_000_000,
                                       "records per ingest run, 1-100000000"),
        ingest_start=_choice(env, "VIGIL_INGEST_START", ("earliest", "latest"), "earliest"),
        ingest_max_in_flight=env.integer("VIGIL_INGEST_MAX_IN_FLIGHT", 2, 1, 64,
                                         "ingest runs queued or running at once, 1-64"),
        sensor_interval=env.integer("VIGIL_SENSOR_INTERVAL", 2, 1, 60,
                                    "seconds between sensor ticks, 1-60"),
        profile_dir=_directory(env.text("VIGIL_PROFILE_DIR")),
    )


def _directory(raw: str | None) -> Path | None:
    return None if raw is None else Path(raw).expanduser().resolve()


def _choice(env: _Env, name: str, options: tuple[str, ...], default: str) -> str:
    value = (env.text(name, default) or default).lower()
    if value not in options:
        raise SettingsError(name, " or ".join(options), value)
    return value


class _Postgres(NamedTuple):
    url: str
    embedded: bool
    host: str
    port: int
    db: str
    user: str
    password: str


def _read_postgres(env: _Env) -> _Postgres:
    host = env.text("POSTGRES_HOST")
    port = env.port("POSTGRES_PORT", 5432 if host else 15432)
    db = env.text("POSTGRES_DB", "vigil") or "vigil"
    user = env.text("POSTGRES_USER", "vigil") or "vigil"
    password = env.text("POSTGRES_PASSWORD", "vigil") or "vigil"
    database_url = env.url("DATABASE_URL", ("postgresql", "postgres"),
                           "a postgresql://user:password@host:port/db URL")
    if database_url is not None:
        parts = urlsplit(database_url)
        try:
            url_port = parts.port or 5432
        except ValueError:
            raise SettingsError("DATABASE_URL", "a postgresql:// URL with a numeric port",
                                database_url) from None
        host, port = parts.hostname or "127.0.0.1", url_port
        db = unquote(parts.path.lstrip("/")) or db
        user = unquote(parts.username or "") or user
        password = unquote(parts.password or "") or password
        database_url = "postgresql://" + database_url.split("://", 1)[1]
    else:
        database_url = (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
                        f"@{host or '127.0.0.1'}:{port}/{quote(db, safe='')}")
    embedded = env.text("DATABASE_URL") is None and env.text("POSTGRES_HOST") is None
    return _Postgres(database_url, embedded, host or "127.0.0.1", port, db, user, password)


def _read_lake(env: _Env, state_dir: Path) -> tuple[str, str | None, str]:
    bucket = env.text("S3_BUCKET")
    if bucket is not None and not _BUCKET.match(bucket):
        raise SettingsError("S3_BUCKET", "an S3 bucket name (3-63 lowercase letters, digits, "
                            "'.' or '-')", bucket)
    prefix = (env.text("PREFIX", "") or "").strip("/")
    lake_url = env.text("VIGIL_LAKE_URL")
    if lake_url is None:
        if bucket is not None:
            lake_url = f"s3://{bucket}/{prefix}".rstrip("/")
        else:
            lake_url = (state_dir / "lake").as_uri()
    parts = urlsplit(lake_url)
    if parts.scheme == "file" and parts.path:
        return lake_url.rstrip("/"), bucket, prefix
    if parts.scheme == "s3" and parts.netloc and _BUCKET.match(parts.netloc):
        return lake_url.rstrip("/"), parts.netloc, parts.path.strip("/")
    raise SettingsError("VIGIL_LAKE_URL", "file:///absolute/path or s3://bucket/prefix", lake_url)
