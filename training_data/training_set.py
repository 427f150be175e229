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

The sets pass a GX gate before they are published: columns, label values, null rates, and no joined feature
row stamped after its impression.
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

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from feedstore.config import PipelineConfig
from feedstore.errors import FeedstoreError, InputDataError
from feedstore.io import replace_dir, write_json, write_parquet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LABELS = ["click", "like", "share", "dwell_time"]
KEYS = ["interaction_id", "user_id", "item_id", "event_timestamp", "request_ts", "device"]
FEATURE_SERVICE = "feed_ranking_v1"


def training_dir(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / "training"


def entity_rows(cfg: PipelineConfig, start=None, end=None) -> pd.DataFrame:
    """Validated impressions as the entity dataframe, in the documented order (event_timestamp, interaction_id)."""
    glob = Path(cfg.data_dir).resolve() / "validated" / "interactions"
    if not glob.exists():
        raise InputDataError(f"{glob}: not found (run `feedstore validate` first)")
    where = []
    if start:
        where.append(f"event_timestamp >= TIMESTAMPTZ '{start.isoformat()}'")
    if end:
        where.append(f"event_timestamp < TIMESTAMPTZ '{(end + timedelta(days=1)).isoformat()}'")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    df = con.execute(f"""
        SELECT interaction_id, user_id, item_id, event_timestamp, event_timestamp AS request_ts, device,
               click, "like", share, dwell_time
        FROM read_parquet('{glob}/**/*.parquet', hive_partitioning = false)
        {('WHERE ' + ' AND '.join(where)) if where else ''}
        ORDER BY event_timestamp, interaction_id""").df()
    if df.empty:
        raise InputDataError(f"{glob}: no validated interactions in the selected range")
    return df


def fingerprint(cfg: PipelineConfig, store) -> str:
    """Hash of what determines the training set: input files (name, size, rows), config, service definition."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    base = Path(cfg.data_dir).resolve()
    for folder in ("validated/interactions", "offline"):
        for p in sorted((base / folder).rglob("*.parquet")):
            h.update(f"{p.relative_to(base)}:{p.stat().st_size}:{pq.ParquetFile(p).metadata.num_rows}".encode())
    h.update(cfg.model_dump_json(exclude={"data_dir", "log_level"}).encode())
    service = store.get_feature_service(FEATURE_SERVICE)
    for proj in service.feature_view_projections:
        h.update(f"{proj.name}:{','.join(f.name for f in proj.features)}".encode())
    return h.hexdigest()[:12]


def _utc(ts) -> pd.Timestamp:
    """A config timestamp as UTC (naive means UTC)."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t


def split_by_time(ts: pd.Series, cfg: PipelineConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Split label per row ("train"/"val"/"test"/"gap"): cuts at timestamps, so one timestamp is in one split."""
    s = cfg.splits
    values = pd.DatetimeIndex(ts).as_unit("ns").asi8  # int64 ns: sorting Timestamp objects is 50x slower
    if s.train_end is not None:
        cut1, cut2 = _utc(s.train_end), _utc(s.val_end)
    else:
        ordered = np.sort(values)
        n = len(ordered)
        cut1 = pd.Timestamp(ordered[min(int(n * s.train), n - 1)], tz="UTC")
        cut2 = pd.Timestamp(ordered[min(int(n * (s.train + s.val)), n - 1)], tz="UTC")
    cut1, cut2 = pd.Timestamp(cut1).tz_convert("UTC"), pd.Timestamp(cut2).tz_convert("UTC")
    gap = pd.Timedelta(hours=s.gap_hours)
    t = pd.DatetimeIndex(ts)
    label = np.full(len(t), "gap", dtype=object)
    label[t < cut1] = "train"
    label[(t >= cut1 + gap) & (t < cut2)] = "val"
    label[t >= cut2 + gap] = "test"
    if s.val == 0 and s.train_end is None:
        label[(t >= cut1 + gap) & (t < cut2)] = "gap"
    return label, {"train_end": cut1.isoformat(), "val_end": cut2.isoformat(), "gap_hours": s.gap_hours}


@dataclass(frozen=True)
class TrainingSetResult:
    path: Path
    version: str
    rows: dict[str, int]
    manifest: dict[str, Any]


def build_training_set(cfg: PipelineConfig, *, online_store: str | None = None, version: str | None = None,
                       start=None, end=None, report_plots: bool = True) -> TrainingSetResult:
    """Build, validate and publish a training set; return where it is and what it contains."""
    from feedstore.serving import feature_store

    t0 = time.perf_counter()
    store = feature_store(cfg, online_store or cfg.serving.online_store)
    try:
        service = store.get_feature_service(FEATURE_SERVICE)
    except Exception as e:  # feast raises FeatureServiceNotFoundException
        raise FeedstoreError(f"feature service {FEATURE_SERVICE!r} not found in the registry ({e})") from None
    entities = entity_rows(cfg, start, end)
    fp = fingerprint(cfg, store)
    version = version or f"fp-{fp}"
    t1 = time.perf_counter()
    from feast.errors import FeastError

    from feedstore.offline_store import EntityDataFrameError

    try:
        job = store.get_historical_features(entity_df=entities, features=service)
    except (EntityDataFrameError, FeastError) as e:  # e.g. a request field or join key missing from the rows
        raise FeedstoreError(f"get_historical_features: {str(e).splitlines()[0]}") from None
    table = job.to_arrow_with_feature_timestamps() if hasattr(job, "to_arrow_with_feature_timestamps") else \
        job.to_arrow()
    retrieval_s = time.perf_counter() - t1
    if table.num_rows != len(entities):
        raise FeedstoreError(f"get_historical_features returned {table.num_rows} rows for {len(entities)} entity rows")
    df = table.to_pandas()
    feature_names = [c for c in df.columns if c not in KEYS + LABELS and not c.startswith("_feature_ts__")]
    label, cuts = split_by_time(df["event_timestamp"], cfg)

    from training_data.validation import validate_training_set

    validate_training_set(cfg, df, feature_names, label)

    out = training_dir(cfg.data_dir) / version
    stage = out.with_name(f".{version}.staging-{uuid.uuid4().hex[:8]}")
    stage.mkdir(parents=True)
    try:
        public = [c for c in df.columns if not c.startswith("_feature_ts__")]
        splits = {name: df.loc[label == name, public].reset_index(drop=True) for name in SPLITS}
        for name, part in splits.items():
            write_parquet(pa.Table.from_pandas(part, preserve_index=False), stage / f"{name}.parquet")
        numeric = [c for c in feature_names if pd.api.types.is_numeric_dtype(df[c])]
        _fit_preprocessor(splits, numeric, stage)
        from training_data.report import feature_report

        report = feature_report(splits, numeric, stage / "report", plots=report_plots)
        manifest = {
            "version": version,
            "fingerprint": fp,
            "feature_service": FEATURE_SERVICE,
            "entity_rows": len(entities),
            "rows": {n: int(len(p)) for n, p in splits.items()},
            "dropped_in_gaps": int((label == "gap").sum()),
            "cuts": cuts,
            "splits": {n: _split_summary(p) for n, p in splits.items()},
            "labels": LABELS,
            "features": {c: str(df[c].dtype) for c in feature_names},
            "numeric_features": numeric,
            "row_order": "event_timestamp, then interaction_id (one row per validated impression)",
            "psi": report["psi"],
            "timings_seconds": {"get_historical_features": round(retrieval_s, 3),
                                "total": round(time.perf_counter() - t0, 3)},
            "built_from": str(Path(cfg.data_dir).resolve()),
        }
        write_json(manifest, stage / "manifest.json")
        replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("training set %s: %s -> %s in %.1f s (get_historical_features %.1f s)", version,
             ", ".join(f"{n} {r:,}" for n, r in manifest["rows"].items()), out, time.perf_counter() - t0,
             retrieval_s)
    for name, s in manifest["splits"].items():
        log.info("  %-5s %s .. %s  CTR %.4f", name, s["min_event_timestamp"], s["max_event_timestamp"], s["ctr"] or 0)
    return TrainingSetResult(out, version, manifest["rows"], manifest)


def _split_summary(part: pd.DataFrame) -> dict[str, Any]:
    if part.empty:
        return {"rows": 0, "min_event_timestamp": None, "max_event_timestamp": None, "ctr": None}
    return {"rows": int(len(part)), "min_event_timestamp": part.event_timestamp.min().isoformat(),
            "max_event_timestamp": part.event_timestamp.max().isoformat(), "ctr": float(part.click.mean()),
            "like_rate": float(part["like"].mean())}


def _fit_preprocessor(splits: dict[str, pd.DataFrame], numeric: list[str], out: Path) -> None:
    """Median imputer + standard scaler fitted on train only (a fixed sample of up to 200K train rows) and saved
    next to the splits (`feedstore evaluate` applies it to val and test)."""
    import joblib
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler())])
    train = splits["train"]
    if len(train) > 200_000:  # medians and scales from a fixed sample of train (sklearn's NaN median is slow)
        train = train.sample(200_000, random_state=0)
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



