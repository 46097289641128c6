"""Vector stores: the hnswlib HNSW graph (serving/eval) and LanceDB tables (notebooks)."""

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


def write_lance_table(
    uri: str, name: str, columns: dict[str, pa.Array], index: bool
) -> lancedb.table.Table:
    """Overwrite table `name` (a new Lance version) and, if asked, rebuild its ANN index —
    an overwrite drops the index."""
    db = lancedb.connect(uri)
    table = db.create_table(name, data=pa.table(columns), mode="overwrite")
    if index and table.count_rows() > 0:
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
