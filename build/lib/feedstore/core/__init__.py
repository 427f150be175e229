"""The ground floor: config, errors and exit codes, the catalog of data paths, atomic IO, DuckDB, logging, the GX
runtime, the feature spec and the data contracts. Imports nothing of the project above it."""
