"""Training sets end to end: splits, manifest, report, preprocessing on train only, the GX gate, the baseline
(leakage alarm), clear errors, and the black-box leakage test."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from feedstore.core.errors import FeedstoreError
from feedstore.serving.store import apply_definitions
from feedstore.shell.runner import build_training_set, compute_stats
from feedstore.training_data import build as ts_mod
from feedstore.training_data.evaluate import evaluate_frames, evaluate_training_set
from tests.conftest import pipeline_config


@pytest.fixture(scope="module")
def built(stats_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("training") / "data"
    shutil.copytree(stats_data, d)
    cfg = pipeline_config(d)
    apply_definitions(cfg, "sqlite")
    return cfg, build_training_set(cfg, online_store="sqlite")


def read_validated(d):
    return ds.dataset(d / "validated" / "interactions", format="parquet", partitioning="hive").to_table().to_pandas()


def test_one_row_per_impression_split_by_time(built):
    cfg, res = built
    splits = {n: pd.read_parquet(res.path / f"{n}.parquet") for n in ("train", "val", "test")}
    events = read_validated(cfg.data_dir)
    together = pd.concat(splits.values())
    assert len(together) == len(events) == sum(res.rows.values())  # no gap: every row in exactly one split
    assert together.interaction_id.is_unique and set(together.interaction_id) == set(events.interaction_id)
    assert splits["train"].event_timestamp.max() < splits["val"].event_timestamp.min()
    assert splits["val"].event_timestamp.max() < splits["test"].event_timestamp.min()
    for part in splits.values():  # documented order
        assert part.event_timestamp.is_monotonic_increasing
    assert res.rows["train"] / len(events) == pytest.approx(0.70, abs=0.02)
    assert {"click", "like", "share", "dwell_time", "device", "request_ts"} <= set(splits["train"].columns)
    assert not any(c.startswith("_feature_ts__") for c in splits["train"].columns)


def test_manifest_and_report(built):
    _, res = built
    m = json.loads((res.path / "manifest.json").read_text())
    assert m["feature_service"] == "feed_ranking_v1" and len(m["fingerprint"]) == 12
    assert set(m["splits"]) == {"train", "val", "test"}
    for s in m["splits"].values():
        assert 0.02 < s["ctr"] < 0.4 and s["min_event_timestamp"] < s["max_event_timestamp"]
    assert len(m["features"]) > 60 and "user_category_affinity_for_item" in m["features"]
    assert m["timings_seconds"]["get_historical_features"] > 0
    report = json.loads((res.path / "report" / "feature_report.json").read_text())
    stats = report["stats"]["train"]["user_clicks_7d"]
    assert {"null_rate", "mean", "std", "quantiles"} <= set(stats) and "p50" in stats["quantiles"]
    assert set(report["psi"]) == {"val", "test"} and "item_age_days" in report["psi"]["val"]
    html = (res.path / "report" / "index.html").read_text()
    pngs = sorted((res.path / "report").glob("*.png"))
    assert pngs and all(p.name in html for p in pngs)


def test_preprocessor_is_fitted_on_train_only(built):
    import joblib

    _, res = built
    pipe = joblib.load(res.path / "preprocessor.joblib")
    train = pd.read_parquet(res.path / "train.parquet")
    test = pd.read_parquet(res.path / "test.parquet")
    col = "user_impressions_lifetime"
    k = pipe.feature_names_.index(col)
    imputed = lambda part: part[col].astype(float).fillna(train[col].astype(float).median())  # noqa: E731
    assert pipe.named_steps["impute"].statistics_[k] == train[col].astype(float).median()
    assert pipe.named_steps["scale"].mean_[k] == pytest.approx(imputed(train).mean(), rel=1e-9)
    assert pipe.named_steps["scale"].mean_[k] != pytest.approx(imputed(test).mean(), rel=1e-3)


def test_same_inputs_same_version(built):
    cfg, res = built
    again = build_training_set(cfg, online_store="sqlite", report_plots=False)
    assert again.version == res.version and again.path == res.path


def test_streaming_in_small_batches_builds_the_same_set(built):
    """The builder streams get_historical_features in `splits.batch_rows` batches: 15 batches give the same
    split files, manifest and report as one."""
    cfg, res = built
    assert res.manifest["entity_rows"] > 10_000  # one batch at the default size
    small = cfg.model_copy(update={"splits": cfg.splits.model_copy(update={"batch_rows": 1_000})})
    again = build_training_set(small, online_store="sqlite", version="batched", report_plots=False)
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(pd.read_parquet(again.path / f"{name}.parquet"),
                                      pd.read_parquet(res.path / f"{name}.parquet"))
    for key in ("fingerprint", "rows", "cuts", "splits", "features", "numeric_features", "entity_rows"):
        assert again.manifest[key] == res.manifest[key], key
    one, many = (json.loads((r.path / "report" / "feature_report.json").read_text()) for r in (res, again))
    assert many["psi"] == one["psi"]
    for split, features in one["stats"].items():
        for f, want in features.items():
            got = many["stats"][split][f]
            assert got["null_rate"] == want["null_rate"] and got["quantiles"] == want["quantiles"], (split, f)
            for k in ("mean", "std"):
                assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), (split, f, k)


def test_baseline_shows_signal_and_the_leakage_alarm_fires(built):
    cfg, res = built
    result = evaluate_training_set(cfg, res.version)
    assert 0.55 < result["val"]["auc"] < cfg.splits.suspicious_auc
    assert not result["leakage_suspected"]
    assert json.loads((res.path / "manifest.json").read_text())["evaluation"]["val"]["auc"] == result["val"]["auc"]
    # a statistic that includes the current impression (the seed's bug) is caught by an implausible jump
    m = json.loads((res.path / "manifest.json").read_text())
    parts = {n: pd.read_parquet(res.path / f"{n}.parquet") for n in ("train", "val", "test")}
    for p in parts.values():
        p["item_ctr_leaky"] = (p.item_clicks_lifetime.fillna(0) + p.click) / (p.item_impressions_lifetime.fillna(0) + 1)
    leaky = evaluate_frames(parts["train"], parts["val"], parts["test"], [*m["numeric_features"], "item_ctr_leaky"])
    assert leaky["val"]["auc"] >= cfg.splits.suspicious_auc
    assert leaky["val"]["auc"] > result["val"]["auc"] + 0.2


def test_gate_catches_a_future_feature_row_and_a_bad_label_naming_split_and_day(built, tmp_path):
    from feedstore.core.errors import ValidationFailed
    from feedstore.training_data.gate import TrainingSetGate

    cfg, _ = built
    ts = pd.to_datetime(["2024-03-01 10:00", "2024-03-01 11:00", "2024-03-02 09:00"], utc=True)
    table = pa.table({
        "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "click": [0, 1, 2], "like": [0, 0, 0], "share": [0, 0, 0], "dwell_time": [0.0, 3.5, 1.0],
        "user_clicks_7d": [1, 2, 3],
        "_feature_ts__user_daily_stats": pa.array(pd.to_datetime(["2024-03-01", "2024-03-02", "2024-03-02"], utc=True),
                                                  pa.timestamp("us", tz="UTC")),
    })
    gate = TrainingSetGate(cfg, ["user_clicks_7d"])
    gate.add(table.slice(0, 2), np.array(["train", "train"], dtype=object))  # two batches, as the builder feeds it
    gate.add(table.slice(2), np.array(["val"], dtype=object))
    with pytest.raises(ValidationFailed) as err:
        gate.finish(tmp_path / "docs")
    msg = str(err.value)
    assert "no_future_feature_row_user_daily_stats" in msg and "'train'" in msg and "2024-03-01" in msg
    assert "click_is_binary" in msg and "2024-03-02" in msg
    ok = TrainingSetGate(cfg, ["user_clicks_7d"])
    ok.add(table.slice(0, 1), np.array(["train"], dtype=object))
    ok.finish(tmp_path / "docs")  # a clean set passes


def test_null_rates_tell_a_cold_start_from_a_broken_join(built, tmp_path):
    """Rows before the first statistics snapshot cannot have features (a cold start: a clear message saying so);
    nulls among rows with history are a broken join."""
    from feedstore.core.errors import ColdStart, ValidationFailed
    from feedstore.training_data.gate import TrainingSetGate

    cfg, _ = built
    first = pd.Timestamp(TrainingSetGate(cfg).first_snapshot, unit="us", tz="UTC")

    def rows(at):
        ts = [at + pd.Timedelta(minutes=i) for i in range(4)]
        return pa.table({"event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")), "click": [0, 1, 0, 0],
                         "like": [0] * 4, "share": [0] * 4, "dwell_time": [0.0, 2.0, 0.0, 0.0],
                         "user_clicks_7d": pa.array([None] * 4, pa.int64())})

    cold = TrainingSetGate(cfg, ["user_clicks_7d"])
    cold.add(rows(first - pd.Timedelta(hours=5)), np.array(["train"] * 4, dtype=object))
    with pytest.raises(ColdStart, match="cold start, too little history: none of its 4 rows"):
        cold.finish(tmp_path / "docs")
    broken = TrainingSetGate(cfg, ["user_clicks_7d"])
    broken.add(rows(first - pd.Timedelta(hours=5)), np.array(["train"] * 4, dtype=object))
    broken.add(rows(first + pd.Timedelta(days=5)), np.array(["train"] * 4, dtype=object))
    with pytest.raises(ValidationFailed, match="feature_null_rate among the 4 rows with history.*a broken join") as err:
        broken.finish(tmp_path / "docs")
    assert not isinstance(err.value, ColdStart)


def test_wrong_feature_service_is_a_clear_error(built, monkeypatch):
    cfg, _ = built
    monkeypatch.setattr(ts_mod, "FEATURE_SERVICE", "no_such_service")
    with pytest.raises(FeedstoreError, match="feature service 'no_such_service' not found"):
        build_training_set(cfg, online_store="sqlite")


def test_entity_rows_missing_a_column_is_a_clear_error(built, monkeypatch):
    cfg, _ = built
    original = ts_mod.entity_query
    monkeypatch.setattr(ts_mod, "entity_query", lambda *a, **k: f"SELECT * EXCLUDE (device) FROM ({original(*a, **k)})")
    with pytest.raises(FeedstoreError, match="get_historical_features: .*missing column 'device'"):
        build_training_set(cfg, online_store="sqlite")


def _perturb_after(d, t0: pd.Timestamp) -> None:
    """Change every event at or after t0: flip clicks, drop a fifth, add copies with new ids."""
    rng = np.random.default_rng(3)
    root = d / "validated" / "interactions"
    for part in sorted(root.glob("date=*")):
        if part.name.removeprefix("date=") < str(t0.date()):
            continue
        files = sorted(part.glob("*.parquet"))
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        later = df.event_timestamp >= t0
        changed = df[later].copy()
        changed["click"] = (1 - changed.click).astype(np.int8)
        changed["like"] = (changed["like"] * changed.click).astype(np.int8)
        changed["share"] = (changed.share * changed.click).astype(np.int8)
        changed["dwell_time"] = np.where(changed.click == 1, 12.5, 0.0)
        changed = changed[rng.random(len(changed)) > 0.2]
        extra = changed.sample(frac=0.3, random_state=1).copy()
        extra["interaction_id"] = "new-" + extra.interaction_id
        extra["event_timestamp"] = extra.event_timestamp + pd.Timedelta(seconds=7)
        out = pd.concat([df[~later], changed, extra], ignore_index=True).sort_values("event_timestamp")
        for f in files:
            f.unlink()
        import pyarrow.parquet as pq

        from feedstore.core.contracts import INTERACTIONS_SCHEMA

        pq.write_table(pa.Table.from_pandas(out[INTERACTIONS_SCHEMA.names], preserve_index=False,
                                            schema=INTERACTIONS_SCHEMA), part / "part-0.parquet")


def test_black_box_no_leakage(built, tmp_path):
    """Change everything at or after T0, rebuild stats and the training set: every feature of every row before T0
    is identical, bit for bit."""
    cfg, res = built
    t0 = pd.Timestamp("2024-03-10 12:00", tz="UTC")
    d2 = tmp_path / "data"
    shutil.copytree(cfg.data_dir, d2, ignore=shutil.ignore_patterns("training", "feast", "reports"))
    _perturb_after(d2, t0)
    cfg2 = pipeline_config(d2)
    compute_stats(cfg2)
    apply_definitions(cfg2, "sqlite")
    res2 = build_training_set(cfg2, online_store="sqlite", report_plots=False)
    def before(path):
        rows = pd.concat([pd.read_parquet(path / f"{n}.parquet") for n in ("train", "val", "test")])
        return rows[rows.event_timestamp < t0].sort_values("interaction_id").reset_index(drop=True)

    a, b = before(res.path), before(res2.path)
    assert len(a) == len(b) > 5_000
    changed_after = pd.concat([pd.read_parquet(res2.path / f"{n}.parquet") for n in ("train", "val", "test")])
    assert (changed_after.interaction_id.str.startswith("new-")).any()  # the perturbation really happened
    features = [c for c in a.columns if c not in ("interaction_id",)]
    pd.testing.assert_frame_equal(a[features], b[features], check_exact=True)
    # and the perturbation is visible after T0 (the test can fail)
    late1 = pd.concat([pd.read_parquet(res.path / f"{n}.parquet") for n in ("val", "test")])
    assert late1.user_clicks_lifetime.sum() != changed_after[changed_after.event_timestamp >= t0 + timedelta(days=2)
                                                             ].user_clicks_lifetime.sum()
