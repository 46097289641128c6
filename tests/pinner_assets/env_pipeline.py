"""Run the pipeline exactly as configured by the environment, in a fresh process.

The daily partitions are fixed when `pinner_assets.lib.partitions` is imported (PINNER_START_DATE /
PINNER_END_DATE), so a test of another date range — a real log's — runs this module in a
subprocess: `python -m tests.pinner_assets.env_pipeline OUT.json DAGSTER_TEMP_DIR`. It uses the
code location's own `default_resources()` (PINNER_DATA_DIR, PINNER_SOURCE, PINNER_SOURCE_PATH,
PINNER_SOURCE_OPTIONS, PINNER_TRAIN_END_DATE) on a real Dagster instance, materialises every
partition of raw_actions / user_timelines, the training assets (tiny model), the user_embeddings
chain and the evaluation report at the split, and writes what the runs reported to OUT.json.
"""

import json
import sys
from pathlib import Path

import dagster as dg

from pinner_assets.definitions import default_resources
from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.resources import ComputeResource
from tests.pinner_assets.conftest import RELAXED_PROMOTION, Pipeline

TINY_MODEL = {
    "ops": {
        "trained_model": {
            "config": {
                "steps": 4,
                "batch_size": 16,
                "hidden": 16,
                "out_dim": 8,
                "n_layers": 1,
                "item_ids": "table",
            }
        }
    }
}


def main(out: Path, temp_dir: str) -> None:
    resources = default_resources()
    resources["compute"] = ComputeResource(device="cpu")
    resources["promotion"] = RELAXED_PROMOTION  # a 4-step model: behaviour, not quality
    keys = daily_partitions.get_partition_keys()
    train_end = resources["split"].train_end_date  # type: ignore[attr-defined]
    report: dict[str, object] = {"partitions": keys, "source": resources["source"].kind}  # type: ignore[attr-defined]
    checks: dict[str, bool] = {}
    metadata: dict[str, dict[str, object]] = {}
    with dg.instance_for_test(temp_dir=temp_dir) as instance:
        p = Pipeline(resources, instance)
        runs = [
            p.run(["raw_actions", "user_timelines"], keys[0], keys[-1]),
            p.run(
                ["pin_features", "training_timelines", "count_min_sketch", "trained_model"],
                run_config=TINY_MODEL,
            ),
            p.run(["pin_embeddings", "user_embeddings"], keys[0], keys[-1]),
            p.run(["evaluation_report"], train_end, train_end),
        ]
        for result in runs:
            for e in result.get_asset_check_evaluations():
                name = f"{e.asset_key.to_user_string()}/{e.check_name}"
                checks[name] = checks.get(name, True) and e.passed
            for m in result.get_asset_materialization_events():
                mat = m.materialization
                key = mat.asset_key.to_user_string()
                values = {k: getattr(v, "value", str(v)) for k, v in mat.metadata.items()}
                metadata[f"{key}[{mat.partition}]" if mat.partition else key] = values
    report |= {"checks": checks, "metadata": metadata}
    out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
