"""PinnerFormer without Dagster: one subpackage per pipeline stage, in the order data flows.

- `data`: the `raw_actions` contract, public-log readers, the synthetic world, one-row-per-user
  timelines and the Parquet shards a training worker reads (paper §3.5).
- `features`: what an action and an item are to the model: the action encoder (§3.1, A.1),
  item content vectors, learned item ids and their co-engagement graph (beyond the paper).
- `model`: the user and pin towers (§3.2, A.2), packed attention, the reference SASRec.
- `inference`: batched and sharded embedding of users and pins (§3.6).
- `evaluation`: retrieval metrics, the paper's protocol (§4.1), leave-one-out, the baselines,
  intervals, the inference-frequency study (§4.2).
- `training`: the sampler (§3.4), count-min sketch and loss (§3.3, A.3), the trainer, the recipe
  that turns options into a model, validation for early stopping, and the torchrun worker.
- `experiments`: `pinner experiment` and `pinner compare`: the paper's tables on a log, and
  their rendering into docs/RESULTS.md.

Each layer imports only the layers above it in this list (`data` and `features` share the
action vocabulary). Nothing here imports Dagster (docs/DESIGN.md §1).
"""
