"""The softmax family: logsumexp, log_softmax, softmax and softmax_ce.

Thin wrappers: validate everything with cyce._validation, allocate the
outputs once, call one kernel of cyce._core, shape the result.  The kernel
returns the batch sum, a fixed-order float64 sum over its tasks' losses
taken after its prange, so results are bitwise the same for any thread
count; cyce._reduction turns it into the requested reduction.
"""

import math

import numpy as np

from . import _reduction as reduce
from . import _validation as check
from . import _core
from ._dispatch import threads_for


def _rows(x):
    """A C-contiguous (N, C) view of x, copying once only if x is strided."""
    x = np.ascontiguousarray(x)
    return x.reshape(-1, x.shape[-1])


def logsumexp(x, *, out=None, num_threads=None):
    """log(sum(exp(x))) over the last axis, computed without overflow.

    Returns an array of shape ``x.shape[:-1]`` (a scalar for 1-D ``x``) in
    x's dtype, or ``out`` when given.  Like PyTorch, a row holding ``+inf``
    gives ``inf``, an all ``-inf`` row gives ``-inf``, a NaN gives NaN.
    """
    a = check.float_array("x", x)
    n_threads = check.num_threads(num_threads)
    shape = a.shape[:-1]
    if out is not None:
        check.writable_output("out", out, shape, a.dtype)
        check.no_overlap("out", out, [("x", a)])
        result = out
    else:
        result = np.empty(shape, dtype=a.dtype)
    rows = _rows(a)
    _core.logsumexp_rows(rows, result.reshape(-1), threads_for(n_threads, rows.shape[0], rows.size))
    if out is None and result.ndim == 0:
        return result[()]
    return result


def _softmax_into(x, out, num_threads, log_space):
    a = check.float_array("x", x)
    n_threads = check.num_threads(num_threads)
    n_classes = a.shape[-1]
    if out is None:
        rows = _rows(a)
        target = np.empty(rows.shape, dtype=a.dtype)
    else:
        check.writable_output("out", out, a.shape, a.dtype)
        if isinstance(x, np.ndarray) and check.same_memory(out, x):
            rows = out.reshape(-1, n_classes)  # in place: the kernel reads each row before writing it
        else:
            check.no_overlap("out", out, [("x", a)])
            rows = _rows(a)
        target = out.reshape(-1, n_classes)
    _core.softmax_rows(rows, target, log_space, threads_for(n_threads, rows.shape[0], rows.size))
    return out if out is not None else target.reshape(a.shape)


def log_softmax(x, *, out=None, num_threads=None):
    """log_softmax over the last axis: ``x - logsumexp(x)``, computed as
    ``(x - max) - log(sum(exp(x - max)))``.  ``out=x`` works in place (x must
    then be a writable C-contiguous array).  A row holding NaN or ``+inf``, or
    only ``-inf``, is NaN throughout (as in PyTorch)."""
    return _softmax_into(x, out, num_threads, True)


def softmax(x, *, out=None, num_threads=None):
    """softmax over the last axis: ``exp(x - max) / sum(exp(x - max))``.
    ``out=x`` works in place.  ``-inf`` entries give exactly 0; a row holding
    NaN or ``+inf``, or only ``-inf``, is NaN throughout (as in PyTorch)."""
    return _softmax_into(x, out, num_threads, False)


def softmax_ce(
    logits,
    labels,
    *,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    return_grad=False,
    inplace=False,
    grad_out=None,
    num_threads=None,
):
    """Softmax cross entropy of ``logits`` (..., C) against ``labels``.

    ``labels`` is either integer class indices of shape (...) (any signed or
    unsigned dtype) or float probabilities of shape (..., C).  For row i with
    ``lse_i = logsumexp(x_i)``, class weights ``w``, smoothing ``e``:

    - integer label y:  ``l_i = (1-e) w[y] (lse_i - x_iy) + (e/C) sum_c w[c] (lse_i - x_ic)``,
      rows with ``y == ignore_index`` contribute 0 (PyTorch's definition);
    - probabilities t:  ``l_i = sum_c w[c] t'_ic (lse_i - x_ic)`` with
      ``t' = (1-e) t + e/C``, where a class with ``t'_ic = 0`` adds 0 even if
      ``x_ic = -inf``;
    - ``z_loss`` adds ``z * lse_i**2`` to ``l_i`` (not scaled by class weights);
    - ``sample_weight`` s multiplies ``l_i``.

    ``reduction="mean"`` returns ``sum_i l_i / D`` with ``D = sum_i s_i w[y_i]``
    over rows not ignored (``w = 1``, ``s = 1`` when not given; for
    probabilities ``D = sum_i s_i``); if D is 0 (every row ignored, or an empty
    batch) the mean is nan, as in PyTorch.  ``"sum"`` returns ``sum_i l_i``,
    ``"none"`` the array of ``l_i`` with shape (...).

    With ``return_grad=True`` returns ``(loss, grad)``, grad = d loss / d logits
    (for ``"none"``: the gradient of ``sum_i l_i``): ``s_i/D`` times
    ``(1-e) w[y] (p_i - onehot_y) + (e/C)(W p_i - w) + 2 z lse_i p_i`` with
    ``p_i = softmax(x_i)``, ``W = sum_c w[c]``; ignored rows get 0.
    ``grad_out`` receives it in a caller's buffer; ``inplace=True`` writes it
    over ``logits`` (which must be a writable C-contiguous array) and returns
    logits as grad, allocating nothing of the logits' size, and implies
    ``return_grad=True``.

    Every argument is validated before anything is written; bad input raises
    TypeError, ValueError or IndexError naming the argument, position and value.
    """
    # ---- validate everything; nothing is written until the kernel call ----
    x = check.float_array("logits", logits)
    reduction = check.option_in("reduction", reduction, check.REDUCTIONS)
    smoothing = check.real_in("label_smoothing", label_smoothing, 0.0, 1.0)
    z_loss = check.real_in("z_loss", z_loss, 0.0)
    return_grad = check.flag("return_grad", return_grad)
    inplace = check.flag("inplace", inplace)
    n_threads = check.num_threads(num_threads)
    ignore_index = check.integer("ignore_index", ignore_index)
    n_classes = x.shape[-1]
    batch_shape = x.shape[:-1]
    soft, y = check.labels_or_probabilities("labels", labels, x, ignore_index)
    class_weight = None
    if weight is not None:
        class_weight = check.weights("weight", weight, (n_classes,), "one weight per class")
    row_weight = None
    if sample_weight is not None:
        row_weight = check.weights(
            "sample_weight", sample_weight, batch_shape, "one weight per sample"
        ).reshape(-1)
    # (weights are private copies; integer labels are the caller's own int64
    # array when it is one, and only read: copied below if a gradient
    # destination shares their memory, so that no write can reach them first)
    grad, want_grad = check.gradient_destination(
        "logits", x, logits, inplace, grad_out, return_grad, [("labels", y)] if soft else [])

    # ---- compute: nothing has been written before this line ----
    n_rows = math.prod(batch_shape)
    denom = reduce.class_mean_denominator(soft, y, ignore_index, n_rows, class_weight, row_weight)
    grad_scale = reduce.gradient_scale(reduction, denom)
    rows = x.reshape(-1, n_classes) if grad is x else _rows(x)
    if want_grad and grad is None:
        grad = np.empty(x.shape, dtype=x.dtype)
    grad_rows = None if grad is None else grad.reshape(-1, n_classes)
    threads = threads_for(n_threads, n_rows, rows.size)
    if soft:
        row_loss = np.empty(n_rows, dtype=np.float64)
        targets = np.ascontiguousarray(y).reshape(-1, n_classes)
        loss_sum = _core.softmax_ce_soft_rows(
            rows, grad_rows, targets, row_loss, class_weight=class_weight,
            sample_weight=row_weight, label_smoothing=smoothing, z_loss=z_loss,
            grad_scale=grad_scale, n_threads=threads)
    else:
        if grad is not None and np.may_share_memory(y, grad):
            y = y.copy()
        # per-row losses only when they are the result: the loss alone or in
        # place allocates nothing per row
        row_loss = np.empty(n_rows, dtype=np.float64) if reduction == "none" else None
        loss_sum = _core.softmax_ce_hard_rows(
            rows, grad_rows, y, row_loss, class_weight=class_weight,
            sample_weight=row_weight, ignore_index=ignore_index, label_smoothing=smoothing,
            z_loss=z_loss, grad_scale=grad_scale, n_threads=threads)

    if reduction == "none":
        loss = reduce.per_row_losses(row_loss, x.dtype, batch_shape)
    else:
        loss = reduce.total(loss_sum, reduction, denom, x.dtype)
    # grad is the caller's own array when it received the gradient (inplace, grad_out)
    return (loss, grad) if want_grad else loss
