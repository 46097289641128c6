"""Experiments: `pinner experiment` re-runs the paper's tables on a log under the paper's protocol
or leave-one-out; `pinner compare` trains on the synthetic world; `results` renders the JSON files
into docs/RESULTS.md beside the paper's own figures."""
