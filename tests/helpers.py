"""Test helpers: read generated data back as pandas and compute independent rule checks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from feedstore.core.catalog import Catalog
from feedstore.core.spec import FEATURE_SPEC


def read_raw(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(interactions, users, items) as pandas; interactions keep their hive `date` directory as a column."""
    dataset = ds.dataset(Catalog(data_dir).raw_interactions, format="parquet", partitioning="hive")
    ev = dataset.to_table().to_pandas()
    cat = Catalog(data_dir)
    return ev, pq.read_table(cat.raw_users).to_pandas(), pq.read_table(cat.raw_items).to_pandas()


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _table(data_dir: Path, view) -> pd.DataFrame:
    path = Catalog(data_dir).view(view.name)
    frame = ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas()
    frame["date"] = frame["date"].astype(str)
    keys = [*view.keys, "event_timestamp"]
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same_offline(a: Path, b: Path) -> None:
    """Every row of every offline table equal (row order aside), bit for bit."""
    for view in FEATURE_SPEC.views:
        x, y = _table(a, view), _table(b, view)
        assert len(x) == len(y), (view.name, len(x), len(y))
        pd.testing.assert_frame_equal(x, y, check_exact=True, obj=view.name)
