"""docker-compose.yaml agrees with the repo's config (Docker cannot run here, so this parses and cross-checks)."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_services_ports_and_health_checks():
    services = compose()["services"]
    assert set(services) == {"redis", "postgres", "airflow", "feature-server", "ranking-server"}
    assert "6379:6379" in services["redis"]["ports"] and "healthcheck" in services["redis"]
    assert "healthcheck" in services["postgres"] and "5432:5432" in services["postgres"]["ports"]
    assert "8080:8080" in services["airflow"]["ports"] and "6566:6566" in services["feature-server"]["ports"]
    assert any(v.startswith("redis-data:") for v in services["redis"]["volumes"])
    assert "airflow standalone" in services["airflow"]["command"]
    assert "feast -c feature_repo serve" in services["feature-server"]["command"]
    ranking = services["ranking-server"]
    assert "feedstore serve --online-store redis --host 0.0.0.0 --port 6567" in ranking["command"]
    assert "'.[serve]'" in ranking["command"] and "6567:6567" in ranking["ports"]
    assert "/ready" in " ".join(ranking["healthcheck"]["test"])


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
