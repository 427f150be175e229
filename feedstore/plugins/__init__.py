"""Feast plugins of feedstore, loaded by dotted path from feature_repo/feature_store*.yaml."""
