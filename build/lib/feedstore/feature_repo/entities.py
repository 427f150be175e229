"""Entities of the feed-ranking feature store."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A feed user (viewer).",
    owner="feedstore",
    tags={"domain": "feed"},
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="A piece of content that can be shown in the feed.",
    owner="feedstore",
    tags={"domain": "feed"},
)
