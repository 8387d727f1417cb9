"""linear_softmax_ce: the softmax cross entropy of ``hidden @ linear_weight.T
+ linear_bias`` (a language-model head) without holding its (N, V) logits.

The rows go through in chunks.  Each chunk's logits are written by a GEMM
into one reused buffer, the in-place softmax-CE kernel turns them into
their gradient, and two more GEMMs take that gradient to ``hidden`` and
``linear_weight``; the weight's gradient is accumulated inside the GEMM
(``beta = 1``), so no (V, H) temporary is made per chunk.  The mean's
denominator depends on the labels and weights alone, so it is known before
the first chunk and every chunk's gradient is final when it is written.

The GEMMs are SciPy's BLAS (an optional dependency: ``pip install
cyce[linear]``), called on transposed views so that C-ordered arrays reach
Fortran BLAS without a copy.
"""

import math
from collections import namedtuple

import numpy as np

from . import _core
from . import _reduction as reduce
from . import _validation as check
from ._dispatch import threads_for

LinearSoftmaxCE = namedtuple(
    "LinearSoftmaxCE", ["loss", "grad_hidden", "grad_linear_weight", "grad_linear_bias"])
LinearSoftmaxCE.__doc__ = """linear_softmax_ce(..., return_grad=True)'s result: the loss and the
gradients of the reduced loss (for reduction="none", of the sum of the
per-row losses) with respect to hidden, linear_weight and linear_bias
(None when no bias was given)."""

# The default chunk: CHUNK_ROWS rows (each chunk adds its rows' products into
# the whole weight gradient, a GEMM whose inner dimension is the chunk's rows:
# fewer rows ran it well below the BLAS's peak), fewer where their logits
# would pass CHUNK_BYTES, but never fewer than MIN_CHUNK_ROWS;
# docs/performance.md#fused-linear has the measurements.
CHUNK_ROWS = 1024
CHUNK_BYTES = 1 << 30
MIN_CHUNK_ROWS = 256


def _default_chunk_rows(n_rows, n_classes, itemsize):
    """The rows per chunk when chunk_rows is None: never all the rows at once
    (at most half of them, so no (N, V) logits at any size)."""
    rows = max(MIN_CHUNK_ROWS, min(CHUNK_ROWS, CHUNK_BYTES // (n_classes * itemsize)))
    return max(1, min(rows, (n_rows + 1) // 2))


def linear_softmax_ce(hidden, linear_weight, labels, *, linear_bias=None, weight=None,
                      sample_weight=None, ignore_index=-100, reduction="mean",
                      label_smoothing=0.0, z_loss=0.0, temperature=1.0, logit_softcap=None,
                      return_grad=False, chunk_rows=None, num_threads=None):
    """Softmax cross entropy of the logits ``hidden @ linear_weight.T +
    linear_bias`` against class indices, computed in chunks of rows so that
    the (N, V) logits are never held: the extra memory is one chunk of
    logits (by default 1024 rows, at most 1 GiB of them, never more than
    half the rows) and, where rows are ignored, one chunk of hidden rows.

    ``hidden`` is (..., H) (the batch axes are flattened into rows, as in
    softmax_ce), ``linear_weight`` (V, H) (PyTorch's layout), ``linear_bias``
    (V,) or None, ``labels`` integer class indices of shape
    ``hidden.shape[:-1]``.  hidden, linear_weight and linear_bias share one
    dtype, float32 or float64 (for bfloat16 and float16, see
    cyce.torch.linear_cross_entropy).  ``weight``, ``sample_weight``,
    ``ignore_index``, ``reduction``, ``label_smoothing`` and ``z_loss`` mean
    what they mean in softmax_ce; rows whose label is ignore_index take no
    part in any GEMM.  ``logit_softcap=c`` and ``temperature=T`` map each
    logit before the loss, as in softmax_ce: ``x -> c tanh(x / c) / T``
    (``x / T`` without a softcap), so the loss is softmax_ce of the mapped
    logits and the gradients are carried back through the map.

    Returns the loss (a NumPy scalar of the input dtype for "mean" and
    "sum", an array of shape ``hidden.shape[:-1]`` for "none").  With
    ``return_grad=True``, a LinearSoftmaxCE named tuple ``(loss, grad_hidden,
    grad_linear_weight, grad_linear_bias)`` of the gradients of the reduced
    loss (for "none", of the sum of the per-row losses) in the input's
    dtype; ``grad_linear_bias`` is None without a bias.

    ``chunk_rows`` (an int >= 1) sets the rows per chunk; None takes 1024
    (fewer where their logits would pass 1 GiB, but at least 256), at most
    half the rows.  Results for different chunk_rows agree within
    rounding, not to the bit (the GEMMs sum in another order).  For one
    chunk_rows and one thread count they are reproducible.
    ``num_threads`` bounds both the BLAS threads (through threadpoolctl)
    and cyce's; None leaves both at their defaults (they never run at once).

    Every argument is checked before the first GEMM; bad input raises
    TypeError, ValueError or IndexError and writes nothing.  Needs SciPy
    (``pip install cyce[linear]``), and threadpoolctl when num_threads is
    given.
    """
    return _linear_softmax_ce(
        hidden, linear_weight, labels, linear_bias=linear_bias, weight=weight,
        sample_weight=sample_weight, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, z_loss=z_loss, temperature=temperature,
        logit_softcap=logit_softcap, return_grad=return_grad, chunk_rows=chunk_rows,
        num_threads=num_threads)


def _linear_softmax_ce(hidden, linear_weight, labels, *, linear_bias, weight, sample_weight,
                       ignore_index, reduction, label_smoothing, z_loss, temperature,
                       logit_softcap, return_grad, chunk_rows, num_threads,
                       finite_sample_weight=True, hidden_grad=True, weight_grad=True):
    """linear_softmax_ce, with what cyce.torch needs beyond it: its backward
    of reduction="none" passes grad_output as sample_weight with
    finite_sample_weight=False, so that an inf or nan there reaches the
    gradients as in torch (a loss scaler looks for them) instead of raising;
    hidden_grad or weight_grad False skips that gradient's GEMM (a frozen
    layer), and returns None in its place."""
    # ---- validate everything; nothing is computed before the first GEMM ----
    h = _operand("hidden", hidden, 1)
    w = _operand("linear_weight", linear_weight, 2)
    if w.dtype != h.dtype:
        raise TypeError(f"linear_weight has dtype {w.dtype} and hidden {h.dtype}: pass both in "
                        f"one dtype (float32 or float64)")
    n_classes, n_features = w.shape
    if h.shape[-1] != n_features:
        raise ValueError(f"hidden has {h.shape[-1]} features (shape {h.shape}) but linear_weight "
                         f"{n_features} (shape {w.shape}): the last axes must match")
    if n_classes == 0:
        raise ValueError(f"linear_weight has zero rows (shape {w.shape}): it needs one row per "
                         f"class, V >= 1")
    bias = None
    if linear_bias is not None:
        bias = _operand("linear_bias", linear_bias, 1)
        if bias.dtype != h.dtype:
            raise TypeError(f"linear_bias has dtype {bias.dtype} and hidden {h.dtype}: pass both "
                            f"in one dtype")
        if bias.shape != (n_classes,):
            raise ValueError(f"linear_bias must have shape ({n_classes},) (one per class), got "
                             f"shape {bias.shape}")
    reduction = check.option_in("reduction", reduction, check.REDUCTIONS)
    smoothing = check.real_in("label_smoothing", label_smoothing, 0.0, 1.0)
    z_loss = check.real_in("z_loss", z_loss, 0.0)
    temperature, softcap = check.logit_map(temperature, logit_softcap, h.dtype)
    return_grad = check.flag("return_grad", return_grad)
    n_threads = check.num_threads(num_threads)
    ignore_index = check.integer("ignore_index", ignore_index)
    batch_shape = h.shape[:-1]
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices of shape {batch_shape}, got an "
                        f"array of dtype {y.dtype} (linear_softmax_ce takes no probability "
                        f"targets: compute the logits and call softmax_ce)")
    y = check.class_labels(y, batch_shape, n_classes, ignore_index)
    class_weight = None
    if weight is not None:
        class_weight = check.weights("weight", weight, (n_classes,), "one weight per class")
    row_weight = None
    if sample_weight is not None:
        row_weight = check.weights("sample_weight", sample_weight, batch_shape,
                                   "one weight per sample", finite=finite_sample_weight).reshape(-1)
    if chunk_rows is not None:
        chunk_rows = check.integer("chunk_rows", chunk_rows)
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be None (chosen from a memory budget) or an "
                             f"integer >= 1, got {chunk_rows}")
    gemm = _gemm_of(h.dtype)
    blas_threads = _blas_limit(n_threads)

    # ---- compute ----
    n_rows = math.prod(batch_shape)
    rows = np.ascontiguousarray(h).reshape(n_rows, n_features)
    w = np.ascontiguousarray(w)
    denom = reduce.class_mean_denominator(False, y, ignore_index, n_rows, class_weight, row_weight)
    kept = np.flatnonzero(y != ignore_index)
    if kept.size == n_rows:
        kept = None  # every row takes part: chunks are slices, nothing is gathered
    n_kept = n_rows if kept is None else kept.size
    if chunk_rows is None:
        chunk_rows = _default_chunk_rows(n_kept, n_classes, h.dtype.itemsize)
    chunk_rows = max(1, min(chunk_rows, n_kept))

    chunks = _Chunks(rows, w, bias, y, row_weight, kept, chunk_rows, return_grad, hidden_grad,
                     weight_grad)
    with blas_threads:
        loss_sum, row_loss = chunks.run(
            gemm, n_threads, reduction == "none", class_weight=class_weight,
            ignore_index=ignore_index, label_smoothing=smoothing, z_loss=z_loss,
            temperature=temperature, logit_softcap=softcap,
            grad_scale=reduce.gradient_scale(reduction, denom))

    dtype = h.dtype
    if reduction == "none":
        loss = reduce.per_row_losses(row_loss, dtype, batch_shape)
    else:
        loss = reduce.total(loss_sum, reduction, denom, dtype)
    if not return_grad:
        return loss
    grad_hidden = None if chunks.grad_hidden is None else chunks.grad_hidden.reshape(h.shape)
    return LinearSoftmaxCE(loss, grad_hidden, chunks.grad_weight, chunks.grad_bias)


class _Chunks:
    """The chunk loop's buffers and gradients: one chunk of logits, one of
    gathered hidden rows when some rows are ignored, and the gradients."""

    def __init__(self, rows, w, bias, labels, row_weight, kept, chunk_rows, want_grad,
                 hidden_grad, weight_grad):
        self.rows, self.w, self.bias, self.labels, self.row_weight = rows, w, bias, labels, row_weight
        self.kept, self.chunk_rows, self.want_grad = kept, chunk_rows, want_grad
        n_rows, n_features = rows.shape
        dtype = rows.dtype
        self.logits = np.empty((chunk_rows, w.shape[0]), dtype=dtype)
        self.gathered = None if kept is None else np.empty((chunk_rows, n_features), dtype=dtype)
        self.grad_hidden = self.grad_weight = self.grad_bias = None
        if want_grad:
            # ignored rows keep their zeros; every kept row is written once
            if hidden_grad:
                self.grad_hidden = (np.empty if kept is None else np.zeros)((n_rows, n_features),
                                                                           dtype)
            if weight_grad:
                self.grad_weight = np.zeros(w.shape, dtype=dtype)
            if bias is not None:
                self.grad_bias = np.zeros(w.shape[0], dtype=dtype)
                self.ones = np.ones(chunk_rows, dtype=dtype)

    def run(self, gemm, n_threads, per_row, **options):
        """The loss sum (float64, chunk by chunk in order) and, when per_row,
        the per-row losses (0 for ignored rows, as softmax_ce gives)."""
        n_rows = self.rows.shape[0]
        n_kept = n_rows if self.kept is None else self.kept.size
        row_loss = np.zeros(n_rows, dtype=np.float64) if per_row else None
        chunk_loss = np.empty(self.chunk_rows, dtype=np.float64) if per_row else None
        total = 0.0
        for start in range(0, n_kept, self.chunk_rows):
            stop = min(start + self.chunk_rows, n_kept)
            m = stop - start
            if self.kept is None:
                ids = slice(start, stop)
                hidden = self.rows[ids]
            else:
                ids = self.kept[start:stop]
                hidden = np.take(self.rows, ids, axis=0, out=self.gathered[:m])
            logits = self.logits[:m]
            _gemm(gemm, 1.0, hidden, self.w.T, 0.0, logits)
            if self.bias is not None:
                logits += self.bias
            sample_weight = None if self.row_weight is None else self.row_weight[ids]
            losses = None if chunk_loss is None else chunk_loss[:m]
            # (with a temperature or softcap the kernel maps the logits itself and
            # writes the gradient of the raw ones: the GEMMs below are unchanged)
            total += _core.softmax_ce_hard_rows(
                logits, logits if self.want_grad else None, self.labels[ids], losses,
                sample_weight=sample_weight, n_threads=threads_for(n_threads, m, logits.size),
                **options)
            if per_row:
                row_loss[ids] = losses
            if self.want_grad:
                self._backward(gemm, ids, hidden, logits, first=start == 0)
        return total, row_loss

    def _backward(self, gemm, ids, hidden, dlogits, first):
        """The chunk's share of the three gradients, from its logits'."""
        if self.grad_hidden is not None and self.kept is None:
            _gemm(gemm, 1.0, dlogits, self.w, 0.0, self.grad_hidden[ids])
        elif self.grad_hidden is not None:
            self.grad_hidden[ids] = dlogits @ self.w  # (chunk, H): small beside the logits
        if self.grad_weight is not None:
            # grad_weight += dlogits.T @ hidden, summed inside the GEMM
            _gemm(gemm, 1.0, dlogits.T, hidden, 0.0 if first else 1.0, self.grad_weight)
        if self.grad_bias is not None:
            self.grad_bias += self.ones[:dlogits.shape[0]] @ dlogits


def _operand(name, value, min_ndim):
    """A float32 or float64 array of at least min_ndim axes, of this ndim
    exactly when min_ndim is 2 (linear_weight) or for linear_bias."""
    a = np.asarray(value)
    if a.dtype not in check.FLOAT_DTYPES:
        if check.is_half(a.dtype):
            hint = ("convert it with .astype(np.float32), or call cyce.torch.linear_cross_entropy, "
                    "which takes bfloat16 and float16 tensors")
        else:
            hint = "pass float32 or float64 values"
        raise TypeError(f"{name} must be float32 or float64, got an array of dtype {a.dtype}: {hint}")
    if name == "linear_weight" and a.ndim != 2:
        raise ValueError(f"linear_weight must have shape (V, H), got shape {a.shape}")
    if name == "linear_bias" and a.ndim != 1:
        raise ValueError(f"linear_bias must have shape (V,), got shape {a.shape}")
    if a.ndim < min_ndim:
        raise ValueError(f"{name} must have shape (..., H), got a 0-d array")
    return a


def _gemm_of(dtype):
    try:
        from scipy.linalg import blas
    except ImportError:
        raise ImportError("linear_softmax_ce needs SciPy's BLAS: pip install 'cyce[linear]' "
                          "(or scipy)") from None
    return blas.sgemm if dtype == np.float32 else blas.dgemm


class _NoLimit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _blas_limit(n_threads):
    """A context bounding the BLAS threads to n_threads (None: no bound)."""
    if n_threads is None:
        return _NoLimit()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise ImportError("num_threads bounds the BLAS threads through threadpoolctl: pip install "
                          "'cyce[linear]' (or threadpoolctl), or leave num_threads=None") from None
    return threadpool_limits(limits=n_threads, user_api="blas")


def _blas_operand(m):
    """(array, trans) with a Fortran-ordered array and op(array) == m.T, so
    that a C-ordered product c = a @ b is the Fortran c.T = b.T @ a.T."""
    if m.flags.c_contiguous:
        return m.T, 0
    return m, 1  # m.T is C-contiguous: m is Fortran-ordered


def _gemm(gemm, alpha, a, b, beta, c):
    """c = alpha * a @ b + beta * c, written into the C-contiguous c."""
    if c.size == 0:
        return
    if a.shape[1] == 0:  # no features (H = 0): the product is 0, which BLAS wrappers refuse
        if beta == 0.0:
            c.fill(0.0)
        else:
            c *= beta
        return
    bt, trans_b = _blas_operand(b)
    at, trans_a = _blas_operand(a)
    gemm(alpha, bt, at, beta=beta, c=c.T, trans_a=trans_b, trans_b=trans_a, overwrite_c=1)
