"""The paper's own Recall@10 figures (Pancha et al., KDD 2022), keyed like
`model_core.experiments.runner`.

Shown beside ours by `pinner results` for SHAPE comparison only: they are measured on Pinterest's
data (1M-pin index, 256-d PinSage vectors, large GPU training), so absolute values are not
comparable. Transcribed from public summaries of the paper that agree with one another; the
captions were not available verbatim — check the paper's PDF before quoting a figure elsewhere.
"""

from __future__ import annotations

# table → variant → scored_on (None = the standard evaluation) → Recall@10
RECALL_AT_10: dict[str, dict[str, dict[str | None, float]]] = {
    "objectives": {  # Table 3
        "next_action": {None: 0.186},
        "sasrec": {None: 0.198},
        "all_action": {None: 0.224},  # K = 28 days
        "dense_all_action_k14": {None: 0.223},
        "dense_all_action_k28": {None: 0.229},
    },
    "negatives": {  # Table 4
        "in_batch": {None: 0.071},
        "in_batch+logq": {None: 0.167},
        "random": {None: 0.136},
        "random+logq": {None: 0.139},
        "mixed": {None: 0.138},
        "mixed+logq": {None: 0.229},
    },
    "features": {  # Table 6: the model without one feature
        "all": {None: 0.229},
        "no_content": {None: 0.142},
        "no_time": {None: 0.210},
        "no_surface": {None: 0.224},
        "no_action_type": {None: 0.226},
        "no_duration": {None: 0.226},
    },
    "bce": {  # Table 10 (sampled softmax with equal weight on the last position, as ours)
        "sasrec_bce_one_negative": {None: 0.138},
        "sasrec_sampled_softmax": {None: 0.198},
        "dense_all_action": {None: 0.229},
    },
    "inference": {  # Table 2
        "sasrec": {"once": 0.198, "daily": 0.216, "realtime": 0.251},
        "dense_all_action": {"once": 0.229, "daily": 0.243, "realtime": 0.264},
    },
    "multitask": {  # Table 5: trained on one type (rows) and scored on each type (columns)
        "only_closeup": {None: 0.17, "closeup": 0.27, "click": 0.02, "repin": 0.09},
        "only_click": {None: 0.12, "closeup": 0.01, "click": 0.49, "repin": 0.01},
        "only_repin": {None: 0.13, "closeup": 0.15, "click": 0.03, "repin": 0.17},
        "multi_task": {None: 0.23, "closeup": 0.23, "click": 0.28, "repin": 0.13},
    },
    "upper_bounds": {  # §4.2.1 (the paper's Table 1): PinnerSage with an oracle over 5 clusters
        "pinnersage_oracle": {None: 0.026},
    },
}


def paper_recall(table: str, variant: str, scored_on: str | None = None) -> float | None:
    return RECALL_AT_10.get(table, {}).get(variant, {}).get(scored_on)
