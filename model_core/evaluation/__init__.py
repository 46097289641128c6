"""Offline evaluation: exact retrieval metrics (paper §4.1), the items a ranking leaves out, the
paper's 14-day protocol with its baselines, leave-one-out, PinnerSage, the inference-frequency
study (§4.2, Table 2), and bootstrap intervals for paired comparisons."""
