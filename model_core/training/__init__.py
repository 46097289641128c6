"""Training: examples sampled on the fly (paper §3.4-3.5), the count-min sketch and the sampled
softmax with logQ (§3.3, A.3), the trainer with its schedule and weight average, the recipe (the
one way options become a trained model), validation for early stopping, and the torchrun worker
the pipeline launches."""
