"""docker-compose.yaml agrees with the repo's config (Docker cannot run here, so this parses and cross-checks)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_services_ports_and_health_checks():
    services = compose()["services"]
    assert set(services) == {"redis", "postgres", "airflow", "feature-server", "ranking-server", "spark-master",
                             "spark-worker"}
    bind = "${FEEDSTORE_BIND:-127.0.0.1}"
    assert f"{bind}:6379:6379" in services["redis"]["ports"] and "healthcheck" in services["redis"]
    assert "healthcheck" in services["postgres"] and f"{bind}:5432:5432" in services["postgres"]["ports"]
    assert f"{bind}:8080:8080" in services["airflow"]["ports"]
    assert f"{bind}:6566:6566" in services["feature-server"]["ports"]
    assert any(v.startswith("redis-data:") for v in services["redis"]["volumes"])
    assert "airflow standalone" in " ".join(services["airflow"]["command"])
    assert "serve" in " ".join(services["feature-server"]["command"])
    ranking = services["ranking-server"]
    assert "feedstore serve --online-store redis --host 0.0.0.0 --port 6567" in " ".join(ranking["command"])
    assert f"{bind}:6567:6567" in ranking["ports"] and "/ready" in " ".join(ranking["healthcheck"]["test"])


def test_every_port_is_bound_to_loopback_by_default():
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${FEEDSTORE_BIND:-127.0.0.1}:"), (name, port)


def dockerfile_stages(dockerfile: str) -> dict[str, str]:
    """Each build stage's instructions, a stage built FROM another one preceded by that one's (what it contains)."""
    stages: dict[str, str] = {}
    for parent, name, body in re.findall(r"(?ms)^FROM (\S+) AS (\S+)\n(.*?)(?=^FROM |\Z)", dockerfile):
        stages[name] = stages.get(parent, "") + body
    return stages


def test_services_are_built_from_the_project_image_not_installed_at_start():
    services = compose()["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in ("airflow", "feature-server", "ranking-server", "spark-master", "spark-worker"):
        target = services[name]["build"]["target"]
        assert f" AS {target}" in dockerfile, name
        assert "pip install" not in " ".join(services[name]["command"]), name
    assert "requirements/demo.lock" in dockerfile and "requirements/test.lock" in dockerfile
    # every image a service runs has the project installed and the config file FEEDSTORE_CONFIG names
    config = Path(services["airflow"]["environment"]["FEEDSTORE_CONFIG"])
    assert "WORKDIR /opt/feedstore\n" in dockerfile and config.parent == Path("/opt/feedstore/config")
    stages = dockerfile_stages(dockerfile)
    for name in ("airflow", "feature-server", "ranking-server", "spark-master", "spark-worker"):
        body = stages[services[name]["build"]["target"]]
        assert "pip install --no-deps /wheels/*.whl" in body and "COPY config config" in body, name


def test_secrets_come_from_the_environment_never_the_file():
    text = (ROOT / "docker-compose.yaml").read_text()
    services = compose()["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "--requirepass" in " ".join(services["redis"]["command"])
    assert "password=${REDIS_PASSWORD:?" in services["airflow"]["environment"]["REDIS_CONNECTION_STRING"]
    literal = re.search(r"(?:PASSWORD|password)(?::\s+|=)(?![\"']?\$)[\"']?\w", text)
    assert literal is None, f"a literal secret in docker-compose.yaml: {literal.group(0)}"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_environment_matches_the_repo():
    services = compose()["services"]
    feast_yaml = (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    needed = set(re.findall(r"\$\{(\w+)\}", feast_yaml))
    assert needed == {"FEEDSTORE_DATA_DIR", "REDIS_CONNECTION_STRING"}
    for name in ("airflow", "feature-server", "ranking-server"):
        env = services[name]["environment"]
        assert needed <= set(env), name
        assert env["REDIS_CONNECTION_STRING"].split(":")[0] == "redis"  # the compose service name
        assert env["FEEDSTORE_CONFIG"].endswith("config/pipeline.yaml")
    airflow = services["airflow"]["environment"]
    assert airflow["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags")
    assert "@postgres:5432/" in airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    pg = services["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@" in airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_spark_cluster_the_airflow_driver_can_use():
    """A Spark master and a worker built on the official apache/spark image of the driver's pyspark version, the
    worker seeing the data dir at the driver's path; Airflow's env points the spark engine at the master and keeps
    the engine choice to .env / the config."""
    from importlib.metadata import PackageNotFoundError, version

    services = compose()["services"]
    bind = "${FEEDSTORE_BIND:-127.0.0.1}"
    master, worker, airflow = services["spark-master"], services["spark-worker"], services["airflow"]
    assert "org.apache.spark.deploy.master.Master" in master["command"] and "7077" in master["command"]
    assert f"{bind}:7077:7077" in master["ports"] and f"{bind}:8081:8080" in master["ports"]
    assert "healthcheck" in master
    assert "org.apache.spark.deploy.worker.Worker" in worker["command"]
    assert "spark://spark-master:7077" in worker["command"]
    assert worker["depends_on"]["spark-master"]["condition"] == "service_healthy"
    data = airflow["environment"]["FEEDSTORE_DATA_DIR"]
    assert worker["environment"]["FEEDSTORE_DATA_DIR"] == data
    assert f"feedstore-data:{data}" in worker["volumes"]
    env = airflow["environment"]
    assert env["FEEDSTORE_SPARK_MASTER"] == "spark://spark-master:7077"
    assert env["FEEDSTORE_ENGINE"] == "${FEEDSTORE_ENGINE:-}"
    assert env["FEEDSTORE_ONLINE_STORE"] == "${FEEDSTORE_ONLINE_STORE:-}"
    assert "spark-master" in airflow["depends_on"]
    # one Spark version on every side: the official image the master and workers are built on, the driver's pyspark
    dockerfile = (ROOT / "Dockerfile").read_text()
    spark_version = re.search(r"^ARG SPARK_VERSION=(\S+)$", dockerfile, re.M).group(1)
    assert "FROM apache/spark:${SPARK_VERSION} AS spark-dist" in dockerfile
    assert '"pyspark==${SPARK_VERSION}"' in dockerfile
    assert "COPY --from=spark-dist /opt/spark /opt/spark" in dockerfile_stages(dockerfile)["spark"]
    try:
        assert version("pyspark") == spark_version  # the tests' pyspark is the cluster's
    except PackageNotFoundError:
        pass


def test_env_example_documents_every_compose_variable():
    """Every ${VAR} compose reads (secrets, bind address, the engine switches) is in .env.example."""
    text = (ROOT / "docker-compose.yaml").read_text()
    names = set(re.findall(r"\$\{(\w+)(?::?[-?][^}]*)?\}", text)) - {"SPARK_WORKER_CORES", "SPARK_WORKER_MEMORY"}
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if "=" in line and not line.startswith("#")}
    assert names <= example, names - example
