"""Feature views over the offline statistics, derived from the feature spec (`feedstore.core.spec`): names,
schemas, descriptions and ttls are read from it, never restated here.

Every view has a deliberate ttl (the spec's rule): user / item daily stats get a row whenever a value changes and
at least every `heartbeat_days`, so a ttl of heartbeat + 1 day always reaches the current row and values between
rows are exact (windows drop to 0 through "expiry" rows, never by going stale); user x item rows exist only on days
the pair was active, and after `ttl_days` idle days the pair's history counts as absent (null, served as 0).
"""

from data_sources import item_daily_stats_source, user_daily_stats_source, user_item_daily_stats_source
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Float64, Int32, Int64, UnixTimestamp

from feedstore.core.spec import FEATURE_SPEC

#: Feast type of each spec dtype.
FEAST_TYPES = {"int64": Int64, "int32": Int32, "float64": Float64, "float32_list": Array(Float32),
               "timestamp": UnixTimestamp}


def feature_view(view, entities, source) -> FeatureView:
    """The Feast FeatureView of a spec view (`feedstore.core.spec.ViewSpec`)."""
    return FeatureView(
        name=view.name,
        entities=entities,
        ttl=view.ttl,
        schema=[Field(name=c.name, dtype=FEAST_TYPES[c.dtype], description=c.description) for c in view.columns()],
        source=source,
        online=True,
        description=view.summary,
        owner="feedstore",
        tags={"grain": "daily", "entity": view.entity, "rows": view.rows},
    )


user_daily_stats = feature_view(FEATURE_SPEC.view("user_daily_stats"), [user], user_daily_stats_source)
item_daily_stats = feature_view(FEATURE_SPEC.view("item_daily_stats"), [item], item_daily_stats_source)
user_item_daily_stats = feature_view(FEATURE_SPEC.view("user_item_daily_stats"), [user, item],
                                     user_item_daily_stats_source)
