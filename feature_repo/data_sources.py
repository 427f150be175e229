"""Offline sources written by `feedstore stats`, and the request source of a ranking call.

Paths are relative to the data dir (the catalog's `Catalog.relative().view_glob(view)`): the registry stores
`offline/<view>/**/*.parquet` and the offline store (feedstore.plugins.asof_duckdb) resolves it against
FEEDSTORE_DATA_DIR when it reads, so a copied or moved data dir reads its own files, never the one `apply` ran on.
Each source is a hive-partitioned Parquet dataset `<data>/offline/<view>/date=YYYY-MM-DD/`; every row is stamped at
the end of the day it covers and aggregates only events strictly before its stamp.
"""

from feast import Field, FileSource, RequestSource
from feast.data_format import ParquetFormat
from feast.types import String, UnixTimestamp

from feedstore.core.catalog import Catalog


def _offline(view: str) -> str:
    return str(Catalog.relative().view_glob(view))


user_daily_stats_source = FileSource(
    name="user_daily_stats_source",
    path=_offline("user_daily_stats"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Per-user daily snapshots (change points + heartbeat) from feedstore stats.",
    owner="feedstore",
)

item_daily_stats_source = FileSource(
    name="item_daily_stats_source",
    path=_offline("item_daily_stats"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Per-item daily snapshots (change points + heartbeat) from feedstore stats.",
    owner="feedstore",
)

user_item_daily_stats_source = FileSource(
    name="user_item_daily_stats_source",
    path=_offline("user_item_daily_stats"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Per user x item pair, on the days the pair was active, from feedstore stats.",
    owner="feedstore",
)

ranking_request = RequestSource(
    name="ranking_request",
    schema=[
        # when the feed is ranked (in training sets: the impression's event_timestamp)
        Field(name="request_ts", dtype=UnixTimestamp),
        Field(name="device", dtype=String),  # mobile / desktop / tablet
    ],
    description="Context a ranker sends with each request.",
    owner="feedstore",
)
