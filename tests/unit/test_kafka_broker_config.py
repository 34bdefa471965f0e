from __future__ import annotations

from pathlib import Path

from vigil.services.kafka_broker import broker_config, jar_dir
from vigil.settings import Settings


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_single_kraft_node_on_loopback_only(tmp_path: Path) -> None:
    s = Settings.from_env({"VIGIL_KAFKA_PORT": "29092", "VIGIL_KAFKA_CONTROLLER_PORT": "29093",
                           "VIGIL_KAFKA_PARTITIONS": "6"})
    props = _props(broker_config(s, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["num.partitions"] == "6"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["auto.create.topics.enable"] == "false"


def test_jar_cache_lives_under_the_cache_dir_keyed_by_the_pom(tmp_path: Path) -> None:
    s = Settings.from_env({"VIGIL_CACHE_DIR": str(tmp_path)})
    assert jar_dir(s).parent == tmp_path
    assert jar_dir(s).name.startswith("kafka-") and len(jar_dir(s).name) == len("kafka-") + 12


def test_cluster_ids_never_start_with_a_dash() -> None:
    from vigil.services.kafka_broker import new_cluster_id

    ids = [new_cluster_id() for _ in range(3000)]  # ~47 would start with '-' by chance
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
