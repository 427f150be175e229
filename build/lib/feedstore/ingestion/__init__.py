"""Stage: generate raw feed events, validate them (GX), and compute timestamped statistics into offline Parquet
(installed as `feedstore.ingestion`)."""
