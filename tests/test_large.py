"""Arrays over 2**31 elements: every index and offset is computed in 64 bits.

Marked slow (deselected by default; `make test-slow` or `pytest -m slow`
runs them): each allocates one float32 array of 65537 x 32768 =
2**31 + 32768 elements (8.6 GB) and needs about 9 GB of free memory; they
take a few minutes on 2 cores.  The last row starts at element 2**31 exactly,
so every one of its elements has a flat index that does not fit in a signed
32-bit integer.

The float64 references are computed row block by row block, regenerating
the logits of each block from its own seed, so that the reference (and the
copy of the logits an in-place call would otherwise need) stays small.
"""

import math

import numpy as np
import pytest

import cyce
import reference
from conftest import assert_close

pytestmark = pytest.mark.slow

N_ROWS, N_CLASSES = 65537, 32768
BLOCK = 256              # rows per block of the reference: 32768 x 256 x 8 B = 64 MiB of float64
SEED = 20261123
assert (N_ROWS - 1) * N_CLASSES == 2**31


def need_memory(n_bytes):
    """Skip unless the machine has n_bytes available (plus 1 GiB of room)."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    except OSError:
        pytest.skip("cannot read /proc/meminfo to check the free memory")
    if info.get("MemAvailable", 0) < n_bytes + (1 << 30):
        pytest.skip(f"needs {(n_bytes >> 30) + 1} GiB of available memory, "
                    f"has {info.get('MemAvailable', 0) >> 30} GiB")


def blocks():
    for start in range(0, N_ROWS, BLOCK):
        yield start, min(start + BLOCK, N_ROWS)


def block_values(start, stop, kind):
    """The values of rows [start, stop) of the big array, from their own
    seed: the same every time they are made."""
    rng = np.random.default_rng([SEED, start])
    if kind == "logits":
        return rng.standard_normal((stop - start, N_CLASSES), dtype=np.float32) * np.float32(4)
    return rng.random((stop - start, N_CLASSES), dtype=np.float32)


def filled(kind):
    x = np.empty((N_ROWS, N_CLASSES), np.float32)
    for start, stop in blocks():
        x[start:stop] = block_values(start, stop, kind)
    return x


def test_softmax_ce_in_place_over_2_31_elements():
    need_memory(N_ROWS * N_CLASSES * 4)
    x = filled("logits")
    x[-1, -1] = 30.0  # the last element (flat index 2**31 + 32767) dominates the last row...
    labels = np.random.default_rng(SEED).integers(0, N_CLASSES, N_ROWS)
    labels[-1] = N_CLASSES - 1   # ...and is its label
    labels[-2] = 0
    labels[::1000] = -100
    n_kept = int(np.count_nonzero(labels != -100))

    lse = cyce.logsumexp(x)
    row_loss = cyce.softmax_ce(x, labels, reduction="none")
    loss, grad = cyce.softmax_ce(x, labels, inplace=True)
    assert grad is x

    total = []
    for start, stop in blocks():
        xb = block_values(start, stop, "logits")
        if stop == N_ROWS:
            xb[-1, -1] = 30.0
        yb = labels[start:stop]
        assert_close(lse[start:stop], reference.logsumexp(xb), np.float32, f"logsumexp rows {start}:{stop}")
        expected_rows, expected_grad, term_size = reference.softmax_ce(xb, yb, reduction="none",
                                                                       term_size=True)
        assert_close(row_loss[start:stop], expected_rows, np.float32, f"losses rows {start}:{stop}")
        # the in-place gradient is the mean's: the gradient of the sum over n_kept
        assert_close(grad[start:stop], expected_grad / n_kept, np.float32, f"gradient rows {start}:{stop}",
                     term_size / n_kept)
        total.append(math.fsum(expected_rows))
    assert_close(loss, math.fsum(total) / n_kept, np.float32, "mean loss")
    # the last row, beyond 2**31: its label holds almost all the mass
    assert grad[-1, -1] < 0 and np.all(grad[-1, :-1] >= 0)


def test_binary_and_categorical_over_2_31_elements():
    """sigmoid_bce and binary_ce read the array as one flat sequence of
    elements (2**31 + 32768 of them, in 4096-element blocks), with a per-row
    weight and a per-class pos_weight found from each flat index: the loss
    alone (targets = the array itself, values in [0, 1], so that a second
    8.6 GB array is not needed; the gradient's index is the same as the
    values').  Then categorical_ce in place: its gradient is 0 except at
    each row's label, in the rows beyond 2**31 too."""
    need_memory(N_ROWS * N_CLASSES * 4)
    p = filled("probabilities")
    row_weight = np.random.default_rng(SEED + 1).uniform(0.5, 2.0, (N_ROWS, 1))
    pos_weight = np.random.default_rng(SEED + 2).uniform(0.5, 3.0, N_CLASSES)

    sigmoid_sum = cyce.sigmoid_bce(p, p, weight=row_weight, pos_weight=pos_weight, reduction="sum")
    sigmoid_batchmean = cyce.sigmoid_bce(p, p, reduction="batchmean")
    bce_mean = cyce.binary_ce(p, p, reduction="mean")
    labels = np.random.default_rng(SEED + 3).integers(0, N_CLASSES, N_ROWS)
    labels[-1] = N_CLASSES - 1
    cat_rows = cyce.categorical_ce(p, labels, reduction="none")
    cat_loss, grad = cyce.categorical_ce(p, labels, inplace=True, reduction="sum")
    assert grad is p

    sums = {"sigmoid": [], "sigmoid_plain": [], "bce": []}
    for start, stop in blocks():
        pb = block_values(start, stop, "probabilities")
        yb = labels[start:stop]
        sums["sigmoid"].append(math.fsum(reference.sigmoid_bce(
            pb, pb, weight=row_weight[start:stop], pos_weight=pos_weight, reduction="none")[0].ravel()))
        sums["sigmoid_plain"].append(math.fsum(reference.sigmoid_bce(pb, pb, reduction="none")[0].ravel()))
        sums["bce"].append(math.fsum(reference.binary_ce(pb, pb, reduction="none")[0].ravel()))
        at_label = pb[np.arange(stop - start), yb].astype(np.float64)
        eps = float(np.finfo(np.float32).eps)
        assert_close(cat_rows[start:stop], -np.log(np.maximum(at_label, eps)), np.float32,
                     f"categorical_ce rows {start}:{stop}")
        expected_at_label = np.where(at_label >= eps, -1.0 / at_label, 0.0)
        got = grad[start:stop]
        assert_close(got[np.arange(stop - start), yb], expected_at_label, np.float32,
                     f"categorical_ce gradient rows {start}:{stop}")
        got[np.arange(stop - start), yb] = 0
        assert not got.any(), f"categorical_ce gradient off the labels, rows {start}:{stop}"
    n = N_ROWS * N_CLASSES
    assert_close(sigmoid_sum, math.fsum(sums["sigmoid"]), np.float32, "sigmoid_bce sum")
    assert_close(sigmoid_batchmean, math.fsum(sums["sigmoid_plain"]) / N_ROWS, np.float32,
                 "sigmoid_bce batchmean")
    assert_close(bce_mean, math.fsum(sums["bce"]) / n, np.float32, "binary_ce mean")
    assert_close(cat_loss, float(np.sum(cat_rows, dtype=np.float64)), np.float32, "categorical_ce sum")
