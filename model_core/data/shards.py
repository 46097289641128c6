"""Training data as Parquet shards on any fsspec URL: what a training worker on another machine
reads (timelines, pin catalogue, count-min sketch).

Layout under a data URL (a local path, file://, s3://, gs://, ...):

    timelines/part-00000.parquet ...   flat rows, users split by a stable hash (`user_shard`)
    catalog.parquet                    pin_id, embedding FLOAT[C], topic (, tokens: int64 codes)
    sketch.parquet                     one row per sketch row: counts [width] int64
    _SUCCESS                           written last; a directory without it is incomplete

Timeline rows carry vocabulary indices and positive flags already resolved at the boundary, so a
worker needs neither the source's vocabulary nor its positive rule. `pin_row` is not stored: it is
recomputed from the catalogue that travels with the rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model_core.data.timelines import PinCatalog, Timelines
from model_core.training.sketch import CountMinSketch

SUCCESS = "_SUCCESS"
_ROW_COLUMNS = ("ts", "pin_id", "action", "surface", "duration", "positive")


def user_shard(user_ids: np.ndarray, n_shards: int) -> np.ndarray:
    """[U] int64 user ids → [U] int64 shard in [0, n_shards): splitmix64 of the id, mod n.

    Stable across processes, machines and library versions (no Python `hash`, no seed), and
    uniform even when ids are sequential.
    """
    assert n_shards >= 1, f"n_shards must be >= 1, got {n_shards}"
    x = np.asarray(user_ids, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(n_shards)).astype(np.int64)


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def fingerprint(timelines: Timelines, catalog: PinCatalog, sketch: CountMinSketch) -> str:
    """Content hash of everything a training run reads: equal data ⇔ equal fingerprint."""
    h = hashlib.sha256()
    for arr in (
        timelines.user_ids,
        timelines.offsets,
        *(getattr(timelines, c) for c in _ROW_COLUMNS),
        catalog.pin_ids,
        catalog.embeddings,
        catalog.topics,
        sketch.table,
    ):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(f"{sketch.width},{sketch.depth},{sketch.seed}".encode())
    return h.hexdigest()[:16]


def write_training_data(
    url: str,
    timelines: Timelines,
    catalog: PinCatalog,
    sketch: CountMinSketch,
    n_shards: int = 4,
) -> None:
    """Write the three datasets under `url` (see the module docstring); `_SUCCESS` last."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(_join(root, "timelines"), exist_ok=True)
    owner_user = np.repeat(timelines.user_ids, timelines.lengths)  # (T,)
    row_shard = np.repeat(user_shard(timelines.user_ids, n_shards), timelines.lengths)
    for s in range(n_shards):
        keep = row_shard == s
        table = pa.table(
            {"user_id": owner_user[keep], **{c: getattr(timelines, c)[keep] for c in _ROW_COLUMNS}}
        )
        with fs.open(_join(root, "timelines", f"part-{s:05d}.parquet"), "wb") as f:
            pq.write_table(table, f)
    dim = catalog.embeddings.shape[1]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(catalog.embeddings.reshape(-1)), dim)
    columns = {"pin_id": catalog.pin_ids, "embedding": emb, "topic": catalog.topics}
    if catalog.tokens is not None:
        columns["tokens"] = pa.array(list(catalog.tokens), type=pa.list_(pa.int64()))
    with fs.open(_join(root, "catalog.parquet"), "wb") as f:
        pq.write_table(pa.table(columns), f)
    meta = {"width": sketch.width, "depth": sketch.depth, "seed": sketch.seed}
    counts = pa.array(list(sketch.table), type=pa.list_(pa.int64()))
    sketch_table = pa.table({"counts": counts}).replace_schema_metadata(
        {"count_min_sketch": json.dumps(meta)}
    )
    with fs.open(_join(root, "sketch.parquet"), "wb") as f:
        pq.write_table(sketch_table, f)
    with fs.open(_join(root, SUCCESS), "wb") as f:
        f.write(json.dumps({"shards": n_shards, "users": int(timelines.n_users)}).encode())


def is_complete(url: str) -> bool:
    fs, root = fsspec.core.url_to_fs(url)
    return bool(fs.exists(_join(root, SUCCESS)))


@dataclass
class TrainingData:
    timelines: Timelines
    catalog: PinCatalog
    sketch: CountMinSketch


def read_training_data(url: str) -> TrainingData:
    """Inverse of `write_training_data`: rows regrouped by user (stable, so each user's rows
    keep their time order) and users in ascending id, as `Timelines.from_actions` makes them."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(_join(root, SUCCESS)):
        raise FileNotFoundError(f"{url} has no {SUCCESS}: the export is missing or incomplete")
    with fs.open(_join(root, "catalog.parquet"), "rb") as f:
        cat = pq.read_table(f)
    dim = cat.schema.field("embedding").type.list_size
    catalog = PinCatalog(
        pin_ids=cat["pin_id"].to_numpy().astype(np.int64),
        embeddings=np.asarray(cat["embedding"].combine_chunks().flatten(), dtype=np.float32)
        .reshape(-1, dim)
        .copy(),
        topics=cat["topic"].to_numpy().astype(np.int64),
        tokens=np.asarray(cat["tokens"].to_pylist(), dtype=np.int64)
        if "tokens" in cat.column_names
        else None,
    )
    with fs.open(_join(root, "sketch.parquet"), "rb") as f:
        sk = pq.read_table(f)
    meta = json.loads(sk.schema.metadata[b"count_min_sketch"])
    sketch = CountMinSketch(meta["width"], meta["depth"], meta["seed"])
    sketch.table = np.asarray(sk["counts"].to_pylist(), dtype=np.int64).reshape(
        meta["depth"], meta["width"]
    )
    parts = sorted(fs.glob(_join(root, "timelines", "part-*.parquet")))
    tables = []
    for p in parts:
        with fs.open(p, "rb") as f:
            tables.append(pq.read_table(f))
    rows = pa.concat_tables(tables)
    users = rows["user_id"].to_numpy().astype(np.int64)
    order = np.argsort(users, kind="stable")
    users = users[order]
    user_ids, starts = np.unique(users, return_index=True)
    cols = {c: rows[c].to_numpy()[order] for c in _ROW_COLUMNS}
    pin_id = cols["pin_id"].astype(np.int64)
    pin_row = catalog.rows(pin_id)
    assert (pin_row >= 0).all(), "timeline rows name pins missing from the exported catalogue"
    timelines = Timelines(
        user_ids=user_ids,
        offsets=np.append(starts, len(users)).astype(np.int64),
        ts=cols["ts"].astype(np.int64),
        pin_row=pin_row,
        pin_id=pin_id,
        action=cols["action"].astype(np.int64),
        surface=cols["surface"].astype(np.int64),
        duration=cols["duration"].astype(np.float32),
        positive=cols["positive"].astype(bool),
    )
    return TrainingData(timelines, catalog, sketch)
