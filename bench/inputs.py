"""The inputs of the benchmark suites and their float64 reference values.

The logits are cyce._bench's (uniform in [-4, 4), drawn in their dtype);
nothing here makes a temporary of the logits' size, so bench/memory_probe.py
can use it too.
"""

import numpy as np

from cyce import _bench

POSITIVE_FRACTION = 0.1  # share of 1 targets: a sparse multi-label problem
# A float64 reference over 131 M elements costs seconds per shape and dtype;
# above this size the suites skip it (the smoke shapes run the same code on
# the same class counts, with the check).
REFERENCE_MAX_ELEMENTS = 2**25


def binary_targets(shape, dtype, seed=_bench.SEED + 1):
    """0/1 targets in `dtype`, a 1 with probability POSITIVE_FRACTION, made
    in place: floor(u + p) is 1 exactly when the uniform u >= 1 - p."""
    targets = np.random.default_rng(seed).random(shape, dtype=np.dtype(dtype))
    targets += POSITIVE_FRACTION
    np.floor(targets, out=targets)
    return targets


def wants_reference(x):
    return x.size <= REFERENCE_MAX_ELEMENTS


def row_blocks(x, max_elements=2**22):
    """x's rows in blocks of at most about max_elements elements, so that a
    float64 reference over a large array needs little memory."""
    step = max(1, max_elements // x.shape[1])
    for start in range(0, x.shape[0], step):
        yield x[start:start + step]


def reference_logsumexp(x):
    """Row-wise logsumexp in float64 (the max subtracted: no overflow)."""
    blocks = []
    for block in row_blocks(x):
        block = block.astype(np.float64)
        m = block.max(axis=1)
        blocks.append(np.log(np.exp(block - m[:, None]).sum(axis=1)) + m)
    return np.concatenate(blocks)


def reference_softmax_ce(x, labels):
    """Mean over rows of logsumexp(x_i) - x_i[label_i], in float64."""
    picked = x[np.arange(x.shape[0]), labels].astype(np.float64)
    return float(np.mean(reference_logsumexp(x) - picked))


def reference_sigmoid_bce(x, targets):
    """Mean over all elements of softplus(x) - x y, in float64."""
    total = 0.0
    for x_block, t_block in zip(row_blocks(x), row_blocks(targets)):
        x_block = x_block.astype(np.float64)
        total += float(np.sum(np.logaddexp(0.0, x_block) - x_block * t_block))
    return total / x.size
