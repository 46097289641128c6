"""Embedding users and pins in batches (paper §3.6), and the daily user inference split into
user-hash shards that run as independent workers."""
