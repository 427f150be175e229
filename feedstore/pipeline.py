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


def validate_feature_stats(cfg: PipelineConfig, days: list[str]) -> None:
    """Stage 3b: the GX gate on published offline statistics of `days` (raises ValidationFailed)."""
    from ingestion.stats import offline_dir
    from ingestion.stats_validation import validate_stats

    validate_stats(cfg, offline_dir(cfg.data_dir), days, only_days=True)


def apply_feature_definitions(cfg: PipelineConfig, online_store: str | None = None) -> None:
    """Stage 4: `feast apply` on feature_repo/."""
    from feedstore.serving import apply_definitions

    apply_definitions(cfg, online_store or cfg.serving.online_store)


def materialize_online(cfg: PipelineConfig, online_store: str | None = None, end: datetime | None = None,
                       force: bool = False):
    """Stage 5: latest features into the online store (each view over [end - ttl, end]); never rolls back."""
    from feedstore.serving import materialize_online as materialize

    return materialize(cfg, online_store or cfg.serving.online_store, end, force=force)


def build_training_set(cfg: PipelineConfig, *, version: str | None = None, start: date | None = None,
                       end: date | None = None, online_store: str | None = None):
    """Stage 6: point-in-time training set through get_historical_features, split by time, validated."""
    from training_data.training_set import build_training_set as build

    return build(cfg, version=version, start=start, end=end, online_store=online_store)


def evaluate_baseline(cfg: PipelineConfig, version: str | None = None) -> dict:
    """Stage 7: baseline AUC / log loss on val and test, recorded in the training set's manifest."""
    from training_data.evaluate import evaluate_training_set
    from training_data.training_set import latest_version, training_dir

    path = training_dir(cfg.data_dir) / version if version else latest_version(cfg.data_dir)
    if not (path / "manifest.json").exists():
        from feedstore.errors import InputDataError

        raise InputDataError(f"{path}: no training set there (run `feedstore training-set` first)")
    return evaluate_training_set(cfg, path)


def validate_published_training_set(cfg: PipelineConfig, version: str) -> dict:
    """Stage 6b: re-check a published training set with its GX suite, then the baseline (leakage alarm)."""
    from training_data.validation import validate_published

    validate_published(cfg, version)
    return evaluate_baseline(cfg, version)


def check_training_serving_skew(cfg: PipelineConfig, end: datetime | None = None, online_store: str | None = None):
    """Stage 7: online values vs get_historical_features at `end`; raises FeedstoreError on any mismatch."""
    from feedstore.errors import FeedstoreError
    from feedstore.serving import check_skew

    report = check_skew(cfg, online_store or cfg.serving.online_store, cfg.serving.skew_sample, end=end)
    if report.mismatches:
        first = report.mismatches[0]
        err = FeedstoreError(f"training/serving skew: {len(report.mismatches)} mismatching values, e.g. "
                             f"{first['feature']} for user {first['user_id']} item {first['item_id']}: online "
                             f"{first['online']!r} vs offline {first['offline']!r}")
        err.exit_code = 6
        raise err
    return report


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
    days: list[date] | None = None,
) -> GenerateResult:
    """Stage 1: write `<data_dir>/raw/` (users, items, interactions, faults.json) and the realism report.
    With `days`, only those days' partitions (what the daily DAG does)."""
    from ingestion.generate import generate
    from ingestion.realism import write_report

    gen = cfg.generation
    summary = generate(
        gen,
        cfg.data_dir,
        fault_rate=fault_rate,
        workers=workers or default_workers(gen.interactions),
        progress=progress,
        days=days,
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
    from feedstore import duck

    glob = f"{cfg.data_dir.resolve()}/validated/interactions/**/*.parquet"
    con = duck.connect()
    user, device = con.execute(f"""
        SELECT user_id, mode(device) FROM read_parquet('{glob}', hive_partitioning = false)
        WHERE event_timestamp >= (SELECT max(event_timestamp) - INTERVAL 1 DAY
                                  FROM read_parquet('{glob}', hive_partitioning = false))
        GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1""").fetchone()
    items = [r[0] for r in con.execute(f"""
        SELECT item_id FROM read_parquet('{glob}', hive_partitioning = false)
        GROUP BY item_id ORDER BY max(event_timestamp) DESC, item_id LIMIT {candidates}""").fetchall()]
    return {"user_id": int(user), "item_ids": [int(i) for i in items] + [10**9], "device": device}
