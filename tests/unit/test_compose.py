"""docker-compose.yml cannot run here (no Docker engine): check its structure statically."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from vigil.settings import PROJECT_ROOT, Settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Python services that build a Settings object from their environment.
VIGIL_SERVICES = [n for n, s in SERVICES.items() if s.get("image") == "vigil:local"]
# What a containerised vigil process must be told: without these it would fall back to
# running its own local services, which a container must never do.
REQUIRED_IN_CONTAINERS = ("KAFKA_SERVER_1", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB",
                          "POSTGRES_USER", "POSTGRES_PASSWORD", "S3_BUCKET", "PREFIX",
                          "S3_ENDPOINT_URL", "AWS_REGION", "DISCORD_WEBHOOK_URL",
                          "VIGIL_STATE_DIR")
DAGSTER_ENV = ("VIGIL_DAGSTER_STORAGE_URL", "DAGSTER_HOME")


def _expand(value: object) -> str:
    """Resolve `${VAR:-default}` the way compose does with VAR unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: _expand(v) for k, v in (service.get("environment") or {}).items()}


def test_every_service_has_an_image_or_build() -> None:
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), name
    for name in VIGIL_SERVICES:
        assert SERVICES[name]["build"]["dockerfile"] == "infra/Dockerfile"
        assert (PROJECT_ROOT / SERVICES[name]["build"]["dockerfile"]).exists()


def test_the_whole_stack_is_there() -> None:
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:4.")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert {"postgres", "minio", "dagster-code", "dagster-webserver", "dagster-daemon",
            "streamlit", "api", "producer"} <= set(SERVICES)
    assert SERVICES["api"]["command"][:2] == ["vigil", "api"]


@pytest.mark.parametrize("name", ["kafka", "postgres", "minio", "dagster-code",
                                  "dagster-webserver", "dagster-daemon", "streamlit", "api"])
def test_healthchecks_exist(name: str) -> None:
    check = SERVICES[name].get("healthcheck")
    assert check and check["test"], name


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"
            else:
                assert condition == "service_completed_successfully", (name, dependency)
                assert SERVICES[dependency].get("restart") == "no", dependency


@pytest.mark.parametrize("name", VIGIL_SERVICES)
def test_vigil_services_get_every_setting_and_it_parses(name: str) -> None:
    env = _env(SERVICES[name])
    missing = [v for v in REQUIRED_IN_CONTAINERS if v not in env]
    assert not missing, f"{name} lacks {missing}"
    settings = Settings.from_env(env)  # raises, naming the variable, if a value is bad
    assert not settings.kafka_managed and not settings.postgres_embedded
    assert settings.kafka_bootstrap.split(":")[0] in SERVICES
    assert settings.postgres_host in SERVICES
    assert settings.lake_is_s3 and settings.s3_bucket == "vigil-lake"
    assert (settings.s3_endpoint_url or "").split("//")[1].split(":")[0] in SERVICES
    if name.startswith("dagster"):
        assert all(v in env for v in DAGSTER_ENV), name
        assert env["VIGIL_DAGSTER_STORAGE_URL"].startswith("postgresql+psycopg2://")


def test_published_ports_do_not_clash() -> None:
    published: dict[str, str] = {}
    for name, service in SERVICES.items():
        for mapping in service.get("ports", []):
            host_side = mapping.rsplit(":", 1)[0]
            assert host_side not in published, f"{name} and {published.get(host_side)} clash"
            published[host_side] = name
            assert host_side.startswith("127.0.0.1:"), f"{name} publishes beyond loopback"
    assert len(published) >= 4


def test_dagster_containers_load_the_code_location_over_grpc() -> None:
    workspace = yaml.safe_load((PROJECT_ROOT / "infra" / "workspace.docker.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    code = SERVICES["dagster-code"]["command"]
    assert server["host"] == "dagster-code" and str(server["port"]) == code[code.index("-p") + 1]
    for name in ("dagster-webserver", "dagster-daemon"):
        assert "infra/workspace.docker.yaml" in SERVICES[name]["command"]


def test_the_daemon_container_runs_our_daemon_with_dagsters_arguments() -> None:
    command = SERVICES["dagster-daemon"]["command"]
    assert command[:4] == ["python", "-m", "orchestration.daemon", "run"]
    answer = subprocess.run([sys.executable, "-m", "orchestration.daemon", "run", "--help"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert "--workspace" in answer.stdout  # Dagster's own `run` command took the arguments


def test_the_image_copies_every_python_package_the_project_ships() -> None:
    import tomllib

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    dockerfile = (PROJECT_ROOT / "infra" / "Dockerfile").read_text()
    missing = [p for p in packages if f"COPY {p} ./{p}" not in dockerfile]
    assert missing == [], f"infra/Dockerfile does not copy {missing}"
