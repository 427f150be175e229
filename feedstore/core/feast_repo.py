"""The Feast repository handle: which feature_store*.yaml serves an online store, the variables the yaml files
expand (FEEDSTORE_DATA_DIR, REDIS_CONNECTION_STRING, FEEDSTORE_SPARK_MASTER), a fail-fast Redis probe and the
FeatureStore itself.
Feast settings live only in the yaml files; this module picks the file and sets what it expands."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from feedstore.core.catalog import Catalog
from feedstore.core.config import ENV_SPARK_MASTER, ONLINE_STORES, PipelineConfig
from feedstore.core.errors import ConfigError, FeedstoreError, ServingError
from feedstore.core.logs import redact

#: The Feast repository (definitions and feature_store*.yaml): package data (feedstore/feature_repo ->
#: ../feature_repo in the source tree), found the same way in an editable install and an installed wheel.
REPO_DIR = Path(str(files("feedstore") / "feature_repo"))


YAML_FILES = {"redis": REPO_DIR / "feature_store.yaml", "sqlite": REPO_DIR / "feature_store.sqlite.yaml",
              "redis-postgres": REPO_DIR / "feature_store.postgres.yaml",
              "redis-spark": REPO_DIR / "feature_store.spark.yaml"}

#: Stores whose Feast offline side (retrievals, materialization) runs on Spark; the yaml reads the master from
#: FEEDSTORE_SPARK_MASTER, set from the pipeline config's `spark.master`.
SPARK_STORES = {"redis-spark"}

#: Stores whose registry is a SQL database (FEEDSTORE_REGISTRY_URL), not a file under the data dir.
SQL_REGISTRY = {"redis-postgres"}
ENV_REGISTRY_URL = "FEEDSTORE_REGISTRY_URL"


DEFAULT_REDIS = "localhost:6379"

#: Every Redis operation is bounded: connecting, and each command (a stalled server fails it, exit 5). Added to
#: REDIS_CONNECTION_STRING unless it sets them (Feast passes `key=value` options to redis-py).
REDIS_TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 5}


def with_timeouts(connection_string: str) -> str:
    """The connection string with the default timeouts for those it does not set."""
    present = {p.split("=", 1)[0].strip() for p in connection_string.split(",") if "=" in p}
    return ",".join([connection_string, *(f"{k}={v}" for k, v in REDIS_TIMEOUTS.items() if k not in present)])


@contextmanager
def online_errors(what: str) -> Iterator[None]:
    """Turn a failure of the online store's server during `what` (Redis gone, stalled past its timeout) into a
    one-line ServingError (exit 5), secrets redacted."""
    import redis

    try:
        yield
    except (redis.exceptions.RedisError, ConnectionError, TimeoutError) as e:
        raise ServingError(redact(f"{what}: the online store failed ({type(e).__name__}: {e})")) from None


def feast_environment(cfg: PipelineConfig, online_store: str) -> dict[str, str]:
    """Set (and return) the variables feature_store*.yaml expand; Redis defaults to localhost:6379."""
    if online_store not in YAML_FILES:
        raise FeedstoreError(f"unknown online store {online_store!r}; expected one of {sorted(YAML_FILES)}")
    os.environ["FEEDSTORE_DATA_DIR"] = str(Path(cfg.data_dir).resolve())
    if online_store in SPARK_STORES:
        os.environ[ENV_SPARK_MASTER] = cfg.spark.master
    if online_store in SQL_REGISTRY and not os.environ.get(ENV_REGISTRY_URL):
        raise ConfigError(f"--online-store {online_store} keeps the Feast registry in PostgreSQL: set "
                          f"{ENV_REGISTRY_URL} (e.g. postgresql+psycopg://feedstore@127.0.0.1:5432/feedstore)")
    if online_store.startswith("redis"):
        os.environ["REDIS_CONNECTION_STRING"] = with_timeouts(os.environ.get("REDIS_CONNECTION_STRING")
                                                              or DEFAULT_REDIS)
        check_redis(os.environ["REDIS_CONNECTION_STRING"])
    return {k: os.environ[k] for k in ("FEEDSTORE_DATA_DIR", "REDIS_CONNECTION_STRING", ENV_REGISTRY_URL,
                                       ENV_SPARK_MASTER) if k in os.environ}


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
        raise ServingError(redact(f"cannot reach Redis at {connection_string} ({e}); start one "
                           "(`docker compose up -d redis` or `redis-server`) or set REDIS_CONNECTION_STRING")) from None


def applied_stores(cfg: PipelineConfig) -> list[str]:
    """The online stores `apply` has registered for this data dir, in ONLINE_STORES order (the embedded default
    first): those whose registry is a file there that exists, and a SQL-registry store only when it is the
    configured store and FEEDSTORE_REGISTRY_URL names a database (not probed here; opening it says more)."""
    cat = Catalog(cfg.data_dir)
    return [s for s in ONLINE_STORES
            if ((s == cfg.serving.online_store and bool(os.environ.get(ENV_REGISTRY_URL))) if s in SQL_REGISTRY
                else cat.registry(s).exists())]


def feature_store(cfg: PipelineConfig, online_store: str):
    """A FeatureStore on feature_repo/ with the chosen feature_store*.yaml."""
    feast_environment(cfg, online_store)
    from feast import FeatureStore

    if online_store in SQL_REGISTRY:
        try:
            store = FeatureStore(repo_path=str(REPO_DIR), fs_yaml_file=YAML_FILES[online_store])
            applied = bool(store.list_feature_views())
        except Exception as e:  # SQLAlchemy / psycopg: the database is unreachable or refuses us
            raise ServingError(redact(f"Feast SQL registry at {os.environ[ENV_REGISTRY_URL]}: "
                                      f"{str(e).splitlines()[0]}")) from None
        if not applied:
            raise ServingError(f"the Feast SQL registry has no feature views; run "
                               f"`feedstore apply --online-store {online_store}` first")
        return store
    registry = Catalog(cfg.data_dir).registry(online_store)
    if not registry.exists():
        raise ServingError(f"{registry}: no Feast registry; run `feedstore apply --online-store {online_store}` first")
    return FeatureStore(repo_path=str(REPO_DIR), fs_yaml_file=YAML_FILES[online_store])
