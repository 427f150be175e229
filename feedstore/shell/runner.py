"""The stage runner: every pipeline stage as a function of the config, with the same name as the stage's
implementation; the CLI and the Airflow DAG call these. It is the only place that decides the order of compute,
gates and publishing: a stage whose output is gated is computed staged, its gate runs here, and only a passing
gate publishes it.
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime
from pathlib import Path

from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig

log = logging.getLogger(__name__)


def _done(stage: str, t0: float, what: str, out: Path | str | None = None) -> None:
    """The one summary line of a stage: what went in and out, how long, where the output is."""
    log.info("[%s] done in %.1f s: %s%s", stage, time.perf_counter() - t0, what, f" -> {out}" if out else "")


def generate_events(cfg: PipelineConfig, *, fault_rate: float = 0.0, workers: int | None = None,
                    report: bool = True, progress: bool = True, days: list[date] | None = None):
    """`generate`: raw users, items and impressions (+ the realism report); with `days`, just those days."""
    from feedstore.ingestion.generate.run import generate_events as run

    t0 = time.perf_counter()
    res = run(cfg, fault_rate=fault_rate, workers=workers, report=report, progress=progress, days=days)
    faults = sum(res.faults.values())
    _done("generate", t0, f"{res.interactions:,} interactions" + (f", {faults:,} injected faults" if faults else "")
          + ("" if res.realism_passed is None else f", realism {res.realism_passed}/"
             f"{res.realism_passed + (res.realism_failed or 0)} checks ok"), Catalog(cfg.data_dir).raw)
    return res


def build_history(cfg: PipelineConfig, day: date, *, as_of: datetime) -> list[date]:
    """The cold start of a daily run for `day`: if nothing is validated before `day` (an empty data dir), generate,
    validate and compute the statistics of every day from `generation.start` (where the event source begins) to
    day - 1, so the features have the history they need (lifetime values included). The generator is
    deterministic per day, so this is exactly the data a longer sequence of daily runs leaves. Otherwise nothing.
    Returns the days built."""
    from datetime import timedelta

    from feedstore.core.catalog import Catalog

    validated = Catalog(cfg.data_dir).validated_interactions
    earlier = [p for d, p in Catalog.day_partitions(validated).items() if d < day.isoformat()
               and any(p.glob("*.parquet"))]
    first = cfg.generation.start
    if earlier or day <= first:
        return []
    days = [first + timedelta(days=i) for i in range((day - first).days)]
    log.info("cold start: nothing validated before %s under %s; building the history the features need: %d days "
             "(%s..%s)", day, cfg.data_dir, len(days), days[0], days[-1])
    generate_events(cfg, days=days, report=False, progress=False)
    validate_events(cfg, start=days[0], end=days[-1], as_of=as_of)
    compute_stats(cfg, end=days[-1])
    return days


def validate_events(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                    as_of: datetime | None = None):
    """`validate`: the raw-data gate (on the configured engine); writes validated/, quarantine/, reports; raises
    ValidationFailed."""
    if cfg.engine == "spark":
        from feedstore.ingestion.validate.spark_engine import validate_events as run
    else:
        from feedstore.ingestion.validate.run import validate_events as run

    t0 = time.perf_counter()
    res = run(cfg, start=start, end=end, as_of=as_of)
    rows_in = sum(t.rows_in for t in res.tables.values())
    _done("validate", t0, f"{rows_in:,} rows in, {sum(t.validated for t in res.tables.values()):,} validated, "
          f"{sum(t.quarantined for t in res.tables.values()):,} quarantined; Data Docs {res.data_docs}",
          Catalog(cfg.data_dir).validated)
    return res


def compute_stats(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None):
    """`stats`: timestamped statistics, computed staged, gated, then published (a failed gate publishes nothing).
    On DuckDB: without `start` a full recompute (through `end`); with it, the incremental update of days
    [start, end] from those days' events, the stored tiles and the lifetime state. On Spark (`engine: spark`):
    the spec compiled to Spark, recomputing the days from the whole history (tiles on Spark are not persisted yet)."""
    from feedstore.ingestion.stats.gate import validate_stats as gate

    t0 = time.perf_counter()
    if cfg.engine == "spark":
        from feedstore.ingestion.stats.spark_engine import compute_stats as on_spark

        computed = on_spark(cfg, start=start, end=end)
    elif start is None:
        from feedstore.ingestion.stats.compute import compute_stats as full

        computed = full(cfg, end=end)
    else:
        from feedstore.ingestion.stats.incremental import update_stats

        computed = update_stats(cfg, start, end)
    with computed as staged:
        gate(cfg, staged.days, root=staged.root)
        staged.publish()
    _done("stats", t0, f"{len(staged.days)} snapshot days, {sum(staged.rows.values()):,} feature rows, gate passed",
          Catalog(cfg.data_dir).offline)
    return staged


def validate_stats(cfg: PipelineConfig, days: list[str]) -> None:
    """The stats gate on published statistics of `days` (the DAG re-checks what Feast will read)."""
    from feedstore.ingestion.stats.gate import validate_stats as gate

    gate(cfg, days)


def apply_definitions(cfg: PipelineConfig, online_store: str | None = None) -> None:
    """`apply`: `feast apply` on feature_repo/."""
    from feedstore.core.feast_repo import online_errors
    from feedstore.serving.store import apply_definitions as run

    t0 = time.perf_counter()
    with online_errors("apply"):
        run(cfg, online_store)
    store = online_store or cfg.serving.online_store
    _done("apply", t0, f"Feast definitions registered for the {store} online store",
          Catalog(cfg.data_dir).registry(store))


def materialize_online(cfg: PipelineConfig, online_store: str | None = None, end: datetime | None = None,
                       force: bool = False):
    """`materialize`: latest features into the online store (each view over [end - ttl, end]); never rolls back."""
    from feedstore.core.feast_repo import online_errors
    from feedstore.serving.materialize import materialize_online as run

    t0 = time.perf_counter()
    with online_errors("materialize"):
        res = run(cfg, online_store, end, force=force)
    _done("materialize", t0, f"{sum(res.entities.values()):,} entity rows up to {res.end.isoformat()} into "
          f"{online_store or cfg.serving.online_store}" if res.entities else "nothing written")
    return res


def lookup(cfg: PipelineConfig, user_id: int, item_ids: list[int], device: str = "mobile",
           at: datetime | None = None, online_store: str | None = None) -> dict:
    """`lookup`: the features of one ranking request, JSON-ready."""
    from feedstore.core.feast_repo import online_errors
    from feedstore.serving.ranking import lookup as run

    with online_errors("lookup"):
        return run(cfg, user_id, item_ids, device, at, online_store)


def serve(cfg: PipelineConfig, online_store: str | None = None, host: str = "127.0.0.1", port: int = 6567,
          workers: int = 1, max_candidates: int = 1000) -> None:
    """`serve`: the HTTP feature server (Feast's /get-online-features, /rank, /health, /ready) until interrupted."""
    from feedstore.serving.http import serve as run

    run(cfg, online_store, host=host, port=port, workers=workers, max_candidates=max_candidates)


def build_training_set(cfg: PipelineConfig, *, version: str | None = None, start: date | None = None,
                       end: date | None = None, online_store: str | None = None, report_plots: bool = True):
    """`training-set`: built staged through get_historical_features, gated (fed batch by batch), then published."""
    from feedstore.core.catalog import Catalog
    from feedstore.training_data.build import build_training_set as run
    from feedstore.training_data.gate import TrainingSetGate

    t0 = time.perf_counter()
    gate = TrainingSetGate(cfg)
    with run(cfg, version=version, start=start, end=end, online_store=online_store, report_plots=report_plots,
             observers=[gate]) as staged:
        gate.finish(Catalog(cfg.data_dir).data_docs)
        res = staged.publish()
    _done("training-set", t0, f"{staged.manifest['entity_rows']:,} impressions in, "
          + ", ".join(f"{k} {v:,}" for k, v in res.rows.items()) + f" rows out; report {res.path / 'report'}",
          res.path)
    return res


def validate_training_set(cfg: PipelineConfig, version: str) -> dict:
    """The training-set gate on a published set, then the baseline (the leakage alarm)."""
    from feedstore.training_data.gate import validate_training_set as gate

    gate(cfg, version)
    return evaluate_training_set(cfg, version)


def evaluate_training_set(cfg: PipelineConfig, version: str | None = None) -> dict:
    """`evaluate`: baseline AUC / log loss on val and test, recorded in the training set's manifest."""
    from feedstore.training_data.evaluate import evaluate_training_set as run

    t0 = time.perf_counter()
    metrics = run(cfg, version)
    _done("evaluate", t0, "baseline AUC " + ", ".join(f"{k} {v['auc']:.4f}" for k, v in metrics.items()
                                                      if isinstance(v, dict) and v.get("auc") is not None))
    return metrics


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

    files = [str(Catalog.parquet_glob(Catalog(cfg.data_dir).validated_interactions))]
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


def raw_generation(cfg: PipelineConfig):
    """The generation settings of the raw data already in the data dir (what `run --skip-generate` validates and
    computes against): those `generate` recorded with it; for raw data without a record, the config's, provided
    they span the same days as its date partitions (else a one-line InputDataError saying both ranges)."""
    from feedstore.core.errors import InputDataError
    from feedstore.ingestion.generate.run import recorded_generation

    cat = Catalog(cfg.data_dir)
    if not cat.raw.is_dir():
        raise InputDataError(f"{cat.raw}: no raw data to start from (drop --skip-generate, or point --data-dir at "
                             "a data dir with raw/)")
    recorded = recorded_generation(cfg.data_dir)
    if recorded is not None:
        return recorded
    days = list(Catalog.day_partitions(cat.raw_interactions))
    g = cfg.generation
    if not days or (days[0], days[-1]) != (g.start.isoformat(), g.end.isoformat()):
        covers = f"{days[0]}..{days[-1]}" if days else "no days"
        raise InputDataError(f"{cat.raw}: the raw data covers {covers} (its date partitions; no generation record) "
                             f"but the config says {g.start}..{g.end}: pass --start/--end to match")
    return g


def run_pipeline(cfg: PipelineConfig, *, progress: bool = True, fault_rate: float = 0.0,
                 skip_generate: bool = False) -> dict:
    """`run`: every stage in DAG order (`make demo`: the embedded default); returns a summary. With
    `skip_generate`, starts from the raw data already in the data dir, as it is: with the generation settings
    (date range, sizes) it was made with (`raw_generation`), not the config's."""
    if skip_generate:
        generation = raw_generation(cfg)
        if generation != cfg.generation:
            g = cfg.generation
            log.info("[generate] the raw data was generated for %s..%s (%s interactions, seed %s); using that, not "
                     "the config's %s..%s", generation.start, generation.end, f"{generation.interactions:,}",
                     generation.seed, g.start, g.end)
            cfg = cfg.model_copy(update={"generation": generation})
    log.info("pipeline run: data dir %s, online store %s", cfg.data_dir.resolve(), cfg.serving.online_store)
    if skip_generate:
        log.info("[generate] skipped: using the raw data in %s", Catalog(cfg.data_dir).raw)
    else:
        generate_events(cfg, progress=progress, fault_rate=fault_rate)
    validate_events(cfg)
    compute_stats(cfg)
    apply_definitions(cfg)
    result = materialize_online(cfg)
    sample = sample_request(cfg)
    answer = lookup(cfg, sample["user_id"], sample["item_ids"], sample["device"], result.end)
    built = build_training_set(cfg)
    metrics = evaluate_training_set(cfg, built.version)
    return {"lookup": answer, "training_set": built, "metrics": metrics, "materialized_at": result.end}


def feast_ui(cfg: PipelineConfig, online_store: str | None = None, *, host: str = "127.0.0.1",
             port: int = 8888) -> None:
    """`ui`: Feast's web UI on the registry that was applied. Each online store has its own registry, so the UI of
    a store nobody applied is empty (and Feast would silently create an empty registry): pick the configured store
    if it was applied, else the applied one, and say which."""
    from feedstore.core.feast_repo import SQL_REGISTRY, applied_stores
    from feedstore.serving.store import feast_ui as run

    cat = Catalog(cfg.data_dir)
    applied = applied_stores(cfg)
    if online_store is None:
        preferred = cfg.serving.online_store
        online_store = preferred if preferred in applied else (applied[0] if applied else preferred)
        if applied and online_store != preferred:
            log.warning("the %s online store was never applied here; showing the %s registry instead "
                        "(`feedstore apply --online-store %s` to register the other)", preferred, online_store,
                        preferred)
    if online_store not in applied and online_store not in SQL_REGISTRY:  # (a SQL registry: its URL is checked)
        from feedstore.core.errors import ServingError

        raise ServingError(f"{cat.registry(online_store)}: no Feast registry for the {online_store} store; run "
                           f"`feedstore apply --online-store {online_store}` first (applied: "
                           f"{', '.join(applied) or 'none'})")
    run(cfg, online_store, host=host, port=port)
