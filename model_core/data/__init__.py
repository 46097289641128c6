"""Data in: the `raw_actions` contract (docs/DESIGN.md §4), readers for public logs and CSV /
Parquet tables, the seeded synthetic world, one-row-per-user timelines (paper §3.5) and the
Parquet shards a training worker reads from any fsspec URL."""
