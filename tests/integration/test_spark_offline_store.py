"""The Spark offline store (feedstore.plugins.spark_offline_store) against the DuckDB ASOF store and brute-force
references, cell by cell: on small adversarial data (the ASOF store's tests' builders plus the cases that break
Feast's own Spark store: composite keys whose concatenations collide, duplicate feature rows at one key and
timestamp, rows exactly at and just past the ttl, rows before any feature row, a latest feature row whose values
are null, a non-UTC Spark session) and on the real feature_repo with the feed_ranking_v1 service (on-demand
views included), through FeatureStore.get_historical_features. One local[2] Spark session serves every test."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from feedstore.core.contracts import FEATURE_TS_PREFIX
from feedstore.core.errors import EntityDataFrameError
from tests.conftest import ROOT, pipeline_config
from tests.integration.test_offline_store import REPO, T0, TTL, YAML, _entity_rows, _feature_rows, brute_force

SPARK_STORE = "feedstore.plugins.spark_offline_store.SparkPitOfflineStore"
ASOF_STORE = "feedstore.plugins.asof_duckdb.AsofDuckDBOfflineStore"


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for the whole test run (the store's get_spark returns it)."""
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("Spark needs Java (no `java` on PATH, JAVA_HOME unset)")
    pytest.importorskip("pyspark", reason="pyspark not installed (pip install -e '.[spark]')")
    from feedstore.core.spark import SparkConfig, get_spark, stop_spark

    session = get_spark(SparkConfig(master="local[2]", shuffle_partitions=2))
    yield session
    stop_spark()


def _cells_equal(got: pa.Table, want: pa.Table, columns: list[str] | None = None) -> None:
    """Every cell equal (NaN equals NaN; lists element-wise), column by column."""
    columns = columns or want.column_names
    assert got.num_rows == want.num_rows
    for col in columns:
        g, w = got.column(col).to_pylist(), want.column(col).to_pylist()
        same = [a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
                for a, b in zip(g, w, strict=True)]
        if not all(same):
            bad = same.index(False)
            raise AssertionError(f"{col}: row {bad} is {g[bad]!r}, expected {w[bad]!r} ({same.count(False)} differ)")


# ------------------------------------------------------------------------------------------ small adversarial data

COLLISION_TS = T0 + pd.Timedelta(hours=3)


def _adversarial(rng) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    user, pair = _feature_rows(rng)
    extra = pd.DataFrame({
        # CONCAT(user_id, item_id, ts) is the same string for (1, 12) and (11, 2): Feast's Spark store mixes them
        "user_id": [1, 11, 2, 2], "item_id": [12, 2, 3, 3],
        "ts": [COLLISION_TS, COLLISION_TS, T0 + pd.Timedelta(hours=9), T0 + pd.Timedelta(hours=10)],
        # the latest row of (2, 3) has a null value: it still wins (the row is picked, not the value)
        "raw_score": [111.0, 222.0, 5.0, None]})
    pair = pd.concat([pair[~((pair.user_id == 2) & (pair.item_id == 3))], extra], ignore_index=True)
    entities = _entity_rows(rng, user)
    tz = entities.event_timestamp.dt.tz
    more = pd.DataFrame({"user_id": [1, 11, 1, 11, 2, 11], "item_id": [12, 2, 12, 2, 3, 12],
                         "event_timestamp": [COLLISION_TS, COLLISION_TS, COLLISION_TS + pd.Timedelta(minutes=1),
                                             COLLISION_TS - pd.Timedelta(microseconds=1),
                                             T0 + pd.Timedelta(hours=10, minutes=30), COLLISION_TS]})
    more["event_timestamp"] = more.event_timestamp.dt.tz_convert(tz)
    more["row_tag"] = np.arange(len(entities), len(entities) + len(more))
    return user, pair, pd.concat([entities, more], ignore_index=True)


def _apply(repo: Path, yaml: Path, env: dict[str, str]) -> None:
    res = subprocess.run([str(Path(sys.executable).with_name("feast")), "-c", str(repo), "-f", str(yaml), "apply"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.fixture(scope="module")
def tiny(spark, tmp_path_factory):
    from feast import FeatureStore

    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("tiny_spark")
    user, pair, entities = _adversarial(rng)
    for name, frame in (("user", user), ("pair", pair)):  # Spark 4.3 cannot read nanosecond Parquet timestamps
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), d / f"{name}.parquet", coerce_timestamps="us")
    (d / "repo").mkdir()
    (d / "repo" / "defs.py").write_text(textwrap.dedent(REPO))
    os.environ["TINY_DATA"] = str(d)
    env = {**os.environ}
    stores = {}
    for name, offline in (("spark", SPARK_STORE), ("asof", ASOF_STORE)):
        yaml = d / "repo" / f"{name}.yaml"
        yaml.write_text(YAML.format(path=d, name=name, offline=offline))
        _apply(d / "repo", yaml, env)  # Feast accepts FileSource under the Spark store
        stores[name] = FeatureStore(repo_path=str(d / "repo"), fs_yaml_file=yaml)
    return stores, user, pair, entities


def _arrow(store, entities, full=False) -> pa.Table:
    return store.get_historical_features(entity_df=entities, features=store.get_feature_service("svc"),
                                         full_feature_names=full).to_arrow()


def test_equals_asof_store_and_brute_force_on_adversarial_data(tiny):
    stores, user, pair, entities = tiny
    got = _arrow(stores["spark"], entities)
    want = _arrow(stores["asof"], entities)
    assert got.column_names == want.column_names
    assert got.column("row_tag").to_pylist() == entities.row_tag.tolist()  # entity order, duplicates kept
    _cells_equal(got, want)
    assert got.schema.equals(want.schema)
    brute = pa.Table.from_pandas(brute_force(entities, user, pair).astype(float), preserve_index=False)
    _cells_equal(pa.table({c: got.column(c).cast(pa.float64()) for c in ("a", "b", "score")}), brute,
                 ["a", "b", "score"])
    # the edge cases are really in there
    frame = got.to_pandas().set_index("row_tag")
    n = len(entities) - 6  # the row_tag of the first row added by _adversarial
    assert frame.loc[n, "score"] == 111.0 and frame.loc[n + 1, "score"] == 222.0  # (1, 12) vs (11, 2) at one ts
    assert frame.loc[n + 2, "score"] == 111.0 and np.isnan(frame.loc[n + 3, "score"])  # just before: none yet
    assert np.isnan(frame.loc[n + 4, "score"])  # the latest row's null value, not the older 5.0
    assert np.isnan(frame.loc[n + 5, "score"])  # (11, 12): no such pair
    assert (frame.a >= 5000).any()  # ties on (user, ts) resolved by the created timestamp
    assert frame.a.isna().sum() > 10 and frame.a.notna().sum() > 100


def test_ttl_boundary_and_rows_before_any_feature_row(tiny):
    """An entity row exactly ttl after a feature row still sees it; 1 us later it does not (unless a newer row
    exists), and rows a day before all data are null: checked directly, not only against the references."""
    stores, user, _, _ = tiny
    last = user.sort_values(["ts", "created"]).groupby("user_id").tail(1)  # each user's newest row
    probe = pd.concat([
        last[["user_id", "ts"]].assign(kind="at_ttl", event_timestamp=last.ts + TTL),
        last[["user_id", "ts"]].assign(kind="past_ttl", event_timestamp=last.ts + TTL + pd.Timedelta(microseconds=1)),
        last[["user_id", "ts"]].assign(kind="before", event_timestamp=T0 - pd.Timedelta(days=1)),
    ], ignore_index=True).assign(item_id=0)
    got = stores["spark"].get_historical_features(
        entity_df=probe[["user_id", "item_id", "event_timestamp", "kind"]],
        features=["user_fv:a"]).to_df()
    want = last.set_index("user_id").a
    at = got[got.kind == "at_ttl"]
    assert (at.a.to_numpy() == want.loc[at.user_id].to_numpy()).all()
    assert got[got.kind != "at_ttl"].a.isna().all()


def test_non_utc_spark_session_time_zone(tiny, spark):
    """A session in America/New_York changes nothing: timestamps are compared as instants (Feast's Spark store
    compares naive strings in the session zone and drops the latest row or the row at the ttl)."""
    stores, _, _, entities = tiny
    want = _arrow(stores["asof"], entities, full=True)
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        got = _arrow(stores["spark"], entities, full=True)
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert {"user_fv__a", "user_fv__b", "pair_fv__score"} <= set(got.column_names)
    _cells_equal(got, want)


def test_sql_entity_rows_batches_feature_ts_and_persist(tiny, tmp_path):
    """DuckDB SQL entity rows (materialized for Spark) in the query's order; iter_batches streams exactly what
    to_arrow returns, at most batch_rows at a time, with FEATURE_TS columns equal to the ASOF store's; persist."""
    stores, _, _, entities = tiny
    path = tmp_path / "entities.parquet"
    pq.write_table(pa.Table.from_pandas(entities, preserve_index=False), path)
    sql = f"SELECT * FROM read_parquet('{path}') ORDER BY row_tag DESC"
    jobs = {name: s.get_historical_features(entity_df=sql, features=s.get_feature_service("svc"))
            for name, s in stores.items()}
    want = jobs["asof"].to_arrow()
    got = jobs["spark"].to_arrow()
    assert got.column("row_tag").to_pylist() == sorted(entities.row_tag, reverse=True)
    _cells_equal(got, want)
    assert jobs["spark"].metadata.min_event_timestamp == entities.event_timestamp.min()

    batches = list(jobs["spark"].iter_batches(batch_rows=37, keep_feature_ts=True))
    assert [b.num_rows for b in batches[:-1]] == [37] * (len(batches) - 1) and 0 < batches[-1].num_rows <= 37
    streamed = pa.concat_tables(batches)
    reference = pa.concat_tables(list(jobs["asof"].iter_batches(batch_rows=1000, keep_feature_ts=True)))
    assert streamed.column_names == reference.column_names
    _cells_equal(streamed, reference)
    ts = streamed.column("event_timestamp")
    stamps = [c for c in streamed.column_names if c.startswith(FEATURE_TS_PREFIX)]
    assert len(stamps) == 2
    for col in stamps:  # no feature row from the future
        matched = streamed.column(col)
        assert pc.all(pc.or_kleene(pc.is_null(matched), pc.less_equal(matched, ts))).as_py()

    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    jobs["spark"].persist(SavedDatasetFileStorage(path=str(tmp_path / "saved.parquet")))
    _cells_equal(pq.read_table(tmp_path / "saved.parquet"), want)
    assert not list(tmp_path.glob("saved.parquet.partial-*"))


def test_missing_entity_column_is_a_clear_error(tiny):
    stores, _, _, entities = tiny
    with pytest.raises(EntityDataFrameError, match="missing column 'item_id'"):
        _arrow(stores["spark"], entities.drop(columns="item_id"))


def test_materialize_file_sources_through_the_spark_store(tiny):
    """Feast's Spark store only pulls SparkSource; ours materializes FileSource views (via Feast's DuckDB reader)
    into the same online values as the ASOF store."""
    stores, user, pair, _ = tiny
    end = T0 + timedelta(hours=23)
    rows = pd.DataFrame({"user_id": np.repeat(np.arange(8), 5), "item_id": np.tile(np.arange(5), 8)})
    online = {}
    for name, store in stores.items():
        store.materialize(start_date=(T0 - timedelta(days=1)).to_pydatetime(), end_date=end.to_pydatetime())
        online[name] = store.get_online_features(features=store.get_feature_service("svc"),
                                                 entity_rows=rows.to_dict("records")).to_df()
    pd.testing.assert_frame_equal(online["spark"], online["asof"])
    assert online["spark"].a.notna().sum() > 0


# ------------------------------------------------------------------------------------------ the real feature_repo


@pytest.fixture(scope="module")
def real(spark, stats_data, tmp_path_factory):
    """The pipeline's data (generate -> validate -> stats), feature_repo applied with the sqlite yaml (ASOF
    store) and with feature_store.spark.yaml."""
    from feast import FeatureStore

    from feedstore.core.feast_repo import REPO_DIR, feature_store
    from feedstore.serving.store import apply_definitions

    d = tmp_path_factory.mktemp("spark_real") / "data"
    shutil.copytree(stats_data, d)
    cfg = pipeline_config(d)
    apply_definitions(cfg, "sqlite")
    asof = feature_store(cfg, "sqlite")
    spark_yaml = ROOT / "feature_repo" / "feature_store.spark.yaml"
    _apply(REPO_DIR, spark_yaml, {**os.environ, "FEEDSTORE_DATA_DIR": str(d)})
    return d, asof, FeatureStore(repo_path=str(REPO_DIR), fs_yaml_file=spark_yaml)


def _impressions_sql(d: Path) -> str:
    """The training-set builder's kind of entity rows: DuckDB SQL over the validated Parquet."""
    return (f"SELECT user_id, item_id, event_timestamp, event_timestamp AS request_ts, device, click, interaction_id "
            f"FROM read_parquet('{d}/validated/interactions/**/*.parquet', hive_partitioning = false) "
            f"ORDER BY event_timestamp, interaction_id")


def _latest(rows: pd.DataFrame, keys: list[str], entities: pd.DataFrame, ttl: timedelta) -> pd.DataFrame:
    """Brute force: per entity row, the view's latest row stamped in [t - ttl, t] (null if none)."""
    out = []
    by_key = dict(tuple(rows.groupby(keys if len(keys) > 1 else keys[0])))
    for e in entities.itertuples(index=False):
        key = tuple(getattr(e, k) for k in keys)
        cand = by_key.get(key if len(keys) > 1 else key[0])
        if cand is not None:
            cand = cand[(cand.event_timestamp <= e.event_timestamp) & (cand.event_timestamp >= e.event_timestamp - ttl)]
        out.append(cand.sort_values("event_timestamp").iloc[-1] if cand is not None and len(cand) else None)
    columns = [c for c in rows.columns if c not in (*keys, "event_timestamp")]
    return pd.DataFrame([{c: (r[c] if r is not None else None) for c in columns} for r in out])


def test_feed_ranking_v1_equals_asof_store_and_brute_force(real):
    """Every cell of feed_ranking_v1 (three views, two on-demand views) equal to the ASOF store's, for the
    builder's SQL entity rows and for a DataFrame; a sample checked against a brute-force join, including
    the on-demand outputs recomputed by hand."""
    d, asof, spark_store = real
    service = "feed_ranking_v1"
    sql = _impressions_sql(d)
    want = asof.get_historical_features(entity_df=sql, features=asof.get_feature_service(service)).to_arrow()
    job = spark_store.get_historical_features(entity_df=sql, features=spark_store.get_feature_service(service))
    got = job.to_arrow()
    assert got.num_rows > 10_000 and got.column_names == want.column_names
    assert got.schema.equals(want.schema), (got.schema, want.schema)
    _cells_equal(got, want)
    _cells_equal(pa.concat_tables(list(job.iter_batches(batch_rows=4_000))), got)

    picked = got.take(np.random.default_rng(3).choice(got.num_rows, 150, replace=False))
    frame = spark_store.get_historical_features(
        entity_df=picked.select(["user_id", "item_id", "event_timestamp", "request_ts", "device"]).to_pandas(),
        features=spark_store.get_feature_service(service)).to_arrow()
    _cells_equal(frame, picked.drop_columns(["click", "interaction_id"]))
    sample = picked.to_pandas()

    def view(name: str) -> pd.DataFrame:
        return ds.dataset(d / "offline" / name, format="parquet").to_table().to_pandas()

    entities = sample[["user_id", "item_id", "event_timestamp"]]
    ttl = {v: spark_store.get_feature_view(v).ttl for v in ("user_daily_stats", "user_item_daily_stats")}
    user = _latest(view("user_daily_stats"), ["user_id"], entities, ttl["user_daily_stats"])
    item = _latest(view("item_daily_stats"), ["item_id"], entities, ttl["user_daily_stats"])
    pair = _latest(view("user_item_daily_stats"), ["user_id", "item_id"], entities, ttl["user_item_daily_stats"])
    for brute in (user, item, pair):
        for col in brute.columns:
            g, w = sample[col].tolist(), brute[col].tolist()
            for a, b in zip(g, w, strict=True):
                if isinstance(b, np.ndarray | list):
                    assert list(a) == list(b), col
                else:
                    assert (pd.isna(a) and pd.isna(b)) or a == b, (col, a, b)
    assert user.user_clicks_7d.notna().sum() > 50 and pair.user_item_impressions.notna().sum() > 0
    # on-demand outputs by hand
    now = pd.to_datetime(sample.request_ts, utc=True)
    np.testing.assert_array_equal(sample.hour_of_day, now.dt.hour)
    np.testing.assert_array_equal(sample.device_mobile, (sample.device == "mobile").astype(int))
    signup = pd.to_datetime(user.user_signup_timestamp, utc=True)
    np.testing.assert_allclose(sample.user_days_since_signup, (now - signup).dt.total_seconds() / 86400.0,
                               rtol=0, atol=1e-9)
    affinity = [a[int(c)] if a is not None and not pd.isna(c) else np.nan
                for a, c in zip(user.user_category_affinity, item.item_category, strict=True)]
    np.testing.assert_array_equal(sample.user_category_affinity_for_item.astype(float),
                                  np.asarray(affinity, dtype=np.float32).astype(float))


def test_real_repo_time_range_subset_and_full_names(real):
    """A feature subset with full names, over one week of entity rows given as a DataFrame (naive timestamps =
    UTC), equal to the ASOF store's."""
    d, asof, spark_store = real
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(f"SELECT * FROM ({_impressions_sql(d)}) WHERE event_timestamp < TIMESTAMPTZ '2024-03-08' "
                       "AND event_timestamp >= TIMESTAMPTZ '2024-03-01'").df()
    rows["event_timestamp"] = rows.event_timestamp.dt.tz_convert(None)
    features = ["user_daily_stats:user_clicks_7d", "item_daily_stats:item_category",
                "user_item_daily_stats:user_item_clicks", "user_item_context:item_age_days"]
    tables = [s.get_historical_features(entity_df=rows, features=features, full_feature_names=True).to_arrow()
              for s in (spark_store, asof)]
    assert "user_item_daily_stats__user_item_clicks" in tables[0].column_names
    assert tables[0].num_rows == len(rows) > 100
    _cells_equal(*tables)
    assert datetime(2024, 3, 1, tzinfo=timezone.utc) <= tables[0].column("event_timestamp").to_pylist()[0]
