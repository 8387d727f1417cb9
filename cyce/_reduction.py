"""Reduction bookkeeping shared by the losses: the mean's denominator, the
gradient's scale, and the loss from the kernels' fixed-order float64 sums of
per-row or per-block losses (the same bits for any thread count)."""

import numpy as np

from . import _core

_LARGEST = {np.dtype(t): float(np.finfo(t).max) for t in (np.float32, np.float64)}


def class_mean_denominator(soft, labels, ignore_index, n_rows, class_weight, row_weight):
    """PyTorch's mean denominator: sum of w[y_i] (times s_i) over rows not
    ignored; for probabilities, sum of s_i (the number of rows)."""
    if soft:
        return float(n_rows) if row_weight is None else float(row_weight.sum())
    return _core.label_weight_sum(labels, ignore_index, class_weight, row_weight)


def gradient_scale(reduction, denominator):
    """d loss / d (summed loss): 1/denominator for the means, else 1."""
    if reduction in ("mean", "batchmean"):
        return 1.0 / denominator if denominator != 0.0 else float("inf")
    return 1.0


def total(loss_sum, reduction, denominator, dtype):
    """The loss as a NumPy scalar of dtype (float32 or float64: a half
    input's loss is float32): the kernel's float64 sum, over the denominator
    for the means (0/0 is nan, as in PyTorch).  A float32 loss beyond 3.4e38
    is inf."""
    if reduction in ("mean", "batchmean"):
        if denominator != 0.0:
            loss_sum = loss_sum / denominator
        elif loss_sum == 0.0 or loss_sum != loss_sum:
            loss_sum = float("nan")
        else:
            loss_sum = float("inf") if loss_sum > 0 else float("-inf")
    if abs(loss_sum) > _LARGEST[dtype] and loss_sum == loss_sum:
        return dtype.type(float("inf") if loss_sum > 0 else float("-inf"))
    return dtype.type(loss_sum)


def per_row_losses(row_loss, dtype, shape):
    """reduction="none": the per-row losses in the input's dtype (a float32
    loss beyond 3.4e38 is inf)."""
    with np.errstate(over="ignore"):
        return row_loss.astype(dtype).reshape(shape)
