from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vigil.settings import PROJECT_ROOT, Settings, SettingsError


def test_defaults_run_everything_locally() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:19092" and s.kafka_managed
    assert s.postgres_embedded
    assert s.database_url == "postgresql://vigil:vigil@127.0.0.1:15432/vigil"
    assert s.lake_url == (PROJECT_ROOT / ".vigil" / "lake").as_uri()
    assert s.state_dir == PROJECT_ROOT / ".vigil"
    assert s.kafka_partitions == 3


def test_operator_names_of_the_original_system_are_accepted() -> None:
    s = Settings.from_env({
        "KAFKA_SERVER_1": "broker-a:9092,broker-b:9092",
        "POSTGRES_HOST": "db.internal", "POSTGRES_PORT": "6543", "POSTGRES_DB": "monitor",
        "POSTGRES_USER": "svc", "POSTGRES_PASSWORD": "p@ss:w/rd",
        "S3_BUCKET": "acme-events", "PREFIX": "/vigil/raw/", "AWS_REGION": "eu-west-1",
        "ROLE_ARN": "arn:aws:iam::123456789012:role/vigil-writer",
        "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/abc",
    })
    assert s.kafka_bootstrap == "broker-a:9092,broker-b:9092" and not s.kafka_managed
    assert not s.postgres_embedded
    # The password is URL-quoted so ':' '/' '@' cannot break the URL apart.
    assert s.database_url == "postgresql://svc:p%40ss%3Aw%2Frd@db.internal:6543/monitor"
    assert s.lake_url == "s3://acme-events/vigil/raw" and s.lake_is_s3
    assert s.s3_prefix == "vigil/raw"
    assert s.aws_region == "eu-west-1"
    assert s.role_arn == "arn:aws:iam::123456789012:role/vigil-writer"


def test_database_url_wins_and_dagster_gets_the_psycopg2_scheme() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgres://u:p@pg:5433/x", "POSTGRES_PORT": "1"})
    assert s.database_url == "postgresql://u:p@pg:5433/x"
    assert (s.postgres_host, s.postgres_port) == ("pg", 5433)
    assert (s.postgres_user, s.postgres_password, s.postgres_db) == ("u", "p", "x")
    assert s.dagster_storage_url == "postgresql+psycopg2://u:p@pg:5433/x"
    assert not s.postgres_embedded


def test_explicit_lake_url_overrides_the_bucket() -> None:
    s = Settings.from_env({"S3_BUCKET": "other", "VIGIL_LAKE_URL": "s3://lake-bucket/p"})
    assert s.lake_url == "s3://lake-bucket/p" and s.s3_bucket == "lake-bucket"
    local = Settings.from_env({"VIGIL_LAKE_URL": "file:///data/lake/"})
    assert local.lake_url == "file:///data/lake" and not local.lake_is_s3


def test_secrets_stay_out_of_repr() -> None:
    s = Settings.from_env({"POSTGRES_PASSWORD": "hunter2-secret",
                           "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/9/tok"})
    assert "hunter2-secret" in s.database_url
    assert "hunter2-secret" not in repr(s)
    assert "webhooks/9/tok" not in repr(s)


@pytest.mark.parametrize(("variable", "value"), [
    ("POSTGRES_PORT", "abc"),
    ("POSTGRES_PORT", "70000"),
    ("VIGIL_KAFKA_PORT", "-1"),
    ("VIGIL_KAFKA_PARTITIONS", "0"),
    ("KAFKA_SERVER_1", "no-port-here"),
    ("DATABASE_URL", "mysql://u@h/db"),
    ("DATABASE_URL", "postgresql://u@h:notaport/db"),
    ("VIGIL_LAKE_URL", "ftp://host/lake"),
    ("VIGIL_LAKE_URL", "s3://Not_A_Bucket/x"),
    ("S3_BUCKET", "UPPER_case"),
    ("S3_ENDPOINT_URL", "minio:9000"),
    ("AWS_REGION", "moon-base"),
    ("ROLE_ARN", "vigil-writer"),
    ("DISCORD_WEBHOOK_URL", "discord.com/webhook"),
    ("VIGIL_DEPLOYMENT", "has spaces"),
    ("VIGIL_SENSOR_INTERVAL", "0"),
    ("VIGIL_SENSOR_INTERVAL", "0.5"),
])
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}={value!r} is invalid: expected ")


def test_kafka_ports_must_differ() -> None:
    with pytest.raises(SettingsError, match="VIGIL_KAFKA_CONTROLLER_PORT"):
        Settings.from_env({"VIGIL_KAFKA_PORT": "20000", "VIGIL_KAFKA_CONTROLLER_PORT": "20000"})


def test_cli_exits_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vigil.cli", "services", "status"],
        env={"PATH": "/usr/bin:/bin", "POSTGRES_PORT": "abc", "VIGIL_STATE_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "POSTGRES_PORT" in lines[0] and "'abc'" in lines[0] and "TCP port" in lines[0]
