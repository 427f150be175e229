"""Ingestion: generate raw feed events, validate them, and compute timestamped statistics (offline Parquet)."""
