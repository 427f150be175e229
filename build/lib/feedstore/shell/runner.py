"""The stage runner: every pipeline stage as a function of the config, with the same name as the stage's
implementation; the CLI and the Airflow DAG call these. It is the only place that decides the order of compute,
gates and publishing: a stage whose output is gated is computed staged, its gate runs here, and only a passing
gate publishes it.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

from feedstore.core.config import PipelineConfig

log = logging.getLogger(__name__)


def generate_events(cfg: PipelineConfig, *, fault_rate: float = 0.0, workers: int | None = None,
                    report: bool = True, progress: bool = True, days: list[date] | None = None):
    """`generate`: raw users, items and impressions (+ the realism report); with `days`, just those days."""
    from feedstore.ingestion.generate.run import generate_events as run

    return run(cfg, fault_rate=fault_rate, workers=workers, report=report, progress=progress, days=days)


def validate_events(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                    as_of: datetime | None = None):
    """`validate`: the raw-data gate; writes validated/, quarantine/, reports; raises ValidationFailed."""
    from feedstore.ingestion.validate.run import validate_events as run

    return run(cfg, start=start, end=end, as_of=as_of)


def compute_stats(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None):
    """`stats`: timestamped statistics, computed staged, gated, then published (a failed gate publishes nothing)."""
    from feedstore.ingestion.stats.compute import compute_stats as run
    from feedstore.ingestion.stats.gate import validate_stats as gate

    with run(cfg, start=start, end=end) as staged:
        gate(cfg, staged.days, root=staged.root)
        staged.publish()
    return staged


def validate_stats(cfg: PipelineConfig, days: list[str]) -> None:
    """The stats gate on published statistics of `days` (the DAG re-checks what Feast will read)."""
    from feedstore.ingestion.stats.gate import validate_stats as gate

    gate(cfg, days)


def apply_definitions(cfg: PipelineConfig, online_store: str | None = None) -> None:
    """`apply`: `feast apply` on feature_repo/."""
    from feedstore.core.feast_repo import online_errors
    from feedstore.serving.store import apply_definitions as run

    with online_errors("apply"):
        run(cfg, online_store)


def materialize_online(cfg: PipelineConfig, online_store: str | None = None, end: datetime | None = None,
                       force: bool = False):
    """`materialize`: latest features into the online store (each view over [end - ttl, end]); never rolls back."""
    from feedstore.core.feast_repo import online_errors
    from feedstore.serving.materialize import materialize_online as run

    with online_errors("materialize"):
        return run(cfg, online_store, end, force=force)


def lookup(cfg: PipelineConfig, user_id: int, item_ids: list[int], device: str = "mobile",
           at: datetime | None = None, online_store: str | None = None) -> dict:
    """`lookup`: the features of one ranking request, JSON-ready."""
    from feedstore.core.feast_repo import online_errors
    from feedstore.serving.ranking import lookup as run

    with online_errors("lookup"):
        return run(cfg, user_id, item_ids, device, at, online_store)


def build_training_set(cfg: PipelineConfig, *, version: str | None = None, start: date | None = None,
                       end: date | None = None, online_store: str | None = None, report_plots: bool = True):
    """`training-set`: built staged through get_historical_features, gated (fed batch by batch), then published."""
    from feedstore.core.catalog import Catalog
    from feedstore.training_data.build import build_training_set as run
    from feedstore.training_data.gate import TrainingSetGate

    gate = TrainingSetGate(cfg)
    with run(cfg, version=version, start=start, end=end, online_store=online_store, report_plots=report_plots,
             observers=[gate]) as staged:
        gate.finish(Catalog(cfg.data_dir).data_docs)
        return staged.publish()


def validate_training_set(cfg: PipelineConfig, version: str) -> dict:
    """The training-set gate on a published set, then the baseline (the leakage alarm)."""
    from feedstore.training_data.gate import validate_training_set as gate

    gate(cfg, version)
    return evaluate_training_set(cfg, version)


def evaluate_training_set(cfg: PipelineConfig, version: str | None = None) -> dict:
    """`evaluate`: baseline AUC / log loss on val and test, recorded in the training set's manifest."""
    from feedstore.training_data.evaluate import evaluate_training_set as run

    return run(cfg, version)


def check_skew(cfg: PipelineConfig, online_store: str | None = None, sample: int | None = None,
               end: datetime | None = None):
    """`check-skew`: online values vs get_historical_features at the newest materialization; raises SkewFound."""
    from feedstore.core.feast_repo import online_errors
    from feedstore.serving.skew import check_skew as run

    with online_errors("check-skew"):
        return run(cfg, online_store, sample, end)


def sample_request(cfg: PipelineConfig, candidates: int = 5) -> dict:
    """A realistic request for the demo lookup: the most active user of the last day and recent items."""
    from feedstore.core import duck
    from feedstore.core.catalog import Catalog

    files = [str(Catalog(cfg.data_dir).validated_interactions / "**" / "*.parquet")]
    con = duck.connect()
    con.execute("CREATE TABLE ev AS SELECT user_id, item_id, event_timestamp, device "
                "FROM read_parquet($files, hive_partitioning = false)", {"files": files})
    user, device = con.execute("""
        SELECT user_id, mode(device) FROM ev
        WHERE event_timestamp >= (SELECT max(event_timestamp) - INTERVAL 1 DAY FROM ev)
        GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1""").fetchone()
    items = [r[0] for r in con.execute(f"""
        SELECT item_id FROM ev GROUP BY item_id ORDER BY max(event_timestamp) DESC, item_id
        LIMIT {int(candidates)}""").fetchall()]
    return {"user_id": int(user), "item_ids": [int(i) for i in items] + [10**9], "device": device}


def run_pipeline(cfg: PipelineConfig, *, progress: bool = True) -> dict:
    """`run`: every stage in DAG order on the embedded default (what `make demo` does); returns a summary."""
    log.info("pipeline run: data dir %s, online store %s", cfg.data_dir.resolve(), cfg.serving.online_store)
    generate_events(cfg, progress=progress)
    validate_events(cfg)
    compute_stats(cfg)
    apply_definitions(cfg)
    result = materialize_online(cfg)
    sample = sample_request(cfg)
    answer = lookup(cfg, sample["user_id"], sample["item_ids"], sample["device"], result.end)
    built = build_training_set(cfg)
    metrics = evaluate_training_set(cfg, built.version)
    return {"lookup": answer, "training_set": built, "metrics": metrics, "materialized_at": result.end}
