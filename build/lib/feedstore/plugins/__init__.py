"""Feast plugins, named by dotted path in feature_repo/feature_store*.yaml (offline stores, materialization).
They import only the ground floor; Feast and the stages load them."""
