"""Batches of parameter points of a circuit family (prepared as one submission, scored point by
point) and what loops (trajectory) and sweeps (points, cache, canary, results) keep."""
