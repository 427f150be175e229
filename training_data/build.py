"""Point-in-time training sets: validated impressions -> get_historical_features(feed_ranking_v1) -> time splits.

Output, under `<data-dir>/training/<version>/` (version: given, or a fingerprint of the inputs and config, so a
rebuild of the same inputs lands in the same place):

* `train.parquet`, `val.parquet`, `test.parquet`: one row per validated impression (in event-time order, then
  interaction_id), its labels (click; like, share, dwell_time as extra labels), request context and every
  feature of the service; null where no feature row existed within ttl (cold start);
* `preprocessor.joblib`: scikit-learn imputer + scaler fitted on train only (evaluate applies it to val, test);
* `manifest.json`: counts, time ranges and CTR per split, features and dtypes, fingerprint, timings;
* `report/feature_report.json` + `report/index.html` + PNGs: per split and feature null rate, mean, std,
  quantiles, and the population stability index train -> val and train -> test.

The build is staged: `build_training_set` writes everything into a staging folder and feeds each batch to its
observers (the GX gate, `gate.py`); the runner finishes the gate and only then publishes the set
(`StagedTrainingSet.publish`), so a set that fails its gate is never visible.

The build streams (`splits.batch_rows` rows at a time): the entity rows stay a DuckDB query that the offline
store runs, and each batch of joined rows feeds the split files, the gate and the report while the next one is
joined (one batch ahead), so 10M rows need no more memory than 1M.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from feedstore.core import duck
from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import FEATURE_TS_PREFIX, TRAINING_KEYS, TRAINING_LABELS, TRAINING_SPLITS
from feedstore.core.errors import EntityDataFrameError, FeedstoreError, InputDataError
from feedstore.core.io import PARQUET_OPTIONS, VersionStage, read_ahead, write_json
from feedstore.core.progress import Progress
from feedstore.core.spec import FEATURE_SERVICE, FEATURE_SPEC
from feedstore.training_data.splits import describe_cuts, label_rows, time_cuts

if TYPE_CHECKING:
    from feedstore.training_data.report import PendingPage

log = logging.getLogger(__name__)




def entity_query(cfg: PipelineConfig, start=None, end=None) -> str:
    """Validated impressions as the entity rows, in the documented order (event_timestamp, interaction_id): a
    DuckDB query that the offline store runs itself, so the rows never have to fit in Python."""
    glob = Catalog(cfg.data_dir).validated_interactions
    if not glob.exists():
        raise InputDataError(f"{glob}: not found (run `feedstore validate` first)")
    where = []
    if start:
        where.append(f"event_timestamp >= TIMESTAMPTZ '{start.isoformat()}'")
    if end:
        where.append(f"event_timestamp < TIMESTAMPTZ '{(end + timedelta(days=1)).isoformat()}'")
    return f"""
        SELECT interaction_id, user_id, item_id, event_timestamp, event_timestamp AS request_ts, device,
               click, "like", share, dwell_time
        FROM read_parquet({duck.literal(str(Catalog.parquet_glob(glob.resolve())))}, hive_partitioning = false)
        {('WHERE ' + ' AND '.join(where)) if where else ''}
        ORDER BY event_timestamp, interaction_id"""


def entity_timestamps(query: str) -> np.ndarray:
    """The entity rows' event timestamps as int64 UTC microseconds (8 bytes a row: for the split cuts)."""
    us = duck.connect().execute(f"SELECT epoch_us(event_timestamp) AS us FROM ({query})").fetchnumpy()["us"]
    return np.asarray(us, dtype=np.int64)


def fingerprint(cfg: PipelineConfig, store) -> str:
    """Hash of what determines the training set: the input files' names and contents (the stages write
    byte-identical files for the same inputs and config), the config, the service definition."""
    h = hashlib.sha256()
    cat = Catalog(cfg.data_dir)
    for path in (cat.validated_interactions, cat.offline):
        folder = path.relative_to(cat.root).as_posix()  # "validated/interactions", "offline"
        root = path.resolve()  # the published version, resolved once
        for p in sorted(root.rglob("*.parquet")):
            h.update(f"{folder}/{p.relative_to(root)}:".encode())
            with p.open("rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
    # batch_rows changes how the set is built, not what it contains
    h.update(cfg.model_dump_json(exclude={"data_dir": True, "log_level": True, "splits": {"batch_rows"}}).encode())
    service = store.get_feature_service(FEATURE_SERVICE)
    for proj in service.feature_view_projections:
        h.update(f"{proj.name}:{','.join(f.name for f in proj.features)}".encode())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class TrainingSetResult:
    path: Path
    version: str
    rows: dict[str, int]
    manifest: dict[str, Any]


def build_training_set(cfg: PipelineConfig, *, online_store: str | None = None, version: str | None = None,
                       start=None, end=None, report_plots: bool = True,
                       observers: Sequence[BatchObserver] = ()) -> StagedTrainingSet:
    """Stage `training-set`: build a training set into a staging folder and return it unpublished; every batch of
    joined rows (with the matched feature timestamps) also goes to `observers.add(batch, split_labels)` (the
    gate). The caller finishes its gate, then `publish()`es (or the staging folder is removed on exit).

    Streams: the entity rows stay a DuckDB query, get_historical_features is read `splits.batch_rows` rows at a
    time, and each batch feeds the split files (encoded on a writer thread), the gate and the report while the
    next one is joined (on a thread: `feedstore.core.io.read_ahead`). Memory follows the batch size (two
    batches), plus ~90 bytes per entity row (DuckDB keeps the rows to number them; the split cuts need their
    timestamps) and the report's fixed-size samples.

    With plots, a spawned process (started first, so its imports run while this process imports Feast and joins)
    fits the preprocessor (as soon as the last train row is in: train is the earliest split) and renders the
    report's pages; `publish()` finishes the pages.
    """
    pool = _report_worker() if report_plots else None
    try:
        return _build(cfg, online_store=online_store, version=version, start=start, end=end,
                      report_plots=report_plots, observers=observers, pool=pool)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise


def _report_worker() -> ProcessPoolExecutor | None:
    """One spawned process for the preprocessor fit and the report's plot pages, its imports under way; None (do
    them here) where this process may not have children (a daemon)."""
    import multiprocessing as mp

    if mp.current_process().daemon:
        return None
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    pool.submit(_import_worker_modules)
    return pool


def _import_worker_modules() -> None:
    """What the report worker's jobs import (plots, the preprocessor fit), while the build joins."""
    from feedstore.training_data.report import import_matplotlib

    import_matplotlib()
    import joblib  # noqa: F401
    import sklearn.impute  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401


def _build(cfg: PipelineConfig, *, online_store: str | None, version: str | None, start, end, report_plots: bool,
           observers: Sequence[BatchObserver], pool: ProcessPoolExecutor | None) -> StagedTrainingSet:
    from feast.errors import FeastError

    from feedstore.core.feast_repo import feature_store
    from feedstore.training_data.report import FeatureSummary, feature_report

    t0 = time.perf_counter()
    if version is not None:
        Catalog(cfg.data_dir).training_set(version)  # a bad name fails before any work
    cat = Catalog(cfg.data_dir)
    empty = [v.name for v in FEATURE_SPEC.views if not any(cat.view(v.name).glob("*/*.parquet"))]
    if empty:
        raise InputDataError(f"{cat.offline}: no offline statistics for {', '.join(empty)} "
                             "(run `feedstore stats` first)")
    store = feature_store(cfg, online_store or cfg.serving.online_store)
    try:
        service = store.get_feature_service(FEATURE_SERVICE)
    except Exception as e:  # feast raises FeatureServiceNotFoundException
        raise FeedstoreError(f"feature service {FEATURE_SERVICE!r} not found in the registry ({e})") from None
    query = entity_query(cfg, start, end)
    us = np.sort(entity_timestamps(query))
    if not len(us):
        raise InputDataError(f"{Catalog(cfg.data_dir).validated_interactions}: no validated "
                             "interactions in the selected range")
    cuts = time_cuts(us, cfg)
    expected = pd.Series(label_rows(us, cuts, cfg)).value_counts().reindex([*TRAINING_SPLITS, "gap"], fill_value=0)
    fp = fingerprint(cfg, store)
    version = version or f"fp-{fp}"
    try:
        job = store.get_historical_features(entity_df=query, features=service)
    except (EntityDataFrameError, FeastError) as e:  # e.g. a request field or join key missing from the rows
        raise FeedstoreError(f"get_historical_features: {str(e).splitlines()[0]}") from None

    import pyarrow.parquet  # noqa: F401

    out = Catalog(cfg.data_dir).training_set(version)
    for other in Catalog(cfg.data_dir).training.glob(".*.versions"):  # leftovers of killed builds of other versions
        name = other.name[1:].removesuffix(".versions")
        if name != version:
            Catalog(cfg.data_dir).training_publication(name).clean_if_idle()
    pending = Catalog(cfg.data_dir).training_publication(version).begin()
    stage = pending.path / version
    stage.mkdir(parents=True)
    writers: dict[str, Any] = {}
    progress = batches = split_writer = None
    try:
        import pyarrow.parquet as pq

        retrieval_s, rows_out, summary = 0.0, 0, None
        dtypes: dict[str, str] = {}
        numeric: list[str] = []
        totals = {n: {"rows": 0, "min": None, "max": None, "click": 0, "like": 0} for n in TRAINING_SPLITS}
        # each next batch is joined on a thread while this one feeds the split files, gate and report
        batches = read_ahead(job.iter_batches(cfg.splits.batch_rows, keep_feature_ts=True))
        split_writer = ThreadPoolExecutor(1, thread_name_prefix="feedstore-split-files")
        for observer in observers:
            observer.start()
        fitting = None
        progress = Progress(len(us), "training set", unit="rows", logger=log)
        while True:
            t1 = time.perf_counter()
            table = next(batches, None)  # the time this waits for the join is what the manifest reports
            retrieval_s += time.perf_counter() - t1
            if table is None:
                progress.close()
                break
            progress.update(table.num_rows)
            stamps = table.column("event_timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            label = label_rows(stamps.to_numpy(), cuts, cfg)
            rows_out += table.num_rows
            public = table.select([c for c in table.column_names if not c.startswith(FEATURE_TS_PREFIX)])
            if summary is None:  # first batch: the feature columns and their types (the same in every batch)
                features = [c for c in public.column_names if c not in TRAINING_KEYS + TRAINING_LABELS]
                dtypes = {c: str(public.schema.field(c).type) for c in features}
                numeric = [c for c in features if _is_numeric(public.schema.field(c).type)]
                summary = FeatureSummary(numeric, {n: int(expected[n]) for n in TRAINING_SPLITS})
            parts = {name: part for name in TRAINING_SPLITS if (part := _rows_of(public, label == name)) is not None}
            writes = []
            for name, part in parts.items():  # encoded and compressed on the writer thread (Arrow frees the GIL)
                if name not in writers:
                    writers[name] = pq.ParquetWriter(stage / f"{name}.parquet", public.schema, **PARQUET_OPTIONS)
                writes.append(split_writer.submit(writers[name].write_table, part))
            for observer in observers:
                observer.add(table, label)
            for name, part in parts.items():
                summary.add(name, part)
                _add_totals(totals[name], part)
            for write in writes:  # this batch is written before the next one is taken: two batches in memory
                write.result()
            if fitting is None and pool is not None and summary.rows["train"] == expected["train"] > 0:
                # train is the earliest split and its sample is complete: the worker fits while the join goes on
                fitting = _submit_fit(pool, summary, numeric, stage)
        if rows_out != len(us):
            raise FeedstoreError(f"get_historical_features returned {rows_out} rows for {len(us)} entity rows")
        for name in TRAINING_SPLITS:  # a split with no rows still gets its (empty) file
            if name in writers:
                writers.pop(name).close()
            else:
                pq.write_table(public.schema.empty_table(), stage / f"{name}.parquet", **PARQUET_OPTIONS)
        if fitting is None and pool is not None and summary is not None and summary.rows["train"]:
            fitting = _submit_fit(pool, summary, numeric, stage)
        report, rendering = feature_report(summary, stage / "report", plots=report_plots,
                                           splits={n: _split_summary(totals[n]) for n in TRAINING_SPLITS},
                                           published_as=out / "report", pool=pool)
        preprocessor_sha256 = (fitting.result() if fitting is not None
                               else _fit_preprocessor(summary.sample("train"), numeric, stage))
        manifest = {
            "version": version,
            "fingerprint": fp,
            "feature_service": FEATURE_SERVICE,
            "entity_rows": int(len(us)),
            "rows": {n: totals[n]["rows"] for n in TRAINING_SPLITS},
            "dropped_in_gaps": int(expected["gap"]),
            "cuts": describe_cuts(cuts, cfg),
            "splits": {n: _split_summary(totals[n]) for n in TRAINING_SPLITS},
            "labels": TRAINING_LABELS,
            "features": dtypes,
            "numeric_features": numeric,
            # preprocessor.joblib is a pickle: `evaluate` loads it only if its bytes still hash to this
            "preprocessor_sha256": preprocessor_sha256,
            "row_order": "event_timestamp, then interaction_id (one row per validated impression)",
            "psi": report["psi"],
            "batch_rows": cfg.splits.batch_rows,
            "timings_seconds": {"get_historical_features": round(retrieval_s, 3),
                                "total": round(time.perf_counter() - t0, 3)},
            "built_from": str(Catalog(cfg.data_dir).root),
        }
        write_json(manifest, stage / "manifest.json")
    except BaseException:
        if split_writer is not None:
            split_writer.shutdown(wait=True)  # nothing writes into the staging folder while it is removed
        pending.discard()
        raise
    finally:
        if batches is not None:
            batches.close()  # stops the thread, which closes the DuckDB session
        if split_writer is not None:
            split_writer.shutdown(wait=True)  # a write under way ends before its file is closed
        for w in writers.values():
            w.close()
        if progress is not None:
            progress.close()  # its heartbeat stops on a failed build too
    log.info("training set %s built in %.1f s (get_historical_features %.1f s): %s", version,
             time.perf_counter() - t0, retrieval_s, ", ".join(f"{n} {r:,}" for n, r in manifest["rows"].items()))
    return StagedTrainingSet(stage, out, version, manifest, pending, pool, rendering)


class BatchObserver(Protocol):
    """Sees every batch of joined rows of a build (e.g. the training-set gate)."""

    def start(self) -> None:
        """Called once, when the join has begun and before its first batch arrives: the build's main thread would
        only wait for the join then, so it is the time to load what the observer needs later."""

    def add(self, table: pa.Table, split: np.ndarray) -> None: ...


@dataclass
class StagedTrainingSet:
    """A built, unpublished training set: `publish()` makes it visible at once; leaving the `with` block without
    publishing (a failed gate) removes it."""

    stage: Path
    out: Path
    version: str
    manifest: dict[str, Any]
    pending: VersionStage
    pool: Executor | None = None  # renders the report's plot pages
    rendering: list[PendingPage] = field(default_factory=list)
    published: bool = False

    def publish(self) -> TrainingSetResult:
        """Finish the report's plot pages (the pool renders from the first, this process takes the ones it has not
        begun from the last), then switch `training/<version>/` to the staged set (one atomic step)."""
        for page in reversed(self.rendering):
            page.finish()
        self._stop_pool(cancel=False)
        self.pending.publish()
        self.published = True
        log.info("training set %s -> %s; report %s", self.version, self.out, self.out / "report" / "index.html")
        for name, s in self.manifest["splits"].items():
            log.info("  %-5s %s .. %s  CTR %.4f", name, s["min_event_timestamp"], s["max_event_timestamp"],
                     s["ctr"] or 0)
        return TrainingSetResult(self.out, self.version, self.manifest["rows"], self.manifest)

    def discard(self) -> None:
        self._stop_pool(cancel=True)  # no page is written into the folder once it is removed
        self.pending.discard()

    def _stop_pool(self, cancel: bool) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None

    def __enter__(self) -> StagedTrainingSet:
        return self

    def __exit__(self, *exc) -> None:
        if not self.published:
            self.discard()


def _submit_fit(pool: Executor, summary, numeric: list[str], stage: Path) -> Future:
    """The preprocessor's fit on train's sample, in the report worker. The pool gets Arrow, not a DataFrame:
    unpickled numpy arrays carry their own dtype objects, and joblib.dump would pickle the fitted preprocessor
    differently (the same values, other bytes)."""
    return pool.submit(_fit_preprocessor, summary.sample_table("train"), numeric, stage)


def _rows_of(table: pa.Table, mask: np.ndarray) -> pa.Table | None:
    """The rows of `table` where `mask` holds, None if none. The rows come in event-time order and the splits are
    time ranges, so a split's rows in a batch are one run: a zero-copy slice then (copying them through a filter
    was ~1.6 s of the 1M build); any other mask is filtered. The slice's columns are cut into the same record
    batches as a filter's output (zero-copy too): the Parquet writer's dictionary fallback is checked per chunk, so
    another chunk layout would write the same values in other bytes."""
    where = np.flatnonzero(mask)
    if not len(where):
        return None
    first, last = int(where[0]), int(where[-1])
    if last - first + 1 == len(where):
        return pa.Table.from_batches(table.slice(first, len(where)).to_batches(), schema=table.schema)
    return table.filter(pa.array(mask))


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _add_totals(acc: dict[str, Any], part: pa.Table) -> None:
    import pyarrow.compute as pc

    acc["rows"] += part.num_rows
    lo, hi = (v.as_py() for v in pc.min_max(part.column("event_timestamp")).values())
    acc["min"] = lo if acc["min"] is None else min(acc["min"], lo)
    acc["max"] = hi if acc["max"] is None else max(acc["max"], hi)
    acc["click"] += int(pc.sum(part.column("click")).as_py() or 0)
    acc["like"] += int(pc.sum(part.column("like")).as_py() or 0)


def _split_summary(acc: dict[str, Any]) -> dict[str, Any]:
    n = acc["rows"]
    if not n:
        return {"rows": 0, "min_event_timestamp": None, "max_event_timestamp": None, "ctr": None}
    return {"rows": n, "min_event_timestamp": acc["min"].isoformat(), "max_event_timestamp": acc["max"].isoformat(),
            "ctr": acc["click"] / n, "like_rate": acc["like"] / n}


def _fit_preprocessor(train: pd.DataFrame | pa.Table, numeric: list[str], out: Path) -> str:
    """Median imputer + standard scaler fitted on train only (the report's fixed sample of ~200K train rows, all
    of train when smaller) and saved next to the splits (`feedstore evaluate` applies it to val and test); returns
    the file's sha256. Runs in the report worker when there is one (the same bytes)."""
    import joblib
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(train, pa.Table):
        train = train.to_pandas()
    pipe = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler())])
    pipe.fit(train[numeric].astype(np.float64))
    pipe.feature_names_ = numeric
    joblib.dump(pipe, out / "preprocessor.joblib")
    return file_sha256(out / "preprocessor.joblib")


def file_sha256(path: Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_split(path: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(Path(path) / f"{name}.parquet")
