"""Reduction bookkeeping shared by the losses: the mean's denominator, the
gradient's scale, and the fixed-order float64 sum of per-row or per-block
losses (np.sum's pairwise order depends only on the length, never on the
thread count)."""

import numpy as np


def class_mean_denominator(soft, labels, ignore_index, n_rows, class_weight, row_weight):
    """PyTorch's mean denominator: sum of w[y_i] (times s_i) over rows not
    ignored; for probabilities, sum of s_i (the number of rows)."""
    if soft:
        return float(n_rows) if row_weight is None else float(np.sum(row_weight))
    kept = labels != ignore_index
    per_row = np.ones(n_rows) if class_weight is None else class_weight[np.where(kept, labels, 0)]
    if row_weight is not None:
        per_row = per_row * row_weight
    return float(np.sum(per_row, where=kept))


def gradient_scale(reduction, denominator):
    """d loss / d (summed loss): 1/denominator for the means, else 1."""
    if reduction in ("mean", "batchmean"):
        return 1.0 / denominator if denominator != 0.0 else np.inf
    return 1.0


def total(partial_losses, reduction, denominator, dtype):
    """The loss as a NumPy scalar of dtype: sum of the float64 partials, over
    the denominator for the means (0/0 is nan, as in PyTorch).  A float32
    loss beyond 3.4e38 is inf."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        total = np.sum(partial_losses)
        if reduction in ("mean", "batchmean"):
            total = total / np.float64(denominator)
        return dtype.type(total)


def per_row_losses(row_loss, dtype, shape):
    """reduction="none": the per-row losses in the input's dtype."""
    with np.errstate(over="ignore"):
        return row_loss.astype(dtype).reshape(shape)
