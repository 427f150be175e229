"""The GX gate on a training set, before it is published: columns, labels, null rates, no future feature rows."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from feedstore.config import PipelineConfig
from feedstore.quality import TABLE, GXRunner, ValidationFailed, expectation, suite, summary_table

log = logging.getLogger(__name__)

SUITE = "training_set.v1"
NULLS_SUITE = "training_set_null_rates.v1"


def validate_training_set(cfg: PipelineConfig, df: pd.DataFrame, features: list[str], split: np.ndarray) -> None:
    """Raise ValidationFailed if the training set breaks a rule (nothing is published then)."""
    ts_cols = [c for c in df.columns if c.startswith("_feature_ts__")]
    frame = df[["event_timestamp", "click", "like", "share", "dwell_time", *ts_cols]].copy()
    frame["_split"] = split
    frame["_all_features_present"] = True
    rules = [
        expectation("ExpectColumnValuesToBeInSet", "click_is_binary", TABLE, column="click", value_set=[0, 1]),
        expectation("ExpectColumnValuesToBeInSet", "like_is_binary", TABLE, column="like", value_set=[0, 1]),
        expectation("ExpectColumnValuesToBeInSet", "share_is_binary", TABLE, column="share", value_set=[0, 1]),
        expectation("ExpectColumnValuesToBeBetween", "dwell_in_range", TABLE, column="dwell_time", min_value=0,
                    max_value=cfg.generation.engagement.dwell_cap_seconds),
        expectation("ExpectColumnValuesToBeInSet", "every_row_in_a_split", TABLE, column="_split",
                    value_set=["train", "val", "test", "gap"]),
        expectation("ExpectColumnValuesToNotBeNull", "event_timestamp_present", TABLE, column="event_timestamp"),
        *[expectation("ExpectColumnPairValuesAToBeGreaterThanB",
                      f"no_future_feature_row_{c.removeprefix('_feature_ts__')}",
                      TABLE, column_A="event_timestamp", column_B=c, or_equal=True,
                      ignore_row_if="either_value_is_missing") for c in ts_cols],
    ]
    runner = GXRunner(docs_dir=Path(cfg.data_dir) / "reports" / "data_docs")
    outcomes = runner.validate(frame, suite(SUITE, rules), "training_set", run_name="training set")
    sparse = set(cfg.splits.sparse_features)
    null_rates = pd.DataFrame({"feature": features,
                               "null_fraction": [float(df[f].isna().mean()) for f in features],
                               "limit": [0.995 if f in sparse else cfg.splits.max_null_fraction for f in features]})
    null_rates["headroom"] = null_rates["limit"] - null_rates["null_fraction"]
    outcomes += runner.validate(null_rates, suite(NULLS_SUITE, [
        expectation("ExpectColumnValuesToBeBetween", "feature_null_rate", TABLE, column="headroom", min_value=0,
                    notes="null_fraction <= limit: splits.max_null_fraction, or 0.995 for splits.sparse_features"),
        expectation("ExpectColumnValuesToBeUnique", "feature_names_unique", TABLE, column="feature"),
    ]), "training_set_null_rates", example_columns=["feature", "null_fraction", "limit"],
        run_name="training set null rates")
    runner.build_docs()
    log.info("training-set gate (%s rows, %d features)\n%s", f"{len(df):,}", len(features),
             summary_table("training_set", outcomes))
    failed = [o for o in outcomes if not o.success or o.error]
    if failed:
        raise ValidationFailed("training set validation failed: " + "; ".join(
            f"{o.rule} (e.g. {o.examples[:2] or o.observed_value})" for o in failed[:3]))


def validate_published(cfg: PipelineConfig, version: str) -> None:
    """Re-run the training-set suite on a published set (labels, splits, null rates)."""
    import json

    from training_data.training_set import training_dir

    path = training_dir(cfg.data_dir) / version
    manifest = json.loads((path / "manifest.json").read_text())
    parts = [pd.read_parquet(path / f"{n}.parquet").assign(_split=n) for n in ("train", "val", "test")]
    df = pd.concat(parts, ignore_index=True)
    validate_training_set(cfg, df.drop(columns="_split"), list(manifest["features"]), df["_split"].to_numpy())
