"""The row losses and functions: logsumexp, log_softmax, softmax, softmax_ce
and categorical_ce (cross entropy on probabilities, a row loss like
softmax_ce, sharing its driver).

Thin wrappers: validate everything with cyce._validation, allocate the
outputs once, call one kernel of cyce._core, shape the result.  The kernel
returns the batch sum, a fixed-order float64 sum over its tasks' losses
taken after its prange, so results are bitwise the same for any thread
count; cyce._reduction turns it into the requested reduction.
"""

import math
from typing import NamedTuple

import numpy as np

from . import _reduction as reduce
from . import _validation as check
from . import _core
from ._dispatch import threads_for


def _new_gradient(shape, dtype):
    """np.empty(shape, dtype) starting on a cache line (NumPy's large arrays
    start 16 bytes past one), so that the float32 kernels can write its rows
    with streaming stores, which do not read a line before writing it."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    block = np.empty(nbytes + _LINE, dtype=np.uint8)
    start = -block.ctypes.data % _LINE
    return block[start:start + nbytes].view(dtype).reshape(shape)


_LINE = 64


def _rows(x):
    """A C-contiguous (N, C) view of x, copying once only if x is strided."""
    x = np.ascontiguousarray(x)
    return x.reshape(-1, x.shape[-1])


def logsumexp(x, *, out=None, num_threads=None):
    """log(sum(exp(x))) over the last axis, computed without overflow.

    Returns an array of shape ``x.shape[:-1]`` (a scalar for 1-D ``x``) in
    x's dtype (float32 for float16 and bfloat16 input: a bfloat16 logsumexp
    would keep three digits), or ``out`` when given.  Like PyTorch, a row
    holding ``+inf`` gives ``inf``, an all ``-inf`` row gives ``-inf``, a NaN
    gives NaN.
    """
    a = check.float_array("x", x)
    n_threads = check.num_threads(num_threads)
    shape = a.shape[:-1]
    dtype = check.compute_dtype(a.dtype)
    if out is not None:
        check.writable_output("out", out, shape, dtype)
        check.no_overlap("out", out, [("x", a)])
        result = out
    else:
        result = np.empty(shape, dtype=dtype)
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
        check.writable_output("out", out, a.shape, *check.output_dtypes(a.dtype))
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
    only ``-inf``, is NaN throughout (as in PyTorch).  The result has x's
    dtype, or out's: float32 ``out`` for float16 or bfloat16 ``x`` works too."""
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
    temperature=1.0,
    logit_softcap=None,
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
    - ``sample_weight`` s multiplies ``l_i``;
    - ``logit_softcap=c`` and ``temperature=T`` map the logits first,
      softcap first: ``x -> c tanh(x / c) / T`` (``x / T`` without a softcap;
      a ``-inf`` logit stays ``-inf``), and the gradient is carried back
      through the map (its slope ``(1 - tanh(x / c)**2) / T``).

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
    temperature, softcap = check.logit_map(temperature, logit_softcap, x.dtype)
    call = _RowLoss("logits", x, logits, labels, weight, sample_weight, ignore_index,
                    return_grad, inplace, grad_out, num_threads)

    # ---- compute: nothing has been written before this line ----
    if call.soft:
        row_loss = call.new_row_loss()
        loss_sum = _core.softmax_ce_soft_rows(
            call.rows, call.grad_rows, call.targets, row_loss, class_weight=call.class_weight,
            sample_weight=call.row_weight, label_smoothing=smoothing, z_loss=z_loss,
            grad_scale=call.grad_scale(reduction), n_threads=call.threads,
            temperature=temperature, logit_softcap=softcap)
    else:
        # per-row losses only when they are the result: the loss alone or in
        # place allocates nothing per row
        row_loss = call.new_row_loss() if reduction == "none" else None
        loss_sum = _core.softmax_ce_hard_rows(
            call.rows, call.grad_rows, call.targets, row_loss, class_weight=call.class_weight,
            sample_weight=call.row_weight, ignore_index=call.ignore_index,
            label_smoothing=smoothing, z_loss=z_loss, grad_scale=call.grad_scale(reduction),
            n_threads=call.threads, temperature=temperature, logit_softcap=softcap)
    return call.result(reduction, loss_sum, row_loss)


class SoftmaxStats(NamedTuple):
    """softmax_stats' per-row results (see there)."""

    lse: np.ndarray
    logprob: np.ndarray | None
    entropy: np.ndarray
    argmax: np.ndarray


def softmax_stats(logits, labels=None, *, temperature=1.0, logit_softcap=None, num_threads=None):
    """Per-row statistics of the softmax of ``logits`` (..., C), in one pass.

    For the mapped logits ``z = c tanh(x / c) / T`` (``logit_softcap=c``,
    ``temperature=T``; ``z = x / T`` without a softcap, a ``-inf`` logit
    stays ``-inf``) returns ``SoftmaxStats(lse, logprob, entropy, argmax)``,
    arrays of shape ``logits.shape[:-1]`` (scalars for 1-D logits):

    - ``lse = logsumexp(z)``;
    - ``logprob = z[label] - lse``, the log-probability of each row's label
      (``None`` without ``labels``, class indices of shape (...): every one
      a class, no ``ignore_index``);
    - ``entropy = lse - sum(softmax(z) * z)``, computed as
      ``log(S) - sum(e (z - max)) / S`` (``e = exp(z - max)``, ``S`` their
      sum): both terms >= 0, so a confident row keeps its tiny entropy; a
      masked (``-inf``) class adds 0;
    - ``argmax``, int64: the first index of the largest raw logit (the map is
      increasing, and the raw logits hold no ties the map's rounding makes).

    ``lse``, ``logprob`` and ``entropy`` are float64 for float64 logits and
    float32 otherwise.  A row holding NaN gives NaN statistics and the index
    of its first NaN as argmax (as ``np.argmax``); a row holding ``+inf``
    (no softcap) has ``lse = inf`` and NaN entropy and logprob; an all
    ``-inf`` row ``lse = -inf``, NaN entropy and logprob, argmax 0.
    """
    x = check.float_array("logits", logits)
    temperature, softcap = check.logit_map(temperature, logit_softcap, x.dtype)
    n_threads = check.num_threads(num_threads)
    batch_shape = x.shape[:-1]
    y = None
    if labels is not None:
        y = np.asarray(labels)
        if y.dtype.kind not in "iu":
            raise TypeError(f"labels must be integer class indices of shape {batch_shape}, "
                            f"got an array of dtype {y.dtype}")
        y = check.class_labels(y, batch_shape, x.shape[-1], None)

    # ---- compute: nothing has been written before this line ----
    dtype = check.compute_dtype(x.dtype)
    lse = np.empty(batch_shape, dtype=dtype)
    entropy = np.empty(batch_shape, dtype=dtype)
    argmax = np.empty(batch_shape, dtype=np.int64)
    logprob = None if y is None else np.empty(batch_shape, dtype=dtype)
    rows = _rows(x)
    _core.softmax_stats_rows(
        rows, y, lse.reshape(-1), None if logprob is None else logprob.reshape(-1),
        entropy.reshape(-1), argmax.reshape(-1), temperature=temperature,
        logit_softcap=softcap, n_threads=threads_for(n_threads, rows.shape[0], rows.size))
    if not batch_shape:
        return SoftmaxStats(lse[()], None if logprob is None else logprob[()], entropy[()],
                            argmax[()])
    return SoftmaxStats(lse, logprob, entropy, argmax)


def categorical_ce(probs, labels, *, eps=None, weight=None, ignore_index=-100,
                   reduction="mean", return_grad=False, inplace=False, grad_out=None,
                   num_threads=None):
    """Categorical cross entropy on probabilities (the seed's formula):
    ``l_i = -sum_c w_c y_ic log(clip(p_ic, eps, 1))``.

    ``probs`` (..., C) must be in [0, 1]; rows need not sum to 1 and are
    **not** renormalised (scikit-learn's ``log_loss`` renormalises).  ``eps``
    defaults to the dtype's machine epsilon, as ``log_loss`` does.  ``labels``
    are class indices of shape (...) (rows equal to ``ignore_index`` count 0)
    or one-hot / soft targets of shape (..., C) in [0, 1].

    ``reduction="mean"`` divides by the number of rows (not ignored), or by
    ``sum_i w[y_i]`` with class weights and class indices (PyTorch's NLLLoss
    rule); ``"sum"``; ``"none"`` gives one loss per row.  The gradient is
    ``-w_c y_ic / p_ic`` where ``p_ic >= eps`` and 0 where the clip is active,
    times the reduction's scale.
    """
    p = check.float_array("probs", probs)
    reduction = check.option_in("reduction", reduction, check.REDUCTIONS)
    eps = _machine_eps(p.dtype) if eps is None else check.real_in("eps", eps, 0.0, 1.0)
    check.probabilities("probs", p, p.shape)
    call = _RowLoss("probs", p, probs, labels, weight, None, ignore_index,
                    return_grad, inplace, grad_out, num_threads)

    # ---- compute: nothing has been written before this line ----
    row_loss = call.new_row_loss()
    loss_sum = _core.categorical_ce_rows(
        call.rows, call.grad_rows, call.targets, row_loss, class_weight=call.class_weight,
        ignore_index=call.ignore_index, eps=eps, grad_scale=call.grad_scale(reduction),
        n_threads=call.threads)
    return call.result(reduction, loss_sum, row_loss)


def _machine_eps(dtype):
    """The spacing of 1 and the next value of dtype (np.finfo has no
    bfloat16, whose 8 significant bits make it 2**-7)."""
    return 2.0**-7 if check.is_half(dtype) and dtype != check.FLOAT16 else float(np.finfo(dtype).eps)


class _RowLoss:
    """What softmax_ce and categorical_ce share: the checks of the labels,
    weights and gradient destination (the caller checked its values and
    options), the rows the kernel reads, and the result's reduction."""

    def __init__(self, name, x, original, labels, weight, sample_weight, ignore_index,
                 return_grad, inplace, grad_out, num_threads):
        return_grad = check.flag("return_grad", return_grad)
        inplace = check.flag("inplace", inplace)
        n_threads = check.num_threads(num_threads)
        self.ignore_index = check.integer("ignore_index", ignore_index)
        n_classes = x.shape[-1]
        self.x, self.batch_shape = x, x.shape[:-1]
        self.soft, y = check.labels_or_probabilities("labels", labels, x, self.ignore_index)
        self.class_weight = None
        if weight is not None:
            self.class_weight = check.weights("weight", weight, (n_classes,), "one weight per class")
        self.row_weight = None
        if sample_weight is not None:
            self.row_weight = check.weights(
                "sample_weight", sample_weight, self.batch_shape, "one weight per sample"
            ).reshape(-1)
        # (weights are private copies; integer labels are the caller's own
        # int64 array when it is one, and only read: copied below if a
        # gradient destination shares their memory, so that no write can
        # reach them first)
        grad, self.want_grad = check.gradient_destination(
            name, x, original, inplace, grad_out, return_grad, [("labels", y)] if self.soft else [])

        # ---- from here on nothing is checked: the caller computes next ----
        self.n_rows = math.prod(self.batch_shape)
        self.denom = reduce.class_mean_denominator(
            self.soft, y, self.ignore_index, self.n_rows, self.class_weight, self.row_weight)
        self.rows = x.reshape(-1, n_classes) if grad is x else _rows(x)
        if self.want_grad and grad is None:
            grad = _new_gradient(x.shape, x.dtype)
        self.grad = grad
        self.grad_rows = None if grad is None else grad.reshape(-1, n_classes)
        if self.soft:
            y = np.ascontiguousarray(y).reshape(-1, n_classes)
        elif grad is not None and np.may_share_memory(y, grad):
            y = y.copy()
        self.targets = y
        self.threads = threads_for(n_threads, self.n_rows, self.rows.size)

    def grad_scale(self, reduction):
        return reduce.gradient_scale(reduction, self.denom)

    def new_row_loss(self):
        return np.empty(self.n_rows, dtype=np.float64)

    def result(self, reduction, loss_sum, row_loss):
        """The loss (and the gradient, when asked for) of the reduction."""
        dtype = check.compute_dtype(self.x.dtype)
        if reduction == "none":
            loss = reduce.per_row_losses(row_loss, dtype, self.batch_shape)
        else:
            loss = reduce.total(loss_sum, reduction, self.denom, dtype)
        # grad is the caller's own array when it received the gradient (inplace, grad_out)
        return (loss, self.grad) if self.want_grad else loss
