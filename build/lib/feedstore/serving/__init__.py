"""Stage: Feast from the pipeline: the store handle and apply (store.py), materialization (materialize.py), online
lookups for ranking (ranking.py, online_ranker.py, redis_codec.py) and the training/serving skew check (skew.py).
Reads feature_repo/ (definitions and feature_store*.yaml), never ingestion/ (installed as `feedstore.serving`)."""
