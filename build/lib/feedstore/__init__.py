"""feedstore: a point-in-time-correct feature pipeline for feed ranking.

Three floors, imports only downwards (checked by import-linter in `make lint`):
`feedstore.core` (ground: config, errors, catalog, io, DuckDB, logging, the GX runtime, the feature spec, data
contracts) and `feedstore.plugins` (Feast plugins named in feature_store*.yaml); the stages
`feedstore.ingestion`, `feedstore.training_data`, `feedstore.serving`, side by side; and `feedstore.shell` (the
CLI and the stage runner the DAG also calls), the only code that imports stages.
"""

__version__ = "0.1.0"
