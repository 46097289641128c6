"""The networks: PinnerFormer's user and pin towers (paper §3.2, A.2) over packed sequences,
CPU bf16 row padding, and the reference SASRec the comparisons train beside it."""
