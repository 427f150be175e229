"""The GX gate on a training set, before it is published: labels, splits, null rates, no future feature rows.

**Cold start or broken join.** A row stamped before the first statistics snapshot (the earliest offline partition's
stamp, day + 1 at 00:00) cannot have windowed features: no snapshot precedes it. The null-rate rule is therefore
measured over the rows *with history* (at or after that stamp); all rows are still kept and reported. If no row
has history, the gate fails with `ColdStart`, saying how much history there is; a null rate above the limit among
rows with history is a broken join and fails as such.

The builder streams its rows, so the gate is fed batch by batch: each batch is folded per (split, day) into the
checked quantities (labels binary, dwell range, every joined feature row at or before its impression, ...) and
per-feature null counts; GX evaluates the folded frame once at the end. The gate's cost and memory do not grow
with the rows, and a failure names the split and day (as the statistics gate does).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedstore.core import gx_fast
from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import FEATURE_TS_PREFIX, TRAINING_KEYS, TRAINING_LABELS
from feedstore.core.errors import ColdStart, ValidationFailed
from feedstore.core.gx import TABLE, GXRunner, expectation, suite, summary_table

log = logging.getLogger(__name__)

SUITE = "training_set.v1"
NULLS_SUITE = "training_set_null_rates.v1"
SPLIT_NAMES = ("train", "val", "test", "gap")


def _values(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def _missing(col: pa.ChunkedArray) -> int:
    """Nulls, plus NaNs in float columns (on-demand features can produce NaN for missing inputs)."""
    n = col.null_count
    if pa.types.is_floating(col.type):
        n += int(pc.sum(pc.is_nan(col)).as_py() or 0)
    return n


class TrainingSetGate:
    """Feed with `add(batch, split_labels)`; `finish()` runs GX and raises ValidationFailed on any failure."""

    def __init__(self, cfg: PipelineConfig, features: list[str] | None = None):
        self.cfg, self.features = cfg, features
        self.rows = 0
        self.warm_rows = 0  # rows at or after the first statistics snapshot (with history)
        self._missing = np.zeros(len(features), np.int64) if features is not None else None
        self._missing_warm = np.zeros(len(features), np.int64) if features is not None else None
        self._folds: list[pd.DataFrame] = []
        self.first_snapshot = first_snapshot(cfg)  # epoch microseconds, or None: no statistics at all

    def start(self) -> None:
        """The build has begun its join: GX (~1-2.5 s) is imported while the build would only wait for the first
        batch."""
        gx_fast.load()

    def add(self, table: pa.Table, split: np.ndarray) -> None:
        """Fold one batch of joined rows (and their split labels) in."""
        if self.features is None:  # the builder's first batch: every column that is not a key, label or feature ts
            self.features = [c for c in table.column_names if c not in TRAINING_KEYS + TRAINING_LABELS
                             and not c.startswith(FEATURE_TS_PREFIX)]
            self._missing = np.zeros(len(self.features), np.int64)
            self._missing_warm = np.zeros(len(self.features), np.int64)
        self.rows += table.num_rows
        missing = np.array([_missing(table.column(f)) for f in self.features], np.int64)
        self._missing += missing
        ts = table.column("event_timestamp")
        us = ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).fill_null(0).to_numpy()
        warm = us >= self.first_snapshot if self.first_snapshot is not None else np.zeros(len(us), bool)
        self.warm_rows += int(warm.sum())
        if warm.all():
            self._missing_warm += missing
        elif warm.any():
            with_history = table.filter(pa.array(warm))
            self._missing_warm += [_missing(with_history.column(f)) for f in self.features]
        row = {"split": split, "day": (us // 86_400_000_000).astype(np.int64),
               "_ts_missing": np.asarray(ts.is_null(), dtype=np.int64),
               "_split_known": np.isin(split, SPLIT_NAMES),
               "_dwell_min": _values(table, "dwell_time").astype(np.float64)}
        for label in ("click", "like", "share"):
            row[f"_{label}_binary"] = np.isin(_values(table, label), (0, 1))
        row["_dwell_max"] = row["_dwell_min"]
        for c in (c for c in table.column_names if c.startswith(FEATURE_TS_PREFIX)):
            feature_ts = table.column(c).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            later = pc.fill_null(pc.greater(feature_ts, pa.array(us)), False).to_numpy(zero_copy_only=False)
            row[f"_no_future__{c.removeprefix(FEATURE_TS_PREFIX)}"] = ~later
        self._folds.append(self._fold(pd.DataFrame(row)))

    @staticmethod
    def _fold(frame: pd.DataFrame) -> pd.DataFrame:
        how = {c: ("sum" if c == "_ts_missing" else "min" if c == "_dwell_min" else "max" if c == "_dwell_max"
                   else "all") for c in frame.columns if c.startswith("_")}
        return frame.groupby(["split", "day"], sort=False).agg(how).reset_index()

    def finish(self, docs_dir: Path | None) -> None:
        folded = self._fold(pd.concat(self._folds, ignore_index=True)) if self._folds else pd.DataFrame(
            {"split": [], "day": []})
        folded["day"] = pd.to_datetime(folded["day"], unit="D").dt.strftime("%Y-%m-%d")
        cap = self.cfg.generation.engagement.dwell_cap_seconds
        rules = [
            *[expectation("ExpectColumnValuesToBeInSet", f"{label}_is_binary", TABLE, column=f"_{label}_binary",
                          value_set=[True], notes=f"{label} is 0 or 1 in every row (checked per split and day)")
              for label in ("click", "like", "share")],
            expectation("ExpectColumnValuesToBeBetween", "dwell_not_negative", TABLE, column="_dwell_min",
                        min_value=0, notes="dwell_time >= 0 in every row"),
            expectation("ExpectColumnValuesToBeBetween", "dwell_below_cap", TABLE, column="_dwell_max",
                        max_value=cap, notes=f"dwell_time <= {cap:g} s in every row"),
            expectation("ExpectColumnValuesToBeInSet", "every_row_in_a_split", TABLE, column="_split_known",
                        value_set=[True], notes="every row is in train, val, test (or a gap between them)"),
            expectation("ExpectColumnValuesToBeBetween", "event_timestamp_present", TABLE, column="_ts_missing",
                        max_value=0, notes="event_timestamp is never null"),
            *[expectation("ExpectColumnValuesToBeInSet", f"no_future_feature_row_{c.removeprefix('_no_future__')}",
                          TABLE, column=c, value_set=[True],
                          notes=f"no {c.removeprefix('_no_future__')} row joined to an impression is stamped after it"
                                " (point-in-time join)")
              for c in folded.columns if c.startswith("_no_future__")],
        ]
        runner = GXRunner(docs_dir=docs_dir, history=self.cfg.validation.docs_history)
        outcomes = runner.validate(folded, suite(SUITE, rules), "training_set", example_columns=["split", "day"],
                                   run_name="training set")
        sparse = set(self.cfg.splits.sparse_features)
        history = _history(self.first_snapshot)
        if self.rows and not self.warm_rows:
            raise ColdStart(f"training set: cold start, too little history: none of its {self.rows:,} rows comes "
                            f"after the first statistics snapshot ({history}), so no row can have windowed "
                            "features; build the history first (the DAG does it on an empty data dir)")
        null_rates = pd.DataFrame({
            "feature": self.features,
            "null_fraction": self._missing_warm / max(self.warm_rows, 1),
            "limit": [0.995 if f in sparse else self.cfg.splits.max_null_fraction for f in self.features]})
        null_rates["headroom"] = null_rates["limit"] - null_rates["null_fraction"]
        outcomes += runner.validate(null_rates, suite(NULLS_SUITE, [
            expectation("ExpectColumnValuesToBeBetween", "feature_null_rate", TABLE, column="headroom", min_value=0,
                        notes="null_fraction (over the rows with history) <= limit: splits.max_null_fraction, or "
                        "0.995 for splits.sparse_features"),
            expectation("ExpectColumnValuesToBeUnique", "feature_names_unique", TABLE, column="feature"),
        ]), "training_set_null_rates", example_columns=["feature", "null_fraction", "limit"],
            run_name="training set null rates")
        runner.build_docs()
        log.info("training-set gate (%s rows, %s with history since %s, %d features, %d split-days)\n%s",
                 f"{self.rows:,}", f"{self.warm_rows:,}", history, len(self.features), len(folded),
                 summary_table("training_set", outcomes))
        failed = [o for o in outcomes if not o.success or o.error]
        if any(o.rule == "feature_null_rate" for o in failed):
            raise ValidationFailed(
                f"training set validation failed: feature_null_rate among the {self.warm_rows:,} rows with history "
                f"({history}): a broken join, not a cold start (e.g. "
                f"{next(o for o in failed if o.rule == 'feature_null_rate').examples[:2]})")
        if failed:
            raise ValidationFailed("training set validation failed: " + "; ".join(
                f"{o.rule} (e.g. {o.examples[:2] or o.observed_value})" for o in failed[:3]))


def first_snapshot(cfg: PipelineConfig) -> int | None:
    """When features start to exist: the stamp (epoch microseconds) of the earliest statistics partition of any
    feature view (a snapshot of day D is stamped D + 1 day), or None if there are no statistics."""
    from datetime import date

    offline = Catalog(cfg.data_dir).offline
    days = [d for view in (offline.iterdir() if offline.is_dir() else []) if not view.name.startswith(".")
            for d in Catalog.day_partitions(view)]
    if not days:
        return None
    return ((date.fromisoformat(min(days)) - date(1970, 1, 1)).days + 1) * 86_400_000_000


def _history(stamp: int | None) -> str:
    if stamp is None:
        return "no statistics yet"
    return f"the first snapshot is stamped {pd.Timestamp(stamp, unit='us', tz='UTC'):%Y-%m-%d %H:%M} UTC"


def validate_training_set(cfg: PipelineConfig, version: str) -> None:
    """Stage gate `validate-training-set`: re-run the training-set gate on a published set, streaming each split file
    in batches."""
    import json

    import pyarrow.parquet as pq

    path = Catalog(cfg.data_dir).published_training_set(version)
    manifest = json.loads((path / "manifest.json").read_text())
    gate = TrainingSetGate(cfg, list(manifest["features"]))
    for name in ("train", "val", "test"):
        for batch in pq.ParquetFile(path / f"{name}.parquet").iter_batches(batch_size=cfg.splits.batch_rows):
            gate.add(pa.Table.from_batches([batch]), np.full(batch.num_rows, name, dtype=object))
    gate.finish(Catalog(cfg.data_dir).data_docs)
