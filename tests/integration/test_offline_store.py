"""The ASOF offline store against a brute-force point-in-time reference and Feast's stock duckdb store,
on small random data built to hit every edge: timestamp ties (created-timestamp tie-break), entity rows before
any feature row, rows exactly at and just past the ttl, duplicate entity rows, many items per user per
timestamp, and a non-UTC time zone in the input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedstore.core.errors import EntityDataFrameError

TTL = timedelta(hours=2)
T0 = pd.Timestamp("2024-05-01 00:00:00", tz="UTC")

REPO = '''
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64
import os

DATA = os.environ["TINY_DATA"]
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
user_src = FileSource(name="user_src", path=f"{DATA}/user.parquet", timestamp_field="ts",
                      created_timestamp_column="created")
pair_src = FileSource(name="pair_src", path=f"{DATA}/pair.parquet", timestamp_field="ts",
                      field_mapping={"raw_score": "score"})
user_fv = FeatureView(name="user_fv", entities=[user], ttl=timedelta(hours=2), source=user_src,
                      schema=[Field(name="a", dtype=Int64), Field(name="b", dtype=Float64)])
pair_fv = FeatureView(name="pair_fv", entities=[user, item], ttl=timedelta(hours=2), source=pair_src,
                      schema=[Field(name="score", dtype=Float64)])
svc = FeatureService(name="svc", features=[user_fv, pair_fv])
'''

YAML = '''project: tiny
provider: local
registry: {path}/registry_{name}.db
online_store: {{type: sqlite, path: {path}/online_{name}.db}}
offline_store: {{type: {offline}}}
entity_key_serialization_version: 3
'''


def _feature_rows(rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = 600
    user = pd.DataFrame({
        "user_id": rng.integers(0, 8, n),
        "ts": T0 + pd.to_timedelta(rng.integers(0, 24 * 60, n), unit="m"),
        "a": rng.integers(0, 1000, n),
        "b": rng.normal(size=n),
    }).drop_duplicates(["user_id", "ts"])  # only the deliberate ties below share (user_id, ts)
    # exact ties on (user_id, ts): the later created must win
    ties = user.sample(80, random_state=1).copy()
    ties["a"] = ties["a"] + 5000
    user["created"] = user.ts + pd.Timedelta(seconds=1)
    ties["created"] = ties.ts + pd.Timedelta(seconds=30)
    user = pd.concat([user, ties], ignore_index=True)
    pair = pd.DataFrame({
        "user_id": rng.integers(0, 8, n), "item_id": rng.integers(0, 5, n),
        "ts": T0 + pd.to_timedelta(rng.integers(0, 24 * 60, n), unit="m"), "raw_score": rng.normal(size=n),
    }).drop_duplicates(["user_id", "item_id", "ts"])
    return user, pair


def _entity_rows(rng, user: pd.DataFrame) -> pd.DataFrame:
    n = 400
    base = pd.DataFrame({"user_id": rng.integers(0, 9, n), "item_id": rng.integers(0, 6, n),
                         "event_timestamp": T0 + pd.to_timedelta(rng.integers(-120, 26 * 60, n), unit="m")})
    exact = user.sample(40, random_state=2)[["user_id", "ts"]].rename(columns={"ts": "event_timestamp"})
    at_ttl = exact.assign(event_timestamp=exact.event_timestamp + TTL)  # exactly at the ttl: inside
    past_ttl = exact.assign(event_timestamp=exact.event_timestamp + TTL + pd.Timedelta(microseconds=1))
    early = pd.DataFrame({"user_id": [0, 1], "event_timestamp": [T0 - pd.Timedelta(days=1)] * 2})
    feed = pd.DataFrame({"user_id": 3, "item_id": range(5), "event_timestamp": T0 + pd.Timedelta(hours=5)})
    rows = pd.concat([base, exact, at_ttl, past_ttl, early, feed, base.head(30)], ignore_index=True)
    rows["item_id"] = rows["item_id"].fillna(0).astype(np.int64)
    rows["event_timestamp"] = pd.DatetimeIndex(rows.event_timestamp).tz_convert("Asia/Kolkata")  # non-UTC input
    rows["row_tag"] = np.arange(len(rows))
    return rows


def brute_force(entities: pd.DataFrame, user: pd.DataFrame, pair: pd.DataFrame) -> pd.DataFrame:
    """Latest feature row with timestamp <= event time and >= event time - ttl; ties -> latest created."""
    out = []
    for _, e in entities.iterrows():
        t = e.event_timestamp.tz_convert("UTC")
        u = user[(user.user_id == e.user_id) & (user.ts <= t) & (user.ts >= t - TTL)]
        u = u.sort_values(["ts", "created"]).tail(1)
        p = pair[(pair.user_id == e.user_id) & (pair.item_id == e.item_id) & (pair.ts <= t) & (pair.ts >= t - TTL)]
        p = p.sort_values("ts").tail(1)
        out.append({"row_tag": e.row_tag, "a": u.a.iloc[0] if len(u) else None,
                    "b": u.b.iloc[0] if len(u) else None, "score": p.raw_score.iloc[0] if len(p) else None})
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("tiny")
    user, pair = _feature_rows(rng)
    pq.write_table(pa.Table.from_pandas(user, preserve_index=False), d / "user.parquet")
    pq.write_table(pa.Table.from_pandas(pair, preserve_index=False), d / "pair.parquet")
    (d / "repo").mkdir()
    (d / "repo" / "defs.py").write_text(textwrap.dedent(REPO))
    stores = {}
    env = {**os.environ, "TINY_DATA": str(d)}
    os.environ["TINY_DATA"] = str(d)
    from feast import FeatureStore

    for name, offline in (("ours", "feedstore.plugins.asof_duckdb.AsofDuckDBOfflineStore"), ("stock", "duckdb")):
        yaml = d / "repo" / f"{name}.yaml"
        yaml.write_text(YAML.format(path=d, name=name, offline=offline))
        res = subprocess.run([str(Path(sys.executable).with_name("feast")), "-c", str(d / "repo"), "-f", str(yaml),
                              "apply"], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        stores[name] = FeatureStore(repo_path=str(d / "repo"), fs_yaml_file=yaml)
    return stores, user, pair, _entity_rows(rng, user)


def _retrieve(store, entities, full=False):
    return store.get_historical_features(entity_df=entities, features=store.get_feature_service("svc"),
                                         full_feature_names=full).to_df()


def test_equals_brute_force_row_for_row_in_input_order(tiny):
    stores, user, pair, entities = tiny
    got = _retrieve(stores["ours"], entities)
    assert len(got) == len(entities)
    assert got.row_tag.tolist() == entities.row_tag.tolist()  # duplicates kept, input order
    want = brute_force(entities, user, pair)
    for col in ("a", "b", "score"):
        g, w = got[col].astype(float).to_numpy(), want[col].astype(float).to_numpy()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=col)
        np.testing.assert_array_equal(g[~np.isnan(g)], w[~np.isnan(w)], err_msg=col)
    # the edge cases are really in there
    assert got.a.isna().sum() > 10 and got.a.notna().sum() > 100
    assert (got.a >= 5000).sum() > 0  # a tie resolved by the created timestamp


def test_equals_feasts_stock_duckdb_store(tiny):
    stores, _, _, entities = tiny
    ours = _retrieve(stores["ours"], entities).sort_values("row_tag").reset_index(drop=True)
    stock = _retrieve(stores["stock"], entities).sort_values("row_tag").reset_index(drop=True)
    assert len(stock) == len(ours)
    for col in ("a", "b", "score"):
        np.testing.assert_array_equal(ours[col].astype(float).to_numpy(), stock[col].astype(float).to_numpy(),
                                      err_msg=col)


def test_full_feature_names(tiny):
    stores, _, _, entities = tiny
    got = _retrieve(stores["ours"], entities, full=True)
    assert {"user_fv__a", "user_fv__b", "pair_fv__score"} <= set(got.columns)


def test_missing_entity_column_is_a_clear_error(tiny):
    stores, _, _, entities = tiny
    with pytest.raises(EntityDataFrameError, match="missing column 'item_id'"):
        _retrieve(stores["ours"], entities.drop(columns="item_id"))


def test_sql_entity_rows_and_streamed_batches_equal_the_dataframe_result(tiny, tmp_path):
    """Entity rows given as SQL stay in DuckDB (in the query's order); iter_batches and persist stream the same
    rows as to_arrow, in order, at most batch_rows at a time."""
    stores, _, _, entities = tiny
    store = stores["ours"]
    service = store.get_feature_service("svc")
    path = tmp_path / "entities.parquet"
    pq.write_table(pa.Table.from_pandas(entities, preserve_index=False), path)
    want = _retrieve(store, entities.sort_values("row_tag", ascending=False)).reset_index(drop=True)
    sql = f"SELECT * FROM read_parquet('{path}') ORDER BY row_tag DESC"
    job = store.get_historical_features(entity_df=sql, features=service)
    got = job.to_df()
    assert got.row_tag.tolist() == want.row_tag.tolist()
    pd.testing.assert_frame_equal(got[want.columns].reset_index(drop=True), want, check_dtype=False)
    assert job.metadata.min_event_timestamp == entities.event_timestamp.min()

    batches = list(job.iter_batches(batch_rows=37))
    assert [b.num_rows for b in batches[:-1]] == [37] * (len(batches) - 1) and 0 < batches[-1].num_rows <= 37
    streamed = pa.concat_tables(batches).to_pandas()
    pd.testing.assert_frame_equal(streamed[want.columns], want, check_dtype=False)

    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    job.persist(SavedDatasetFileStorage(path=str(tmp_path / "saved.parquet")))
    saved = pd.read_parquet(tmp_path / "saved.parquet")
    pd.testing.assert_frame_equal(saved[want.columns], want, check_dtype=False)
    assert not list(tmp_path.glob("saved.parquet.partial-*"))


def test_entity_sql_without_a_timestamp_is_a_clear_error(tiny):
    stores, _, _, _ = tiny
    store = stores["ours"]
    with pytest.raises(EntityDataFrameError, match="one timestamp column"):
        store.get_historical_features(entity_df="SELECT 1 AS user_id, 2 AS item_id",
                                      features=store.get_feature_service("svc"))
