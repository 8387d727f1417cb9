"""The binary losses, element by element: sigmoid_bce and binary_ce.

The seed's pairing of tasks and losses:
  binary classification       sigmoid + binary CE          sigmoid_bce(logits, y)
  multi-class, single label   softmax + categorical CE     softmax_ce(logits, labels)
  multi-label                 sigmoid per class + BCE sum  sigmoid_bce(logits, Y, reduction="batchmean")
and, for models that already output probabilities, binary_ce and
categorical_ce (a row loss: cyce._softmax).  Thin wrappers, as in
cyce._softmax: validate everything, then one kernel call, then a
fixed-order float64 reduction.
"""

import math

import numpy as np

from . import _reduction as reduce
from . import _validation as check
from . import _core
from ._core import PROBABILITY_BCE, SIGMOID_BCE
from ._dispatch import threads_for

BINARY_REDUCTIONS = ("mean", "sum", "none", "batchmean")


def _float_targets(name, targets, x):
    """Targets in [0, 1] of x's shape.  float32 and float64 targets are used
    as they are, whatever x is; bool or integer targets are converted once
    to the dtype x is computed in, half ones to float32 (check.probabilities)."""
    t = np.asarray(targets)
    if t.dtype.kind in "biu":
        if t.shape != x.shape:
            raise ValueError(f"{name} has shape {t.shape}, expected {x.shape}")
        t = t.astype(check.compute_dtype(x.dtype))
    elif t.dtype not in check.FLOAT_DTYPES and not check.is_half(t.dtype):
        raise TypeError(f"{name} must be {check.SUPPORTED} values in [0, 1], got an array of dtype {t.dtype}")
    return check.probabilities(name, t, x.shape)


def _broadcast_weight(name, weight, x, shape):
    """weight in the dtype x is computed in (x's own, float32 for the half
    types), broadcast (by strides, without a copy) to shape.  The weights
    are used in that dtype (they may be as large as the input), so each must
    be finite in it."""
    given = np.asarray(weight)
    if given.dtype.kind not in "iuf" and not check.is_half(given.dtype):
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {given.dtype}")
    dtype = check.compute_dtype(x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        a = given.astype(dtype, copy=False)
    if a.size and not (np.isfinite(a.min()) and np.isfinite(a.max())):
        first = int(np.argmin(np.isfinite(np.ravel(a))))
        value = np.ravel(given)[first].item()
        detail = "is not finite" if not np.isfinite(value) else f"overflows {dtype} (the dtype computed in)"
        raise ValueError(f"{name}{check.position(a.shape, first)} = {value!r} {detail}")
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to {shape}") from None


def _as_rows_view(a, n_rows, n_classes):
    """A (n_rows, n_classes) view of a broadcast weight: no copy when the
    strides allow it; otherwise (a weight broadcast over non-adjacent axes)
    one copy of the input's size."""
    try:
        view = a.view()
        view.shape = (n_rows, n_classes)
        return view
    except AttributeError:
        return np.ascontiguousarray(a).reshape(n_rows, n_classes)


def _elementwise(kind, name, values, original, targets, weight, pos_weight, reduction,
                 return_grad, inplace, grad_out, num_threads):
    """sigmoid_bce and binary_ce: validation done by the caller for `values`."""
    x = values
    reduction = check.option_in("reduction", reduction, BINARY_REDUCTIONS)
    return_grad = check.flag("return_grad", return_grad)
    inplace = check.flag("inplace", inplace)
    n_threads = check.num_threads(num_threads)
    t = _float_targets("targets", targets, x)
    n_classes = x.shape[-1]
    n_rows = x.size // n_classes
    w = None if weight is None else _broadcast_weight("weight", weight, x, x.shape)
    pw = None
    if pos_weight is not None:
        pw = _broadcast_weight("pos_weight", pos_weight, x, (n_classes,))
    grad, want_grad = check.gradient_destination(
        name, x, original, inplace, grad_out, return_grad,
        [("targets", t), ("weight", w), ("pos_weight", pw)])

    # ---- compute: nothing has been written before this line ----
    n = x.size
    denominator = {"mean": n, "batchmean": x.shape[0]}.get(reduction, 1)
    grad_scale = reduce.gradient_scale(reduction, float(denominator))
    flat = x.reshape(-1) if grad is x else np.ascontiguousarray(x).reshape(-1)
    if want_grad and grad is None:
        grad = np.empty(x.shape, dtype=x.dtype)
    loss_dtype = check.compute_dtype(x.dtype)
    loss_out = np.empty(x.shape, dtype=loss_dtype) if reduction == "none" else None
    loss_sum = _core.binary_elements(
        kind, flat, np.ascontiguousarray(t).reshape(-1),
        None if w is None else _as_rows_view(w, n_rows, n_classes), pw,
        None if grad is None else grad.reshape(-1),
        None if loss_out is None else loss_out.reshape(-1),
        n_classes=n_classes, grad_scale=grad_scale,
        n_threads=threads_for(n_threads, n, n))  # the kernel starts no more than its blocks
    loss = loss_out if reduction == "none" else reduce.total(loss_sum, reduction, denominator, loss_dtype)
    return (loss, grad) if want_grad else loss


def sigmoid_bce(logits, targets, *, weight=None, pos_weight=None, reduction="mean",
                return_grad=False, inplace=False, grad_out=None, num_threads=None):
    """Binary cross entropy with logits: PyTorch's ``BCEWithLogitsLoss``.

    Elementwise, with ``s`` the sigmoid, ``p = pos_weight`` (broadcast over the
    last axis) and ``w = weight`` (broadcast to the logits):
    ``l = -w (p y log s(x) + (1 - y) log(1 - s(x)))``, computed as
    ``w (p y softplus(-x) + (1 - y) softplus(x))``: no overflow for any
    logit (+-1e4, +-3e38 in float32), no cancellation for small losses, and
    ``x = +-inf`` with the matching target gives 0.  Targets may be soft
    (any value in [0, 1]); other values are an error.

    ``reduction``: ``"mean"`` (over all elements), ``"sum"``, ``"none"`` (an
    array of the logits' shape) or ``"batchmean"``: the sum over classes
    averaged over samples, i.e. the sum divided by ``logits.shape[0]`` (the
    multi-label loss; for 1-D logits of N binary samples it equals the mean).

    With ``return_grad=True`` returns ``(loss, grad)``,
    ``grad = w ((1 + (p - 1) y) s(x) - p y)`` times the reduction's scale;
    ``inplace=True`` writes it over ``logits``; ``grad_out=`` into a buffer.
    """
    x = check.float_array("logits", logits)
    return _elementwise(SIGMOID_BCE, "logits", x, logits, targets, weight, pos_weight,
                        reduction, return_grad, inplace, grad_out, num_threads)


def binary_ce(probs, targets, *, weight=None, reduction="mean", return_grad=False,
              inplace=False, grad_out=None, num_threads=None):
    """Binary cross entropy on probabilities: PyTorch's ``BCELoss``.

    ``l = -w (y log p + (1 - y) log(1 - p))`` with each log clamped at -100,
    so ``p = 0`` or ``1`` gives a finite loss.  ``probs`` and ``targets`` must
    be in [0, 1] (an error names the position and value).  Reductions as in
    ``sigmoid_bce``.  The gradient is PyTorch's:
    ``w (p - y) / max(p (1 - p), 1e-12)`` times the reduction's scale.
    Prefer ``sigmoid_bce`` on logits: it is exact where this one clamps.
    """
    p = check.float_array("probs", probs)
    check.probabilities("probs", p, p.shape)
    return _elementwise(PROBABILITY_BCE, "probs", p, probs, targets, weight, None,
                        reduction, return_grad, inplace, grad_out, num_threads)
