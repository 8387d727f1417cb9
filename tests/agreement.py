"""How the reliability tests (test_properties.py, fuzz_worker.py) compare
cyce with the float64 reference of tests/reference.py at the edges of the
number range, where the reference's own roundings or the result's dtype
matter.  The tolerances are conftest.assert_close's (README.md's
"Accuracy": float32 1e-5, float64 1e-12 relative); this module only decides
what to compare.
"""

import numpy as np

import reference
from conftest import assert_close


def close(actual, expected, dtype, what, term_size=0.0):
    """assert_close against the reference rounded to the result's dtype: a
    float32 result cannot hold 9e-88 (it is 0) or 1e39 (inf); rounding costs
    half an ulp, far inside the tolerance.  Below the normal range precision
    is absolute, not relative: a result is a multiple of the smallest
    subnormal, and the reference rounds each of its terms to that grid too
    (four soft targets of 5e-324 at logits 0, sample weight 3: exact loss
    16.6 subnormals, the reference 12, cyce 18).  So differences up to 1000 smallest
    subnormals (5e-321 in float64, 1.4e-42 in float32: far below the
    smallest normal number of either) pass."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        rounded = np.asarray(expected).astype(dtype)
    subnormal = float(np.finfo(dtype).smallest_subnormal)
    with np.errstate(invalid="ignore"):
        difference = np.abs(np.asarray(actual, np.float64) - rounded)
    if np.all(difference <= 1000 * subnormal):
        return
    assert_close(actual, rounded, dtype, what, term_size)


def reduction_scale(reduction, shape):
    """The gradient's scale of the binary family's reductions."""
    size = int(np.prod(shape))
    if reduction == "mean":
        return 1.0 / size if size else np.inf
    if reduction == "batchmean":
        return 1.0 / shape[0] if shape[0] else np.inf
    return 1.0


def sigmoid_bce_term_size(targets, shape, reduction, weight=None, pos_weight=None):
    """The size of the two terms the sigmoid_bce gradient
    w ((1 + (p-1) y) sigmoid(x) - p y) is a difference of.  At x = 1e30,
    y = 1, p = 1/3 it is exactly 0, which cyce returns and the float64
    reference misses by 5.6e-17: an absolute floor tied to this size (as
    for softmax_ce's term_size) lets such cancellations through."""
    y = np.broadcast_to(np.asarray(targets, np.float64), shape)
    p = np.ones(shape[-1]) if pos_weight is None else np.broadcast_to(
        np.asarray(pos_weight, np.float64), shape[-1:])
    w = np.broadcast_to(np.asarray(1.0 if weight is None else weight, np.float64), shape)
    terms = np.abs(w) * np.maximum(np.abs(1 + (p - 1) * y), np.abs(p * y))
    scale = reduction_scale(reduction, shape)
    return float(np.max(terms, initial=0.0)) * (scale if np.isfinite(scale) else 1.0)


def binary_ce_reference(probs, targets, reduction, weight=None):
    """(loss, grad): PyTorch's BCELoss in float64, as tests/reference.py, with
    two roundings that matter at the edges done accurately.  reference.py
    writes np.log(1 - p), which is 0 for p < 1.1e-16 where the exact
    -log(1 - p) = p (cyce returns 1.18e-38 for p = 1.18e-38, y = 0,
    correctly); and it multiplies by the reduction's scale before dividing by
    max(p (1 - p), 1e-12), which rounds a subnormal p to fewer bits first."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(targets, np.float64)
    w = np.broadcast_to(np.asarray(1.0 if weight is None else weight, np.float64), p.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = -w * (y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
        loss, scale = reference._reduce_elements(loss, reduction)
        grad = w * ((p - y) / np.maximum(p * (1 - p), 1e-12)) * scale
    return loss, grad


def categorical_ce_reference(probs, labels, eps, weight=None, ignore_index=-100, reduction="mean"):
    """(loss, grad): tests/reference.py's categorical_ce, with the gradient
    -w_c y_c / p_c divided before it is scaled by the reduction: the
    reference multiplies first, and 0.5 * 5e-324 rounds to 0 where
    -(5e-324 / 2.2e-16) / 2 = -1.1e-308 (cyce's value) does not."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        loss, _ = reference.categorical_ce(probs, labels, eps, weight=weight, ignore_index=ignore_index,
                                           reduction=reduction)
    q = np.asarray(probs, np.float64)
    shape = q.shape
    q = q.reshape(-1, shape[-1])
    t, kept = reference.target_distribution(labels, shape[-1], 0.0, ignore_index)
    w = np.ones(shape[-1]) if weight is None else np.asarray(weight, np.float64)
    wt = w * t
    if reduction == "mean":
        denominator = float(q.shape[0]) if np.asarray(labels).dtype.kind == "f" else np.sum(wt[kept])
        scale = 1.0 / denominator if denominator else np.inf
    else:
        scale = 1.0
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        grad = np.where((wt != 0) & (q >= eps), -(wt / q) * scale, 0.0)
    return loss, grad.reshape(shape)
