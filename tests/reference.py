"""A plain NumPy float64 reference for the softmax family.

Written from the definitions (docs/api.md, PyTorch's documentation), not from
cyce's kernels: it builds the full target distribution T (N, C) and the
log-probabilities explicitly, which the kernels never do.  Inputs are cast
to float64 first, so a float32 call is compared against the exact result for
its (rounded) inputs.
"""

import numpy as np


def logsumexp(x):
    """Row-wise log(sum(exp(x))), PyTorch's convention for infinite maxima."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return (np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)) + m)[..., 0]


def log_softmax(x):
    """x - max - log(sum(exp(x - max))), the log written as
    log1p(sum of the terms other than the max's own exp(0) = 1) so that a
    confident row (sum = 1 + tiny) keeps all its digits."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        shifted = x - m
        terms = np.exp(shifted)
        top = np.argmax(shifted, axis=-1)[..., None]
        np.put_along_axis(terms, top, 0.0, axis=-1)
        log_sum = np.log1p(np.sum(terms, axis=-1, keepdims=True))
        log_sum = np.where(np.isnan(shifted).any(axis=-1, keepdims=True), np.nan, log_sum)
        return shifted - log_sum


def softmax(x):
    with np.errstate(invalid="ignore"):
        return np.exp(log_softmax(x))


def target_distribution(labels, n_classes, smoothing, ignore_index):
    """(T, kept): the (N, C) target of each row, and which rows count."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        t = labels.reshape(-1, n_classes).astype(np.float64)
        kept = np.ones(t.shape[0], dtype=bool)
    else:
        flat = labels.reshape(-1).astype(np.int64)
        kept = flat != ignore_index
        t = np.zeros((flat.size, n_classes))
        t[np.flatnonzero(kept), flat[kept]] = 1.0
    t = (1.0 - smoothing) * t + smoothing / n_classes
    t[~kept] = 0.0
    return t, kept


def softmax_ce(logits, labels, weight=None, sample_weight=None, ignore_index=-100,
               reduction="mean", label_smoothing=0.0, z_loss=0.0, term_size=False):
    """(loss, grad) in float64; grad is d loss / d logits (for reduction
    "none", of the sum of the per-row losses).

    With term_size=True also returns the largest |term| the gradient is a
    difference of (scale * s_i * sum_c w_c t'_ic): p - t cancels, so no
    implementation, this one included, can promise an absolute error below a
    few ulp of that size."""
    x = np.asarray(logits, dtype=np.float64)
    shape = x.shape
    n_classes = shape[-1]
    x = x.reshape(-1, n_classes)
    n_rows = x.shape[0]
    soft = np.asarray(labels).dtype.kind == "f"
    t, kept = target_distribution(labels, n_classes, label_smoothing, ignore_index)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    s = np.ones(n_rows) if sample_weight is None else np.asarray(sample_weight, np.float64).reshape(-1)

    logp = log_softmax(x)
    lse = logsumexp(x)
    wt = w * t                                    # weighted target, (N, C)
    with np.errstate(invalid="ignore"):
        terms = np.where(wt != 0, -wt * logp, 0.0)  # 0 * log 0 = 0
    row = terms.sum(axis=1) + np.where(kept, z_loss * lse**2, 0.0)
    row = s * row

    if soft:
        denom = s.sum()
    else:
        flat = np.asarray(labels).reshape(-1).astype(np.int64)
        denom = np.sum(s[kept] * w[flat[kept]])
    with np.errstate(divide="ignore", invalid="ignore"):
        if reduction == "mean":
            loss = row.sum() / denom
            scale = 1.0 / denom if denom != 0 else np.inf
        elif reduction == "sum":
            loss, scale = row.sum(), 1.0
        else:
            loss, scale = row.reshape(shape[:-1]), 1.0
        p = np.exp(logp)
        mass = wt.sum(axis=1, keepdims=True)
        grad = (s * scale)[:, None] * ((mass + 2.0 * z_loss * lse[:, None]) * p - wt)
    grad[~kept] = 0.0
    if term_size:
        with np.errstate(invalid="ignore"):
            terms = np.abs(s * scale) * np.abs(wt).sum(axis=1)
        return loss, grad.reshape(shape), float(np.nanmax(terms, initial=0.0))
    return loss, grad.reshape(shape)


# ------------------------------------------------------------ binary family

def _reduce_elements(loss, reduction):
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduction == "mean":
            return loss.sum() / loss.size, 1.0 / loss.size if loss.size else np.inf
        if reduction == "batchmean":
            n = loss.shape[0]
            return loss.sum() / n, 1.0 / n if n else np.inf
        if reduction == "sum":
            return loss.sum(), 1.0
        return loss, 1.0


def sigmoid_bce(logits, targets, weight=None, pos_weight=None, reduction="mean"):
    """PyTorch's BCEWithLogitsLoss from its definition,
    -w (p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))), with
    -log sigmoid(x) = logaddexp(0, -x) and -log(1 - sigmoid(x)) = logaddexp(0, x)."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    w = np.ones_like(x) if weight is None else np.broadcast_to(np.asarray(weight, np.float64), x.shape)
    p = np.ones(x.shape[-1]) if pos_weight is None else np.broadcast_to(
        np.asarray(pos_weight, np.float64), x.shape[-1:])
    with np.errstate(invalid="ignore", over="ignore"):
        positive = np.where(p * y != 0, p * y * np.logaddexp(0.0, -x), 0.0)
        negative = np.where(1 - y != 0, (1 - y) * np.logaddexp(0.0, x), 0.0)
        loss = w * (positive + negative)
        loss = np.where(np.isnan(x), np.nan, loss)
        sigmoid = 1.0 / (1.0 + np.exp(-x))
        loss, scale = _reduce_elements(loss, reduction)
        grad = scale * w * ((1 + (p - 1) * y) * sigmoid - p * y)
    return loss, grad


def binary_ce(probs, targets, weight=None, reduction="mean"):
    """PyTorch's BCELoss: logs clamped at -100, its gradient formula."""
    q = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    w = np.ones_like(q) if weight is None else np.broadcast_to(np.asarray(weight, np.float64), q.shape)
    with np.errstate(divide="ignore"):
        loss = -w * (y * np.maximum(np.log(q), -100) + (1 - y) * np.maximum(np.log(1 - q), -100))
    loss, scale = _reduce_elements(loss, reduction)
    grad = scale * w * (q - y) / np.maximum(q * (1 - q), 1e-12)
    return loss, grad


def categorical_ce(probs, labels, eps, weight=None, ignore_index=-100, reduction="mean"):
    """-sum_c w_c y_c log(clip(p_c, eps, 1)) per row; mean over rows (or over
    sum_i w[y_i] for class indices with weights)."""
    q = np.asarray(probs, dtype=np.float64)
    shape = q.shape
    n_classes = shape[-1]
    q = q.reshape(-1, n_classes)
    t, kept = target_distribution(labels, n_classes, 0.0, ignore_index)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    wt = w * t
    clipped = np.clip(q, eps, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        row = -np.sum(np.where(wt != 0, wt * np.log(clipped), 0.0), axis=1)
        if np.asarray(labels).dtype.kind == "f":
            denom = float(q.shape[0])
        else:
            denom = np.sum(wt.sum(axis=1)[kept])
        if reduction == "mean":
            loss, scale = row.sum() / denom, (1.0 / denom if denom else np.inf)
        elif reduction == "sum":
            loss, scale = row.sum(), 1.0
        else:
            loss, scale = row.reshape(shape[:-1]), 1.0
        grad = np.where((wt != 0) & (q >= eps), -scale * wt / q, 0.0)
    return loss, grad.reshape(shape)
