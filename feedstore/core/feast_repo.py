"""The Feast repository handle: which feature_store*.yaml serves an online store, the variables the yaml files
expand (FEEDSTORE_DATA_DIR, REDIS_CONNECTION_STRING), a fail-fast Redis probe and the FeatureStore itself.
Feast settings live only in the yaml files; this module picks the file and sets what it expands."""

from __future__ import annotations

import os
from pathlib import Path

from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.errors import FeedstoreError, ServingError

#: The Feast repository (definitions and feature_store*.yaml).
REPO_DIR = Path(__file__).resolve().parents[2] / "feature_repo"


YAML_FILES = {"redis": REPO_DIR / "feature_store.yaml", "sqlite": REPO_DIR / "feature_store.sqlite.yaml"}


DEFAULT_REDIS = "localhost:6379"


def feast_environment(cfg: PipelineConfig, online_store: str) -> dict[str, str]:
    """Set (and return) the variables feature_store*.yaml expand; Redis defaults to localhost:6379."""
    if online_store not in YAML_FILES:
        raise FeedstoreError(f"unknown online store {online_store!r}; expected one of {sorted(YAML_FILES)}")
    os.environ["FEEDSTORE_DATA_DIR"] = str(Path(cfg.data_dir).resolve())
    if online_store == "redis":
        os.environ.setdefault("REDIS_CONNECTION_STRING", DEFAULT_REDIS)
        check_redis(os.environ["REDIS_CONNECTION_STRING"])
    return {k: os.environ[k] for k in ("FEEDSTORE_DATA_DIR", "REDIS_CONNECTION_STRING") if k in os.environ}


def check_redis(connection_string: str, timeout: float = 2.0) -> None:
    """Fail fast with one line if Redis is unreachable (instead of hanging inside Feast)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    parts = connection_string.split(",")
    host, _, port = parts[0].rpartition(":")
    options = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    try:
        client = redis.Redis(host=host or "localhost", port=int(port or 6379), db=int(options.get("db", 0)),
                             password=options.get("password"),
                             ssl=options.get("ssl", "false").lower() == "true", socket_connect_timeout=timeout,
                             socket_timeout=timeout, retry=Retry(NoBackoff(), 0))  # redis-py retries 3x by default
        client.ping()
    except (redis.exceptions.RedisError, OSError, ValueError) as e:
        raise ServingError(f"cannot reach Redis at {redact(connection_string)} ({redact(str(e))}); start one "
                           "(`docker compose up -d redis` or `redis-server`) or set REDIS_CONNECTION_STRING") from None


def redact(connection_string: str) -> str:
    """A Redis connection string fit for logs and messages: `password=...` (and any `user:pass@`) masked."""
    import re

    masked = re.sub(r"(password=)[^,]*", r"\1***", connection_string, flags=re.IGNORECASE)
    return re.sub(r"//[^/@]*@", "//***@", masked)


def feature_store(cfg: PipelineConfig, online_store: str):
    """A FeatureStore on feature_repo/ with the chosen feature_store*.yaml."""
    feast_environment(cfg, online_store)
    from feast import FeatureStore

    registry = Catalog(cfg.data_dir).registry(online_store)
    if not registry.exists():
        raise ServingError(f"{registry}: no Feast registry; run `feedstore apply --online-store {online_store}` first")
    return FeatureStore(repo_path=str(REPO_DIR), fs_yaml_file=YAML_FILES[online_store])
