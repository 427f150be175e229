"""Feast plugins of feedstore selected by `type:` in feature_store*.yaml (e.g. the Spark offline store)."""
