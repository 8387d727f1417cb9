"""The softmax family: logsumexp, log_softmax, softmax and softmax_ce.

Thin wrappers (see STYLE.md): validate everything with cyce._validation,
allocate the outputs once, call one kernel, shape the result.  The batch
reduction is a fixed-order float64 sum (np.sum's pairwise sum over the
per-row losses), so results are bitwise the same for any thread count.
"""

import numpy as np

from . import _validation as check
from ._dispatch import kernels, threads_for


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
    kernels.logsumexp_rows(rows, result.reshape(-1), threads_for(n_threads, rows.shape[0], rows.size))
    if out is None and result.ndim == 0:
        return result[()]
    return result


def _softmax_into(x, out, num_threads, log_space):
    a = check.float_array("x", x)
    n_threads = check.num_threads(num_threads)
    if out is None:
        rows = _rows(a)
        result = np.empty(rows.shape, dtype=a.dtype)
        target = result
    else:
        check.writable_output("out", out, a.shape, a.dtype)
        if isinstance(x, np.ndarray) and check.same_memory(out, x):
            rows = out.reshape(-1, a.shape[-1])  # in place: the kernel reads each row before writing it
        else:
            check.no_overlap("out", out, [("x", a)])
            rows = _rows(a)
        result = out
        target = out.reshape(-1, a.shape[-1])
    kernels.softmax_rows(rows, target, log_space, threads_for(n_threads, rows.shape[0], rows.size))
    return out if out is not None else result.reshape(a.shape)


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

    y = np.asarray(labels)
    soft = y.dtype.kind == "f"
    if soft:
        check.probabilities("labels", y, x.shape)
    elif y.dtype.kind in "iu":
        y = check.class_labels(y, batch_shape, n_classes, ignore_index)
    else:
        raise TypeError(
            f"labels must be integer class indices of shape {batch_shape} or float "
            f"probabilities of shape {x.shape}, got an array of dtype {y.dtype}"
        )
    class_weight = None
    if weight is not None:
        class_weight = check.weights("weight", weight, (n_classes,), "one weight per class")
    row_weight = None
    if sample_weight is not None:
        row_weight = check.weights(
            "sample_weight", sample_weight, batch_shape, "one weight per sample"
        ).reshape(-1)

    if inplace:
        check.inplace_target("logits", logits)
        if grad_out is not None and not check.same_memory(grad_out, x):
            raise ValueError("pass either inplace=True or grad_out, not both")
        if soft and np.shares_memory(y, x):
            raise ValueError("inplace=True would overwrite labels, which share memory with logits")
        grad = x
    elif grad_out is not None:
        check.writable_output("grad_out", grad_out, x.shape, x.dtype)
        if isinstance(logits, np.ndarray) and check.same_memory(grad_out, x) and x.flags.c_contiguous:
            grad = x  # grad_out=logits is the in-place call
        else:
            check.no_overlap("grad_out", grad_out, [("logits", x), ("labels", y)])
            grad = grad_out
    elif return_grad:
        grad = None  # allocated below, after the last check
    else:
        grad = None
    want_grad = inplace or return_grad or grad_out is not None

    # ---- the mean's denominator (needed for the gradient's scale) ----
    n_rows = int(np.prod(batch_shape, dtype=np.int64))
    if soft:
        denom = float(n_rows) if row_weight is None else float(np.sum(row_weight))
    else:
        kept = y != ignore_index
        per_row = np.ones(n_rows) if class_weight is None else class_weight[np.where(kept, y, 0)]
        if row_weight is not None:
            per_row = per_row * row_weight
        denom = float(np.sum(per_row, where=kept))
    if reduction == "mean":
        grad_scale = 1.0 / denom if denom != 0.0 else np.inf
    else:
        grad_scale = 1.0

    # ---- compute ----
    rows = x.reshape(-1, n_classes) if grad is x else _rows(x)
    if want_grad and grad is None:
        grad = np.empty(x.shape, dtype=x.dtype)
    grad_rows = None if grad is None else grad.reshape(-1, n_classes)
    row_loss = np.empty(n_rows, dtype=np.float64)
    threads = threads_for(n_threads, n_rows, rows.size)
    if soft:
        targets = np.ascontiguousarray(y).reshape(-1, n_classes)
        kernels.softmax_ce_soft_rows(
            rows, grad_rows, targets, class_weight, row_weight, row_loss,
            smoothing, z_loss, grad_scale, threads,
        )
    else:
        weight_total = 0.0 if class_weight is None else float(np.sum(class_weight))
        if class_weight is None:
            weight_total = float(n_classes)
        kernels.softmax_ce_hard_rows(
            rows, grad_rows, y, class_weight, row_weight, row_loss, ignore_index,
            weight_total, smoothing, z_loss, grad_scale, threads,
        )

    # ---- reduce in a fixed order, in float64 ----
    # (a float32 loss beyond 3.4e38, e.g. from logits of +-3e38, is inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if reduction == "none":
            loss = row_loss.astype(x.dtype).reshape(batch_shape)
        else:
            total = np.sum(row_loss)
            if reduction == "mean":
                total = total / np.float64(denom)
            loss = x.dtype.type(total)
    if want_grad:
        # the caller's own array when it received the gradient (inplace, grad_out)
        return loss, grad if grad.shape == x.shape else grad.reshape(x.shape)
    return loss
