"""Pipeline stages as plain functions of the config: the CLI and the Airflow DAG both call these."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import date, datetime

from feedstore.config import PipelineConfig

log = logging.getLogger(__name__)

#: Below this many events a process pool costs more than it saves (output is identical either way).
_PARALLEL_THRESHOLD = 200_000


def default_workers(interactions: int) -> int:
    """Worker processes for generation: all cores (at most 8) for large runs, 1 for small ones."""
    if interactions < _PARALLEL_THRESHOLD:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def validate_events(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                    as_of: datetime | None = None):
    """Stage 2: the raw-data gate. Writes validated/, quarantine/ and reports; raises ValidationFailed on failure."""
    from ingestion.validate import validate_raw

    return validate_raw(cfg, start=start, end=end, as_of=as_of)


def compute_feature_stats(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None):
    """Stage 3: timestamped user / item / user x item statistics into offline Parquet (validated by GX)."""
    from ingestion.stats import compute_stats

    return compute_stats(cfg, start=start, end=end)


def apply_feature_definitions(cfg: PipelineConfig, online_store: str | None = None) -> None:
    """Stage 4: `feast apply` on feature_repo/."""
    from feedstore.serving import apply_definitions

    apply_definitions(cfg, online_store or cfg.serving.online_store)


def materialize_online(cfg: PipelineConfig, online_store: str | None = None, end: datetime | None = None):
    """Stage 5: latest features into the online store (each view over [end - ttl, end])."""
    from feedstore.serving import materialize_online as materialize

    return materialize(cfg, online_store or cfg.serving.online_store, end)


@dataclass(frozen=True)
class GenerateResult:
    interactions: int
    faults: dict[str, int]
    realism_passed: int | None
    realism_failed: int | None


def generate_events(
    cfg: PipelineConfig,
    *,
    fault_rate: float = 0.0,
    workers: int | None = None,
    report: bool = True,
    progress: bool = True,
) -> GenerateResult:
    """Stage 1: write `<data_dir>/raw/` (users, items, interactions, faults.json) and the realism report."""
    from ingestion.generate import generate
    from ingestion.realism import write_report

    gen = cfg.generation
    summary = generate(
        gen,
        cfg.data_dir,
        fault_rate=fault_rate,
        workers=workers or default_workers(gen.interactions),
        progress=progress,
    )
    passed = failed = None
    if report:
        doc = write_report(cfg.data_dir, gen)
        passed, failed = doc["passed"], doc["failed"]
        if failed:
            log.warning("%d realism check(s) missed their target (see the table above)", failed)
    return GenerateResult(summary.interactions, summary.faults, passed, failed)


def sample_request(cfg: PipelineConfig, candidates: int = 5) -> dict:
    """A realistic request for the demo lookup: the most active user of the last day and its items."""
    import duckdb

    glob = f"{cfg.data_dir.resolve()}/validated/interactions/**/*.parquet"
    con = duckdb.connect()
    user, device = con.execute(f"""
        SELECT user_id, mode(device) FROM read_parquet('{glob}', hive_partitioning = false)
        WHERE event_timestamp >= (SELECT max(event_timestamp) - INTERVAL 1 DAY
                                  FROM read_parquet('{glob}', hive_partitioning = false))
        GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1""").fetchone()
    items = [r[0] for r in con.execute(f"""
        SELECT item_id FROM read_parquet('{glob}', hive_partitioning = false)
        GROUP BY item_id ORDER BY max(event_timestamp) DESC, item_id LIMIT {candidates}""").fetchall()]
    return {"user_id": int(user), "item_ids": [int(i) for i in items] + [10**9], "device": device}
