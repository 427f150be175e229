"""Registering the Feast definitions (apply) and what the registry and the offline tables say about freshness."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.errors import FeedstoreError, ServingError
from feedstore.core.feast_repo import REPO_DIR, YAML_FILES, feast_environment

log = logging.getLogger(__name__)

def apply_definitions(cfg: PipelineConfig, online_store: str | None = None) -> None:
    """Stage `apply`: `feast apply` on feature_repo/ with the chosen yaml (run as Feast's own CLI, exactly as the
    README shows)."""
    online_store = online_store or cfg.serving.online_store
    env = {**os.environ, **feast_environment(cfg, online_store)}
    Catalog(cfg.data_dir).feast.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("feast")), "-c", str(REPO_DIR), "-f", str(YAML_FILES[online_store]),
           "apply"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        last = [line for line in (res.stderr or res.stdout).strip().splitlines() if line.strip()][-1:]
        raise FeedstoreError(f"feast apply failed: {last[0] if last else 'exit code ' + str(res.returncode)}")
    changes = [line for line in res.stdout.splitlines() if line.startswith(("Created", "Updated", "Deleted"))]
    log.info("feast apply (%s) in %.1f s: %s", online_store, time.perf_counter() - t0,
             "; ".join(changes) if changes else "no changes")


def feast_ui(cfg: PipelineConfig, online_store: str, *, host: str = "127.0.0.1", port: int = 8888) -> None:
    """Replace this process with `feast ui` on feature_repo/ with the store's yaml (runs until interrupted)."""
    env = {**os.environ, **feast_environment(cfg, online_store)}
    try:
        import grpc_health  # noqa: F401  (feast ui imports it; it comes with feast[grpcio])
    except ImportError:
        raise FeedstoreError("the Feast UI needs Feast's grpcio extra: pip install 'feedstore[ui]' "
                             "(or 'feast[grpcio]')") from None
    cmd = [str(Path(sys.executable).with_name("feast")), "-c", str(REPO_DIR), "-f", str(YAML_FILES[online_store]),
           "ui", "--host", host, "--port", str(port)]
    log.info("Feast UI for the %s registry on http://%s:%d/ (Ctrl-C stops it)", online_store, host, port)
    for handler in logging.getLogger().handlers:
        handler.flush()
    # become `feast ui` (not a child of it): Ctrl-C and a service manager's SIGTERM reach the server itself
    os.execve(cmd[0], cmd, env)


def latest_snapshot(cfg: PipelineConfig) -> datetime:
    """The newest snapshot stamp in the offline user statistics (the default materialization end)."""
    import duckdb

    glob = Catalog(cfg.data_dir).view_glob("user_daily_stats")
    try:
        ts = duckdb.execute("SELECT max(event_timestamp) FROM read_parquet($g, hive_partitioning = false)",
                            {"g": str(glob)}).fetchone()[0]
    except duckdb.Error:
        ts = None
    if ts is None:
        raise ServingError(f"{glob.parent.parent}: no offline statistics; run `feedstore stats` first")
    return ts.astimezone(timezone.utc)


def latest_materialized(store) -> datetime | None:
    """The end of the newest materialization Feast recorded: the moment the online store reflects. (A backfill
    that materializes an older day does not roll newer online rows back, so the check must use this, not the
    day being processed.)"""
    ends = [end for fv in store.list_feature_views() for _, end in (fv.materialization_intervals or [])]
    return max(ends).astimezone(timezone.utc) if ends else None
