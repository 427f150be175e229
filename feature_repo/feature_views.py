"""Feature views over the offline statistics. Every view has a deliberate ttl:

* user / item daily stats get a row whenever a value changes and at least every 28 days (`features.heartbeat_days`
  in config/pipeline.yaml), so a ttl of 29 days always reaches the current row, and values between rows are exact
  (windows drop to 0 through "expiry" rows, never by going stale);
* user x item rows exist only on days the pair was active: after 30 idle days the pair's history is treated as
  absent (null, served as 0).
"""

from datetime import timedelta

from data_sources import item_daily_stats_source, user_daily_stats_source, user_item_daily_stats_source
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Float64, Int32, Int64, UnixTimestamp

WINDOWS = ("1d", "7d", "30d", "lifetime")  # features.windows_days [1, 7, 30] + lifetime
HEARTBEAT_TTL = timedelta(days=29)
USER_ITEM_TTL = timedelta(days=30)


def _windowed(prefix: str) -> list[Field]:
    fields = []
    for w in WINDOWS:
        fields += [
            Field(name=f"{prefix}_impressions_{w}", dtype=Int64, description=f"impressions, {w}"),
            Field(name=f"{prefix}_clicks_{w}", dtype=Int64, description=f"clicks, {w}"),
            Field(name=f"{prefix}_likes_{w}", dtype=Int64, description=f"likes, {w}"),
            Field(name=f"{prefix}_shares_{w}", dtype=Int64, description=f"shares, {w}"),
            Field(name=f"{prefix}_dwell_mean_{w}", dtype=Float64, description=f"mean dwell (s) of clicks, {w}"),
            Field(name=f"{prefix}_ctr_smoothed_{w}", dtype=Float64,
                  description=f"(clicks + a) / (impressions + a + b), Beta prior, {w}"),
        ]
        if prefix == "item":
            fields.append(Field(name=f"item_log_popularity_{w}", dtype=Float64,
                                description=f"ln(1 + impressions), {w}"))
    return fields


user_daily_stats = FeatureView(
    name="user_daily_stats",
    entities=[user],
    ttl=HEARTBEAT_TTL,
    schema=[
        *_windowed("user"),
        Field(name="user_category_affinity", dtype=Array(Float32),
              description="share of the user's 30-day clicks per category (Laplace-smoothed), index = category"),
        Field(name="user_signup_timestamp", dtype=UnixTimestamp, description="when the user signed up"),
    ],
    source=user_daily_stats_source,
    online=True,
    description="User engagement over 1/7/30-day windows and lifetime, as of the end of each day.",
    owner="feedstore",
    tags={"grain": "daily", "entity": "user"},
)

item_daily_stats = FeatureView(
    name="item_daily_stats",
    entities=[item],
    ttl=HEARTBEAT_TTL,
    schema=[
        *_windowed("item"),
        Field(name="item_category", dtype=Int32, description="content category"),
        Field(name="item_creation_timestamp", dtype=UnixTimestamp, description="when the item was published"),
    ],
    source=item_daily_stats_source,
    online=True,
    description="Item engagement and popularity over 1/7/30-day windows and lifetime, as of the end of each day.",
    owner="feedstore",
    tags={"grain": "daily", "entity": "item"},
)

user_item_daily_stats = FeatureView(
    name="user_item_daily_stats",
    entities=[user, item],
    ttl=USER_ITEM_TTL,
    schema=[
        Field(name="user_item_impressions", dtype=Int64,
              description="times this user was shown this item, through the end of the day"),
        Field(name="user_item_clicks", dtype=Int64, description="times this user clicked this item"),
    ],
    source=user_item_daily_stats_source,
    online=True,
    description="Previous exposure of a user to an item (the seed's user_item_previous_interactions).",
    owner="feedstore",
    tags={"grain": "daily", "entity": "user_item"},
)
