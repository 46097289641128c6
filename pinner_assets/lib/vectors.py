"""Vector stores: the hnswlib HNSW graph (serving/eval) and LanceDB tables (notebooks)."""

import datetime
import json
import os
from pathlib import Path

import hnswlib
import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import HnswSq


def vector_column(emb: np.ndarray) -> pa.FixedSizeListArray:
    """[N, D] float32 → Arrow fixed_size_list<float>[D], LanceDB's vector type."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), emb.shape[1])


# Below this many rows a LanceDB search scans every vector (exact; ~20 ms a query at 50k x 64 on
# one core) and an HNSW-SQ index would cost more to build (~10 s at 50k) than it saves.
ANN_MIN_ROWS = 100_000


def write_lance_table(
    uri: str, name: str, columns: dict[str, pa.Array], index: bool
) -> lancedb.table.Table:
    """Overwrite table `name` (a new Lance version) and, if asked and the table has at least
    ANN_MIN_ROWS rows, rebuild its ANN index — an overwrite drops the index."""
    db = lancedb.connect(uri)
    table = db.create_table(name, data=pa.table(columns), mode="overwrite")
    if index and table.count_rows() >= ANN_MIN_ROWS:
        table.create_index("vector", config=HnswSq(distance_type="cosine"), replace=True)
    return table


def build_hnsw(emb: np.ndarray, ids: np.ndarray, path: Path, ef: int = 128) -> hnswlib.Index:
    """Inner-product HNSW over unit-norm vectors (= cosine); labels are the pin ids."""
    index = hnswlib.Index(space="ip", dim=emb.shape[1])
    index.init_index(max_elements=max(1, len(emb)), ef_construction=100, M=16, random_seed=0)
    index.set_num_threads(1)  # deterministic graph
    index.add_items(emb, ids.astype(np.int64))
    index.set_ef(ef)
    index.save_index(str(path))
    return index


def hnsw_recall(
    index: hnswlib.Index, emb: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = 10
) -> float:
    """Share of the exact top-k (by inner product) that the HNSW graph returns."""
    labels, _ = index.knn_query(queries, k=k)
    exact = ids[np.argsort(-(queries @ emb.T), axis=1)[:, :k]]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(labels, exact, strict=True)]))


# ---- one published model version for notebooks ----
#
# Users and pins of a model version go to their own LanceDB tables (`users__<version>`,
# `pins__<version>`). `published.json` in the LanceDB directory names the pair notebooks read; it is
# replaced in one atomic rename, and only once BOTH tables of a version exist, so a reader never
# pairs users of one model with pins of another. After a switch, other versions' tables are dropped.

POINTER = "published.json"


def table_name(kind: str, version: str) -> str:
    """`users__pf_0123abcd` / `pins__pf_0123abcd` (Lance table names avoid '-')."""
    assert kind in ("users", "pins"), kind
    return f"{kind}__{version.replace('-', '_')}"


def read_pointer(uri: str) -> dict | None:
    """The published pair: {"model_version", "users", "pins", "users_as_of", "published_at"}."""
    path = Path(uri) / POINTER
    return json.loads(path.read_text()) if path.exists() else None


def _write_pointer(uri: str, pointer: dict) -> None:
    path = Path(uri) / POINTER
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{POINTER}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(pointer, indent=2))
    os.replace(tmp, path)  # atomic: readers see the old pair or the new one


def publish_vectors(
    uri: str,
    kind: str,
    version: str,
    columns: dict[str, pa.Array],
    index: bool,
    as_of: str | None = None,
) -> dict | None:
    """Write `kind`'s table of `version`, then publish the version if the other side of the SAME
    version is there too. Returns the pointer now in force (None while nothing is published).

    A retrain's pins wait, unpublished, until the users are re-inferred with that model (the next
    daily run), and the other way round; notebooks keep reading the previous, consistent pair.
    """
    db = lancedb.connect(uri)
    write_lance_table(uri, table_name(kind, version), columns, index)
    pointer = read_pointer(uri) or {}
    names = set(_table_names(db))
    other = "pins" if kind == "users" else "users"
    if table_name(other, version) not in names:
        return pointer or None
    users_as_of = as_of if kind == "users" else pointer.get("users_as_of")
    if pointer.get("model_version") != version:
        users_as_of = as_of if kind == "users" else _users_as_of(db, version)
    pointer = {
        "model_version": version,
        "users": table_name("users", version),
        "pins": table_name("pins", version),
        "users_as_of": users_as_of,
        "published_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    _write_pointer(uri, pointer)
    for name in names:  # only the published version stays
        if name.startswith(("users__", "pins__")) and name not in (
            pointer["users"],
            pointer["pins"],
        ):
            db.drop_table(name)
    return pointer


def _table_names(db: lancedb.DBConnection) -> list[str]:
    listed = db.list_tables() if hasattr(db, "list_tables") else db.table_names()
    names = getattr(listed, "tables", listed)
    return list(names)


def _users_as_of(db: lancedb.DBConnection, version: str) -> str | None:
    table = db.open_table(table_name("users", version))
    if table.count_rows() == 0:
        return None
    return str(table.search().select(["as_of"]).limit(1).to_arrow()["as_of"][0])


def open_published(uri: str) -> tuple[lancedb.table.Table, lancedb.table.Table, dict]:
    """The published users and pins tables (one model version) and the pointer, for notebooks."""
    pointer = read_pointer(uri)
    if pointer is None:
        raise FileNotFoundError(
            f"nothing is published under {uri} yet: materialise user_embeddings and pin_index "
            "with the same model version (docs/OPERATIONS.md)"
        )
    db = lancedb.connect(uri)
    return db.open_table(pointer["users"]), db.open_table(pointer["pins"]), pointer
