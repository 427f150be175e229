"""The feature spec is the single truth: one more window and one more aggregation in the spec, and the computation,
the Feast schema, the gate and the defaults all follow with no other edit, and agree with the brute-force
reference. Also: the README's feature table is the spec's."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from feedstore.core.catalog import Catalog
from feedstore.core.contracts import offline_schema
from feedstore.core.spec import FEATURE_SPEC, LIFETIME, Feature, Tile, defaults, markdown_table
from feedstore.ingestion.stats.compute import compute_stats
from feedstore.ingestion.stats.gate import check_view, validate_stats
from feedstore.ingestion.stats.incremental import update_stats
from tests.conftest import ROOT, pipeline_config
from tests.reference import latest_row, windowed_stats

USER = FEATURE_SPEC.view("user_daily_stats")
LONG_DWELL = Tile("long_dwells", "CASE WHEN click = 1 AND dwell_time > 30 THEN 1 ELSE 0 END",
                  "clicks that dwelt over 30 s", bounded_by="clicks")
EXTENDED_USER = replace(
    USER,
    windows=(1, 3, 7, 30, LIFETIME),
    tiles=(*USER.tiles, LONG_DWELL),
    features=(*USER.features, Feature("long_dwells", "count", "long_dwells", "clicks that dwelt over 30 s")),
)
EXTENDED = FEATURE_SPEC.with_view(EXTENDED_USER)
NEW_COLUMNS = ["user_impressions_3d", "user_ctr_smoothed_3d", "user_long_dwells_1d", "user_long_dwells_3d",
               "user_long_dwells_lifetime"]


def _feature_repo_module(name: str, data_dir: Path):
    """A module of feature_repo/ imported the way Feast imports it (the repo folder on sys.path)."""
    os.environ.setdefault("FEEDSTORE_DATA_DIR", str(data_dir))
    sys.path.insert(0, str(ROOT / "feature_repo"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "feature_repo"))


def test_feast_schema_follows_the_spec(tmp_path):
    views = _feature_repo_module("feature_views", tmp_path)
    fv = views.feature_view(EXTENDED_USER, [], views.user_daily_stats_source)
    names = [f.name for f in fv.features]
    assert names == [c.name for c in EXTENDED_USER.columns()]
    assert set(NEW_COLUMNS) <= set(names)
    assert fv.ttl == timedelta(days=29)
    # the shipped views are exactly the spec's
    for view in FEATURE_SPEC.views:
        shipped = getattr(views, view.name)
        assert [f.name for f in shipped.features] == [c.name for c in view.columns()]
        assert shipped.ttl == view.ttl


def test_gate_and_defaults_follow_the_spec():
    checks, rules = check_view(EXTENDED_USER, categories=10)
    assert '"user_impressions_1d" <= "user_impressions_3d"' in checks["_windows_nested"][0]
    assert '"user_long_dwells_3d" <= "user_long_dwells_7d"' in checks["_windows_nested"][0]
    assert '"user_long_dwells_3d" <= "user_clicks_3d"' in checks["_within_bounds"][0]
    assert '"user_ctr_smoothed_3d"' in checks["_min_rate"][0]
    assert any(r.meta["rule"] == "counts_within_bounds" for r in rules)
    d = defaults(EXTENDED, categories=10)
    assert d["user_long_dwells_3d"] == 0 and d["user_ctr_smoothed_3d"] == 0.1 and d["user_dwell_mean_3d"] == 0.0
    assert d["user_category_affinity_for_item"] == pytest.approx(0.1) and d["item_category"] == -1
    assert "user_category_affinity" not in d and "user_signup_timestamp" not in d


def test_computation_follows_the_spec_and_agrees_with_brute_force(stats_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(stats_data, data, ignore=shutil.ignore_patterns("offline"))
    cfg = pipeline_config(data)
    with compute_stats(cfg, spec=EXTENDED) as staged:
        validate_stats(cfg, staged.days, root=staged.root, spec=EXTENDED)  # the derived gate passes
        staged.publish()
    rows = ds.dataset(data / "offline" / "user_daily_stats", format="parquet", partitioning="hive").to_table()
    assert rows.schema.remove_metadata().names == [*offline_schema(EXTENDED_USER).names, "date"]
    rows = rows.to_pandas()
    events = ds.dataset(data / "validated" / "interactions", format="parquet").to_table().to_pandas()
    users = pd.read_parquet(data / "validated" / "users.parquet").set_index("user_id").signup_date
    extra = {"long_dwells": lambda e: (e.click == 1) & (e.dwell_time > 30)}
    checked = 0
    for day in pd.date_range(cfg.generation.start, cfg.generation.end, freq="5D", tz="UTC"):
        at = day + timedelta(days=1)
        served = latest_row(rows, ["user_id"], at, EXTENDED_USER.ttl)
        existing = users[users < at].index
        want = windowed_stats(events, "user_id", "user", at, existing, windows=(1, 3, 7, 30), extra_counts=extra)
        got = served.loc[existing, want.columns]
        ints = [c for c in want.columns if re.search(r"_(impressions|clicks|likes|shares|long_dwells)_", c)]
        assert set(NEW_COLUMNS) & set(want.columns) == set(NEW_COLUMNS)
        np.testing.assert_array_equal(got[ints].to_numpy(np.int64), want[ints].to_numpy(np.int64), err_msg=str(at))
        floats = [c for c in want.columns if c not in ints]
        np.testing.assert_allclose(got[floats].to_numpy(float), want[floats].to_numpy(float), rtol=1e-12,
                                   atol=1e-12, err_msg=str(at))
        checked += len(existing)
    assert checked > 2_000


def _view_rows(data_dir: Path, view) -> pd.DataFrame:
    frame = ds.dataset(Catalog(data_dir).view(view.name), format="parquet", partitioning="hive").to_table().to_pandas()
    return frame.assign(date=frame.date.astype(str)).sort_values([*view.keys, "event_timestamp"]).reset_index(drop=True)


def test_daily_runs_follow_the_spec_and_equal_its_full_recompute(stats_data, tmp_path):
    """The incremental path (tiles, lifetime state, pair base) is compiled from the spec too: under the extended
    spec, a full run through one day and then daily runs as the next days arrive give every table of a full
    recompute of the extended spec over all those days, bit for bit."""
    inc, full, holding = tmp_path / "inc", tmp_path / "full", tmp_path / "holding"
    for d in (inc, full):
        shutil.copytree(stats_data, d, ignore=shutil.ignore_patterns("offline", "intermediate"))
    cut, days = date(2024, 3, 14), [date(2024, 3, 15), date(2024, 3, 16), date(2024, 3, 17)]
    holding.mkdir()
    for part in Catalog(inc).validated_interactions.glob("date=*"):  # the days after the cut arrive one by one
        if date.fromisoformat(part.name.split("=")[1]) > cut:
            shutil.move(part, holding / part.name)
    cfg = pipeline_config(inc)
    with compute_stats(cfg, spec=EXTENDED) as staged:
        staged.publish()
    for day in days:
        shutil.move(holding / f"date={day}", Catalog(inc).validated_interactions / f"date={day}")
        with update_stats(cfg, day, day, spec=EXTENDED) as staged:
            validate_stats(cfg, staged.days, root=staged.root, spec=EXTENDED)
            staged.publish()
    for part in Catalog(full).validated_interactions.glob("date=*"):
        if date.fromisoformat(part.name.split("=")[1]) > days[-1]:
            shutil.rmtree(part)
    with compute_stats(pipeline_config(full), spec=EXTENDED) as staged:
        staged.publish()
    for view in EXTENDED.views:
        got, want = _view_rows(inc, view), _view_rows(full, view)
        assert set(NEW_COLUMNS) <= set(got.columns) or view.name != EXTENDED_USER.name
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=view.name)


def test_the_shells_lookup_table_shows_features_of_the_service():
    from feedstore.shell.cli import _LOOKUP_COLUMNS

    service = {c.name for c in FEATURE_SPEC.service_columns()}
    assert {feature for _, feature in _LOOKUP_COLUMNS} <= service


def test_readme_feature_table_is_the_specs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- feature-table:start.*?-->\n(.*?)\n<!-- feature-table:end -->", readme, re.S)
    assert block, "README lacks the generated feature table markers"
    assert block.group(1).strip() == markdown_table().strip(), (
        "README feature table differs from the spec; paste feedstore.core.spec.markdown_table()")
