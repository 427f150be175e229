"""The raw-data contract: Arrow schemas and paths of what `feedstore generate` writes and later stages read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

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


def raw_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "raw"


def users_path(data_dir: Path) -> Path:
    return raw_dir(data_dir) / "users.parquet"


def items_path(data_dir: Path) -> Path:
    return raw_dir(data_dir) / "items.parquet"


def interactions_dir(data_dir: Path) -> Path:
    return raw_dir(data_dir) / "interactions"


def faults_path(data_dir: Path) -> Path:
    return raw_dir(data_dir) / "faults.json"


def realism_report_path(data_dir: Path) -> Path:
    return Path(data_dir) / "reports" / "realism.json"
