"""user_embeddings with S = 4 shards (parallel worker processes) == S = 1, bit for bit."""

import os

import numpy as np

from pinner_assets.lib.resources import ComputeResource
from tests.pinner_assets.conftest import Pipeline, day


def table(p: Pipeline, as_of: str) -> dict[int, tuple[bytes, str, str]]:
    with p.warehouse() as con:
        rows = con.execute(
            "SELECT user_id, embedding, model_version, updated_on::VARCHAR FROM user_embeddings "
            "WHERE as_of = ?",
            [as_of],
        ).fetchall()
    return {r[0]: (np.asarray(r[1], dtype=np.float32).tobytes(), r[2], r[3]) for r in rows}


def test_four_shards_equal_one_shard(trained_pipeline: Pipeline) -> None:
    p = trained_pipeline
    # small batches so the tiny world's day spans many hash buckets, and S = 4 splits them
    one = {
        **p.resources,
        "compute": ComputeResource(device="cpu", inference_shards=1, inference_batch_size=8),
    }
    Pipeline(one, p.instance).run(["user_embeddings"], day(0), day(2))
    unsharded = [table(p, day(i)) for i in range(3)]
    four = {
        **one,
        "compute": ComputeResource(device="cpu", inference_shards=4, inference_batch_size=8),
    }
    result = Pipeline(four, p.instance).run(["user_embeddings"], day(0), day(2))
    assert result.success
    logs = [e.user_message for e in p.instance.all_logs(result.run_id)]
    assert any("'inference_shards': 4" in m for m in logs)
    for i in range(3):
        again = table(p, day(i))
        assert len(again) > 100
        assert again == unsharded[i]  # same users, same bytes, same version and update day


def test_the_default_shard_count_is_one_per_cpu_core_and_one_on_a_gpu() -> None:
    auto = ComputeResource()
    assert auto.shards("cpu") == len(os.sched_getaffinity(0))
    assert auto.shards("cuda") == auto.shards("cuda:1") == 1
    assert ComputeResource(inference_shards=3).shards("cpu") == 3
