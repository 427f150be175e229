"""Consumer-facing, versioned bundles: the ranker and the training-set builder use the same service, in the
order the feature spec declares."""

from feast import FeatureService
from feature_views import item_daily_stats, user_daily_stats, user_item_daily_stats
from on_demand_features import request_context, user_item_context

from feedstore.core.spec import FEATURE_SPEC

_VIEWS = {v.name: v for v in (user_daily_stats, item_daily_stats, user_item_daily_stats, request_context,
                              user_item_context)}

# the spec's declared order is the column order of lookups and training splits
feed_ranking_v1 = FeatureService(
    name=FEATURE_SPEC.service,
    features=[_VIEWS[name] for name in FEATURE_SPEC.service_order],
    description="Every feature the feed ranker v1 is trained and served with.",
    owner="feedstore",
    tags={"version": "1", "consumer": "feed_ranker"},
)
