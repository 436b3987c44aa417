"""Data: ingest (raw files -> Parquet snapshot), splits, great-expectations helpers."""
