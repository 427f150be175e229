"""Point-in-time training sets: validated impressions -> get_historical_features(feed_ranking_v1) -> time splits.

`python -m training_data.training_set [--version V]` is the same as `feedstore training-set`.

Output, under `<data-dir>/training/<version>/` (version: given, or a fingerprint of the inputs and config, so a
rebuild of the same inputs lands in the same place):

* `train.parquet`, `val.parquet`, `test.parquet`: one row per validated impression (in event-time order, then
  interaction_id), its labels (click; like, share, dwell_time as extra labels), request context and every
  feature of the service; null where no feature row existed within ttl (cold start);
* `preprocessor.joblib`: scikit-learn imputer + scaler fitted on train only (evaluate applies it to val, test);
* `manifest.json`: counts, time ranges and CTR per split, features and dtypes, fingerprint, timings;
* `report/feature_report.json` + `report/index.html` + PNGs: per split and feature null rate, mean, std,
  quantiles, and the population stability index train -> val and train -> test.

The sets pass a GX gate before they are published: label values, split labels, null rates, and no joined
feature row stamped after its impression.

The build streams (`splits.batch_rows` rows at a time): the entity rows stay a DuckDB query that the offline
store runs, and each batch of joined rows feeds the split files, the gate and the report before the next is
read, so 10M rows need no more memory than 1M.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feedstore import duck
from feedstore.config import PipelineConfig
from feedstore.errors import FeedstoreError, InputDataError
from feedstore.io import PARQUET_OPTIONS, replace_dir, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LABELS = ["click", "like", "share", "dwell_time"]
KEYS = ["interaction_id", "user_id", "item_id", "event_timestamp", "request_ts", "device"]
FEATURE_SERVICE = "feed_ranking_v1"


def training_dir(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / "training"


def entity_query(cfg: PipelineConfig, start=None, end=None) -> str:
    """Validated impressions as the entity rows, in the documented order (event_timestamp, interaction_id): a
    DuckDB query that the offline store runs itself, so the rows never have to fit in Python."""
    glob = Path(cfg.data_dir).resolve() / "validated" / "interactions"
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
        FROM read_parquet('{glob}/**/*.parquet', hive_partitioning = false)
        {('WHERE ' + ' AND '.join(where)) if where else ''}
        ORDER BY event_timestamp, interaction_id"""


def entity_timestamps(query: str) -> np.ndarray:
    """The entity rows' event timestamps as int64 UTC microseconds (8 bytes a row: for the split cuts)."""
    us = duck.connect().execute(f"SELECT epoch_us(event_timestamp) AS us FROM ({query})").fetchnumpy()["us"]
    return np.asarray(us, dtype=np.int64)


def fingerprint(cfg: PipelineConfig, store) -> str:
    """Hash of what determines the training set: input files (name, size, rows), config, service definition."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    base = Path(cfg.data_dir).resolve()
    for folder in ("validated/interactions", "offline"):
        for p in sorted((base / folder).rglob("*.parquet")):
            h.update(f"{p.relative_to(base)}:{p.stat().st_size}:{pq.ParquetFile(p).metadata.num_rows}".encode())
    # batch_rows changes how the set is built, not what it contains
    h.update(cfg.model_dump_json(exclude={"data_dir": True, "log_level": True, "splits": {"batch_rows"}}).encode())
    service = store.get_feature_service(FEATURE_SERVICE)
    for proj in service.feature_view_projections:
        h.update(f"{proj.name}:{','.join(f.name for f in proj.features)}".encode())
    return h.hexdigest()[:12]


def _utc(ts) -> pd.Timestamp:
    """A config timestamp as UTC (naive means UTC)."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t


def time_cuts(sorted_us: np.ndarray, cfg: PipelineConfig) -> tuple[int, int]:
    """(train_end, val_end) in UTC microseconds: the configured cuts, or the timestamps at the ratio positions
    of the time-ordered rows (so all rows of one timestamp land in one split)."""
    s = cfg.splits
    if s.train_end is not None:
        return _utc(s.train_end).value // 1000, _utc(s.val_end).value // 1000
    n = len(sorted_us)
    return int(sorted_us[min(int(n * s.train), n - 1)]), int(sorted_us[min(int(n * (s.train + s.val)), n - 1)])


def label_rows(us: np.ndarray, cuts: tuple[int, int], cfg: PipelineConfig) -> np.ndarray:
    """Split label per row ("train"/"val"/"test"/"gap") from UTC microseconds and the cuts."""
    s = cfg.splits
    cut1, cut2 = cuts
    gap = int(s.gap_hours * 3_600_000_000)
    label = np.full(len(us), "gap", dtype=object)
    label[us < cut1] = "train"
    if not (s.val == 0 and s.train_end is None):
        label[(us >= cut1 + gap) & (us < cut2)] = "val"
    label[us >= cut2 + gap] = "test"
    return label


def describe_cuts(cuts: tuple[int, int], cfg: PipelineConfig) -> dict[str, Any]:
    iso = [pd.Timestamp(c, unit="us", tz="UTC").isoformat() for c in cuts]
    return {"train_end": iso[0], "val_end": iso[1], "gap_hours": cfg.splits.gap_hours}


def split_by_time(ts: pd.Series, cfg: PipelineConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Split labels of in-memory timestamps, and the cuts (the builder does the same on streamed batches)."""
    us = pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("us").asi8
    cuts = time_cuts(np.sort(us), cfg)
    return label_rows(us, cuts, cfg), describe_cuts(cuts, cfg)


@dataclass(frozen=True)
class TrainingSetResult:
    path: Path
    version: str
    rows: dict[str, int]
    manifest: dict[str, Any]


def build_training_set(cfg: PipelineConfig, *, online_store: str | None = None, version: str | None = None,
                       start=None, end=None, report_plots: bool = True) -> TrainingSetResult:
    """Build, validate and publish a training set; return where it is and what it contains.

    Streams: the entity rows stay a DuckDB query, get_historical_features is read `splits.batch_rows` rows at a
    time, and each batch feeds the split files, the gate and the report before the next one is read. Memory
    follows the batch size, plus ~90 bytes per entity row (DuckDB keeps the rows to number them; the split cuts
    need their timestamps) and the report's fixed-size samples.
    """
    from feast.errors import FeastError

    from feedstore.offline_store import FEATURE_TS_PREFIX, EntityDataFrameError
    from feedstore.serving import feature_store
    from training_data.report import FeatureSummary, feature_report
    from training_data.validation import TrainingSetGate

    t0 = time.perf_counter()
    store = feature_store(cfg, online_store or cfg.serving.online_store)
    try:
        service = store.get_feature_service(FEATURE_SERVICE)
    except Exception as e:  # feast raises FeatureServiceNotFoundException
        raise FeedstoreError(f"feature service {FEATURE_SERVICE!r} not found in the registry ({e})") from None
    query = entity_query(cfg, start, end)
    us = np.sort(entity_timestamps(query))
    if not len(us):
        raise InputDataError(f"{Path(cfg.data_dir).resolve() / 'validated' / 'interactions'}: no validated "
                             "interactions in the selected range")
    cuts = time_cuts(us, cfg)
    expected = pd.Series(label_rows(us, cuts, cfg)).value_counts().reindex([*SPLITS, "gap"], fill_value=0)
    fp = fingerprint(cfg, store)
    version = version or f"fp-{fp}"
    try:
        job = store.get_historical_features(entity_df=query, features=service)
    except (EntityDataFrameError, FeastError) as e:  # e.g. a request field or join key missing from the rows
        raise FeedstoreError(f"get_historical_features: {str(e).splitlines()[0]}") from None

    out = training_dir(cfg.data_dir) / version
    stage = out.with_name(f".{version}.staging-{uuid.uuid4().hex[:8]}")
    stage.mkdir(parents=True)
    writers: dict[str, Any] = {}
    try:
        import pyarrow.parquet as pq

        retrieval_s, rows_out, summary, gate = 0.0, 0, None, None
        dtypes: dict[str, str] = {}
        numeric: list[str] = []
        totals = {n: {"rows": 0, "min": None, "max": None, "click": 0, "like": 0} for n in SPLITS}
        batches = job.iter_batches(cfg.splits.batch_rows, keep_feature_ts=True)
        while True:
            t1 = time.perf_counter()
            table = next(batches, None)
            retrieval_s += time.perf_counter() - t1
            if table is None:
                break
            stamps = table.column("event_timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            label = label_rows(stamps.to_numpy(), cuts, cfg)
            rows_out += table.num_rows
            public = table.select([c for c in table.column_names if not c.startswith(FEATURE_TS_PREFIX)])
            if summary is None:  # first batch: the feature columns and their types (the same in every batch)
                features = [c for c in public.column_names if c not in KEYS + LABELS]
                dtypes = {c: str(public.schema.field(c).type) for c in features}
                numeric = [c for c in features if _is_numeric(public.schema.field(c).type)]
                summary = FeatureSummary(numeric, {n: int(expected[n]) for n in SPLITS})
                gate = TrainingSetGate(cfg, features)
            gate.add(table, label)
            for name in SPLITS:
                mask = label == name
                if not mask.any():
                    continue
                part = public.filter(pa.array(mask))
                if name not in writers:
                    writers[name] = pq.ParquetWriter(stage / f"{name}.parquet", public.schema, **PARQUET_OPTIONS)
                writers[name].write_table(part)
                summary.add(name, part)
                _add_totals(totals[name], part)
        if rows_out != len(us):
            raise FeedstoreError(f"get_historical_features returned {rows_out} rows for {len(us)} entity rows")
        gate.finish(Path(cfg.data_dir) / "reports" / "data_docs")
        for name in SPLITS:  # a split with no rows still gets its (empty) file
            if name in writers:
                writers.pop(name).close()
            else:
                pq.write_table(public.schema.empty_table(), stage / f"{name}.parquet", **PARQUET_OPTIONS)
        _fit_preprocessor(summary.sample("train"), numeric, stage)
        report = feature_report(summary, stage / "report", plots=report_plots)
        manifest = {
            "version": version,
            "fingerprint": fp,
            "feature_service": FEATURE_SERVICE,
            "entity_rows": int(len(us)),
            "rows": {n: totals[n]["rows"] for n in SPLITS},
            "dropped_in_gaps": int(expected["gap"]),
            "cuts": describe_cuts(cuts, cfg),
            "splits": {n: _split_summary(totals[n]) for n in SPLITS},
            "labels": LABELS,
            "features": dtypes,
            "numeric_features": numeric,
            "row_order": "event_timestamp, then interaction_id (one row per validated impression)",
            "psi": report["psi"],
            "batch_rows": cfg.splits.batch_rows,
            "timings_seconds": {"get_historical_features": round(retrieval_s, 3),
                                "total": round(time.perf_counter() - t0, 3)},
            "built_from": str(Path(cfg.data_dir).resolve()),
        }
        write_json(manifest, stage / "manifest.json")
        replace_dir(stage, out)
    finally:
        for w in writers.values():
            w.close()
        shutil.rmtree(stage, ignore_errors=True)
    log.info("training set %s: %s -> %s in %.1f s (get_historical_features %.1f s); report %s", version,
             ", ".join(f"{n} {r:,}" for n, r in manifest["rows"].items()), out, time.perf_counter() - t0,
             retrieval_s, out / "report" / "index.html")
    for name, s in manifest["splits"].items():
        log.info("  %-5s %s .. %s  CTR %.4f", name, s["min_event_timestamp"], s["max_event_timestamp"], s["ctr"] or 0)
    return TrainingSetResult(out, version, manifest["rows"], manifest)


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


def _fit_preprocessor(train: pd.DataFrame, numeric: list[str], out: Path) -> None:
    """Median imputer + standard scaler fitted on train only (the report's fixed sample of ~200K train rows, all
    of train when smaller) and saved next to the splits (`feedstore evaluate` applies it to val and test)."""
    import joblib
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler())])
    pipe.fit(train[numeric].astype(np.float64))
    pipe.feature_names_ = numeric
    joblib.dump(pipe, out / "preprocessor.joblib")


def load_split(path: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(Path(path) / f"{name}.parquet")


def latest_version(data_dir: Path) -> Path:
    root = training_dir(data_dir)
    versions = sorted((p for p in root.glob("*") if (p / "manifest.json").exists()), key=lambda p: p.stat().st_mtime)
    if not versions:
        raise InputDataError(f"{root}: no training set (run `feedstore training-set` first)")
    return versions[-1]


def main(argv: list[str] | None = None) -> None:
    """`python -m training_data.training_set`: the same as `feedstore training-set`."""
    parser = argparse.ArgumentParser(description="Build a point-in-time training set through Feast.")
    parser.add_argument("--version")
    parser.add_argument("--online-store", choices=["sqlite", "redis"])
    args, rest = parser.parse_known_args(argv)
    from feedstore.cli import main as cli_main

    cmd = [*rest, "training-set"]
    if args.version:
        cmd += ["--version", args.version]
    if args.online_store:
        cmd += ["--online-store", args.online_store]
    cli_main(cmd)


if __name__ == "__main__":
    main()



