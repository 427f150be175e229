"""Feast for real: apply, materialize to a throwaway Redis and to SQLite, online lookups, HTTP, skew, Redis down."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import requests

from feedstore.core.errors import ServingError
from feedstore.core.feast_repo import REPO_DIR, feature_store
from feedstore.serving.materialize import materialize_online
from feedstore.serving.ranking import defaults, get_ranking_features
from feedstore.serving.request import RankingContext
from feedstore.serving.skew import check_skew
from feedstore.serving.store import apply_definitions, latest_snapshot
from tests.conftest import _free_port, pipeline_config
from tests.reference import latest_row


@pytest.fixture(scope="module")
def served(stats_data, tmp_path_factory, redis_db):
    """A copy of the pipeline data, applied and materialized into both online stores."""
    d = tmp_path_factory.mktemp("served") / "data"
    shutil.copytree(stats_data, d)
    os.environ["REDIS_CONNECTION_STRING"] = redis_db
    cfg = pipeline_config(d)
    results = {}
    for store in ("sqlite", "redis"):
        apply_definitions(cfg, store)
        results[store] = materialize_online(cfg, store)
    return d, cfg, results


def offline_rows(d: Path, view: str) -> pd.DataFrame:
    return ds.dataset(d / "offline" / view, format="parquet", partitioning="hive").to_table().to_pandas()


def test_feast_apply_on_a_temp_copy_of_the_repo(stats_data, tmp_path):
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(stats_data / "offline", tmp_path / "data" / "offline")  # what `feedstore stats` leaves
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(tmp_path / "data")}
    res = subprocess.run([str(Path(sys.executable).with_name("feast")), "-c", str(repo), "-f",
                          str(repo / "feature_store.sqlite.yaml"), "apply"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    for line in ("Created entity user", "Created entity item", "Created feature view user_daily_stats",
                 "Created feature view item_daily_stats", "Created feature view user_item_daily_stats",
                 "Created on demand feature view request_context", "Created on demand feature view user_item_context",
                 "Created feature service feed_ranking_v1"):
        assert line in res.stdout
    assert (tmp_path / "data" / "feast" / "registry.sqlite.db").exists()


@pytest.mark.parametrize("store_name", ["sqlite", "redis"])
def test_materialize_then_lookup_round_trip(served, store_name):
    d, cfg, results = served
    end = results[store_name].end
    assert end == latest_snapshot(cfg)
    users = offline_rows(d, "user_daily_stats")
    items = offline_rows(d, "item_daily_stats")
    pairs = offline_rows(d, "user_item_daily_stats")
    store = feature_store(cfg, store_name)
    materialized = {"user_daily_stats": len(latest_row(users, ["user_id"], end, timedelta(days=29))),
                    "item_daily_stats": len(latest_row(items, ["item_id"], end, timedelta(days=29))),
                    "user_item_daily_stats": len(latest_row(pairs, ["user_id", "item_id"], end, timedelta(days=30)))}
    assert results[store_name].entities == materialized
    at = end + timedelta(hours=7)  # what a point-in-time join at the request time returns
    u_latest = latest_row(users, ["user_id"], at, timedelta(days=29))
    i_latest = latest_row(items, ["item_id"], at, timedelta(days=29))
    p_latest = latest_row(pairs, ["user_id", "item_id"], at, timedelta(days=30))
    rng = np.random.default_rng(0)
    for uid in rng.choice(u_latest.index, 5, replace=False):
        cand = [int(i) for i in rng.choice(i_latest.index, 20, replace=False)]
        own = [int(i) for u, i in p_latest.index if u == uid][:5]
        ctx = RankingContext(request_ts=at, device="tablet")
        got = get_ranking_features(store, int(uid), cand + own, ctx)
        assert got.item_id.tolist() == cand + own  # one row per candidate, in the order given
        assert not got.user_missing.any() and not got.item_missing.any()
        for col in ("user_clicks_7d", "user_impressions_lifetime", "user_ctr_smoothed_30d", "user_dwell_mean_1d"):
            assert (got[col] == u_latest.at[uid, col]).all(), col
        for col in ("item_impressions_30d", "item_log_popularity_7d", "item_category"):
            np.testing.assert_array_equal(got[col].to_numpy(), i_latest.loc[got.item_id, col].to_numpy())
        for k, iid in enumerate(own):
            row = got.iloc[len(cand) + k]
            assert row.user_item_impressions == p_latest.at[(uid, iid), "user_item_impressions"]
            assert not row.user_item_missing
        # request-time features
        assert (got.hour_of_day == 7).all() and (got.device_tablet == 1).all() and (got.device_mobile == 0).all()
        age = (ctx.request_ts - i_latest.loc[got.item_id, "item_creation_timestamp"]).dt.total_seconds() / 86400
        np.testing.assert_allclose(got.item_age_days.to_numpy(), age.to_numpy())
        affinity = np.array(u_latest.at[uid, "user_category_affinity"])
        np.testing.assert_allclose(got.user_category_affinity_for_item.to_numpy(),
                                   affinity[got.item_category.to_numpy()], rtol=1e-6)
        # feature ages: the request is 7 h after the snapshot stamp
        assert (got.item_daily_stats_age_seconds >= 7 * 3600).all()


@pytest.mark.parametrize("store_name", ["sqlite", "redis"])
def test_cold_start_entities_are_flagged_and_filled(served, store_name):
    d, cfg, results = served
    store = feature_store(cfg, store_name)
    end = results[store_name].end
    got = get_ranking_features(store, 10**9, [10**9, 0], RankingContext(end), fill=defaults(cfg))
    assert got.user_missing.all()
    assert got.item_missing.tolist() == [True, False]
    assert (got.user_clicks_7d == 0).all() and (got.user_ctr_smoothed_7d == defaults(cfg)["user_ctr_smoothed_7d"]).all()
    assert got.item_impressions_lifetime.iloc[0] == 0 and got.item_category.iloc[0] == -1
    assert np.isnan(got.item_age_days.iloc[0])


@pytest.mark.parametrize("store_name", ["sqlite", "redis"])
def test_no_training_serving_skew(served, store_name):
    _, cfg, _ = served
    report = check_skew(cfg, store_name, sample=120)
    assert report.rows == 120 and report.features > 60
    assert report.mismatches == []


def test_cli_lookup_prints_json(served):
    d, _, results = served
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(d)}
    env.pop("FEEDSTORE_CONFIG", None)
    res = subprocess.run([sys.executable, "-m", "feedstore", "--log-level", "WARNING", "lookup", "--user", "1",
                          "--items", "1,2,999999999", "--device", "desktop", "--at",
                          results["sqlite"].end.strftime("%Y-%m-%dT%H:%M:%S"), "--online-store", "sqlite"],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert [c["item_id"] for c in out["candidates"]] == [1, 2, 999999999]
    assert out["missing_items"] == [999999999]
    assert out["candidates"][0]["features"]["device_desktop"] == 1
    assert set(out["candidates"][0]["feature_age_seconds"]) == {"user_daily_stats", "item_daily_stats",
                                                                "user_item_daily_stats"}
    assert len(out["candidates"][0]["features"]) > 60


def test_feast_serve_http_get_online_features(served, redis_db):
    d, cfg, results = served
    port = _free_port()
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(d), "REDIS_CONNECTION_STRING": redis_db}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("feast")), "-c", str(REPO_DIR), "serve", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600  # a hang guard for a loaded machine, not a timing check
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("feast serve did not start: " + (proc.stderr.read() if proc.poll() else "")
                                         ) from None
                time.sleep(0.3)
        end = results["redis"].end
        body = {"feature_service": "feed_ranking_v1",
                "entities": {"user_id": [1, 1], "item_id": [1, 2], "request_ts": [int(end.timestamp())] * 2,
                             "device": ["mobile", "tablet"]}}
        r = requests.post(f"http://127.0.0.1:{port}/get-online-features", json=body, timeout=300)
        assert r.status_code == 200, r.text[:500]
        data = r.json()
        names = data["metadata"]["feature_names"]
        values = {n: res["values"] for n, res in zip(names, data["results"], strict=True)}
        local = get_ranking_features(feature_store(cfg, "redis"), 1, [1, 2], RankingContext(end, "mobile"))
        assert values["user_clicks_lifetime"] == local.user_clicks_lifetime.tolist()
        assert values["item_impressions_30d"] == local.item_impressions_30d.tolist()
        assert values["device_tablet"] == [0, 1]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_redis_down_is_a_clear_error_not_a_hang(served, monkeypatch):
    _, cfg, _ = served
    monkeypatch.setenv("REDIS_CONNECTION_STRING", f"127.0.0.1:{_free_port()}")
    with pytest.raises(ServingError, match="cannot reach Redis at 127.0.0.1"):
        feature_store(cfg, "redis")  # fails fast: bounded by the probe's timeout, not asserted as a time
    d = cfg.data_dir
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(d)}
    res = subprocess.run([sys.executable, "-m", "feedstore", "lookup", "--user", "1", "--items", "1",
                          "--online-store", "redis"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 5 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("feedstore: error: cannot reach Redis")


def test_lookup_before_apply_is_a_clear_error(tmp_path):
    with pytest.raises(ServingError, match="no Feast registry"):
        feature_store(pipeline_config(tmp_path), "sqlite")


@pytest.mark.parametrize("hours_after", [0, 9, 24 * 40])
def test_fast_redis_path_equals_feast_get_online_features(served, hours_after):
    """OnlineRanker (direct Redis reads) returns exactly Feast's answer, including cold start and expired rows."""
    _, cfg, results = served
    store = feature_store(cfg, "redis")
    rng = np.random.default_rng(hours_after)
    ctx = RankingContext(results["redis"].end + timedelta(hours=hours_after), device="desktop")
    for user in [int(u) for u in rng.integers(0, 400, 6)] + [10**9]:
        items = [int(i) for i in rng.choice(1500, 40, replace=False)] + [10**9, 3, 3]
        fast = get_ranking_features(store, user, items, ctx)
        slow = get_ranking_features(store, user, items, ctx, fast=False)
        assert list(fast.columns) == list(slow.columns) or set(fast.columns) == set(slow.columns)
        for col in slow.columns:
            a, b = fast[col].tolist(), slow[col].tolist()
            for x, y in zip(a, b, strict=True):
                if isinstance(x, (list, np.ndarray)) or isinstance(y, (list, np.ndarray)):
                    assert x is not None and y is not None, col
                    np.testing.assert_allclose(x, y, rtol=1e-7, err_msg=col)
                elif pd.isna(x) or pd.isna(y):
                    assert pd.isna(x) and pd.isna(y), (col, x, y)
                else:
                    assert x == pytest.approx(y, rel=1e-12, abs=1e-9) if isinstance(x, float) else x == y, (col, x, y)
    if hours_after > 24 * 30:  # past every ttl: everything is missing on both paths
        assert fast.user_missing.all() and fast.item_missing.all()


def test_feasts_own_materialize_commands_as_the_readme_shows(served, tmp_path):
    """`feast -c feature_repo -f ... materialize START END` and `materialize-incremental END` work as documented."""
    d, cfg, results = served
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(d)}
    feast = str(Path(sys.executable).with_name("feast"))
    yaml = str(REPO_DIR / "feature_store.sqlite.yaml")
    end = results["sqlite"].end
    start = end - timedelta(days=29)
    fmt = "%Y-%m-%dT%H:%M:%S"
    for args in (["materialize", start.strftime(fmt), end.strftime(fmt)],
                 ["materialize-incremental", end.strftime(fmt)]):
        res = subprocess.run([feast, "-c", str(REPO_DIR), "-f", yaml, *args], env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "Materializing" in res.stdout
    assert check_skew(cfg, "sqlite", sample=40).mismatches == []


def test_an_older_materialization_never_rolls_the_online_store_back(served):
    """A backfill of an older day must not overwrite newer online rows (online stores write whatever they get)."""
    _, cfg, results = served
    result = materialize_online(cfg, "sqlite", end=results["sqlite"].end - timedelta(days=20))
    assert result.entities == {}
    assert check_skew(cfg, "sqlite", sample=60).mismatches == []  # still consistent at the newest materialization


@pytest.mark.parametrize("store", ["sqlite", "redis-spark"])
def test_feedstore_ui_serves_the_applied_registry(store, stats_data, tmp_path, request, monkeypatch):
    """`feedstore ui` picks the store that was applied (only `store`: SQLite, or the Spark store the config does not
    name) and Feast's UI lists its views; asking for a store nobody applied is a one-line error (exit 5), not an
    empty UI."""
    if store == "redis-spark":
        from tests.conftest import require_spark

        require_spark()
        monkeypatch.setenv("REDIS_CONNECTION_STRING", request.getfixturevalue("redis_db"))
    d = tmp_path / "data"
    shutil.copytree(stats_data, d)
    apply_definitions(pipeline_config(d), store)
    env = {k: v for k, v in os.environ.items()
           if k not in ("FEEDSTORE_CONFIG", "FEEDSTORE_DATA_DIR", "FEEDSTORE_REGISTRY_URL")}
    feedstore = [sys.executable, "-m", "feedstore", "--data-dir", str(d)]
    res = subprocess.run([*feedstore, "ui", "--online-store", "redis"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 5 and "no Feast registry for the redis store" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and f"(applied: {store})" in res.stderr
    port = _free_port()
    proc = subprocess.Popen([*feedstore, "ui", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError("feedstore ui did not start: " + (proc.stderr.read() if proc.poll() else ""))
            time.sleep(0.5)
        projects = requests.get(f"http://127.0.0.1:{port}/projects-list.json", timeout=30).json()["projects"]
        assert [p["id"] for p in projects] == ["feedstore"]
        views = requests.get(f"http://127.0.0.1:{port}/api/v1/feature_views", params={"project": "feedstore"},
                             timeout=30).json()["featureViews"]
        assert {v["spec"]["name"] for v in views} >= {"user_daily_stats", "item_daily_stats", "user_item_daily_stats"}
        assert "<html" in requests.get(f"http://127.0.0.1:{port}/", timeout=30).text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    if store != "sqlite":  # the config names SQLite, which nobody applied: the UI said which registry it shows
        assert f"showing the {store} registry instead" in proc.stderr.read()
