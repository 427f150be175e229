"""Data contracts shared by the stages: the raw tables' Arrow schemas, the request vocabulary (devices, time of
day), and the names the serving side and the training side agree on (the columns that tell whether an entity
exists online, the joined feature rows' timestamp columns, the on-demand UDFs' input form). Paths live in
`catalog.py`, features (and the feature service's name) in `spec.py`."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
#: Microseconds in a day (every stored timestamp is UTC microseconds; a snapshot of day D is stamped D + 1 day).
DAY_US = 86_400_000_000

USERS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("signup_date", TIMESTAMP, nullable=False),
        pa.field("segment", pa.string(), nullable=False),  # power / regular / casual / inactive
        pa.field("preferred_category", pa.int32(), nullable=False),
        pa.field("device_preference", pa.string(), nullable=False),
        pa.field("activity_weight", pa.float64(), nullable=False),  # latent: relative activity
        pa.field("click_propensity", pa.float64(), nullable=False),  # latent: click log-odds offset
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("category", pa.int32(), nullable=False),
        pa.field("creation_date", TIMESTAMP, nullable=False),
        pa.field("base_quality", pa.float64(), nullable=False),
        pa.field("popularity_prior", pa.float64(), nullable=False),  # latent: exposure weight
    ]
)

# Nullable ids on purpose: real feeds deliver null keys, and validation must see them to quarantine them.
INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("interaction_id", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("item_id", pa.int64()),
        pa.field("event_timestamp", TIMESTAMP),
        pa.field("click", pa.int8()),
        pa.field("like", pa.int8()),
        pa.field("share", pa.int8()),
        pa.field("dwell_time", pa.float64()),
        pa.field("device", pa.string()),
        pa.field("time_of_day", pa.string()),
        pa.field("day_of_week", pa.int8()),
    ]
)

TIME_OF_DAY: tuple[str, ...] = ("morning", "afternoon", "evening", "night")


def time_of_day_code(hour):  # numpy int array -> codes into TIME_OF_DAY
    """Seed's buckets: morning 05-11, afternoon 12-16, evening 17-21, night 22-04 (UTC hours)."""
    import numpy as np

    return np.select([(hour >= 5) & (hour < 12), (hour >= 12) & (hour < 17), (hour >= 17) & (hour < 22)], [0, 1, 2], 3)


#: Devices an impression can come from, in one-hot order.
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")

#: Columns `<prefix><view>` hold the timestamp of the feature row each entity row was joined to (the offline stores
#: keep them only when asked, for the training-set gate: none may be later than the row's timestamp).
FEATURE_TS_PREFIX = "_feature_ts__"

#: Columns that tell whether an entity exists online: never null for a materialized entity (Feast's Redis store
#: reports absent keys as present with null values, so absence is read from these).
USER_SENTINEL = "user_signup_timestamp"
ITEM_SENTINEL = "item_creation_timestamp"
PAIR_SENTINEL = "user_item_impressions"

#: The training-set contract: split names, label columns and key / context columns, in output order.
TRAINING_SPLITS: tuple[str, ...] = ("train", "val", "test")
TRAINING_LABELS: list[str] = ["click", "like", "share", "dwell_time"]
TRAINING_KEYS: list[str] = ["interaction_id", "user_id", "item_id", "event_timestamp", "request_ts", "device"]

#: Arrow type of each spec dtype (`feedstore.core.spec.Dtype`) in the offline tables.
ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(), "float32_list": pa.list_(pa.float32()),
    "timestamp": TIMESTAMP,
}


def offline_schema(view) -> pa.Schema:
    """The offline table of a feature view (`spec.ViewSpec`): its keys (int64), `event_timestamp` and every feature
    column the spec derives, in order. Feast's FeatureView schema is derived from the same spec."""
    return pa.schema([*(pa.field(k, pa.int64()) for k in view.keys), pa.field("event_timestamp", TIMESTAMP),
                      *(pa.field(c.name, ARROW_TYPES[c.dtype]) for c in view.columns())])


def udf_input(col: pa.Array | pa.ChunkedArray) -> Any:
    """A column as the on-demand UDFs' vectorized input, online and offline alike (both stores and the online
    ranker feed the UDFs through this): a 2-D float array (NaN rows = missing) for equal-length numeric lists, else
    a pandas Series."""
    import numpy as np
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) and (
            pa.types.is_integer(col.type.value_type) or pa.types.is_floating(col.type.value_type)):
        valid = np.asarray(col.is_valid())
        lengths = pc.list_value_length(col).fill_null(0).to_numpy()
        width = int(lengths.max()) if len(col) else 0
        if width and (lengths[valid] == width).all():
            matrix = np.full((len(col), width), np.nan)
            matrix[valid] = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, width)
            return matrix
    return col.to_pandas()
