"""Consumer-facing, versioned bundles: the ranker and the training-set builder use the same service."""

from feast import FeatureService
from feature_views import item_daily_stats, user_daily_stats, user_item_daily_stats
from on_demand_features import request_context, user_item_context

feed_ranking_v1 = FeatureService(
    name="feed_ranking_v1",
    features=[user_daily_stats, item_daily_stats, user_item_daily_stats, request_context, user_item_context],
    description="Every feature the feed ranker v1 is trained and served with.",
    owner="feedstore",
    tags={"version": "1", "consumer": "feed_ranker"},
)
